"""The training and validation input pipeline: records → crops → sampled rows → global jax.Arrays.

Design (docs/reference.md §4.3, §3.1; docs/deviations.md 8, 12, 13, 14, 29, 30):

* Every host indexes the split once (:mod:`records`: the saved record index, one small read) and
  every window gets its range of valid crop starts (:class:`CropTable`).
* The global batch is a function of ``(seed, step)`` and the data only: global example ``g`` of
  step ``s`` and slot ``b`` is ``g = s * global_batch + b``, and host ``p`` builds slots
  ``p * local_batch .. (p + 1) * local_batch - 1`` by random access. A run is therefore the same on
  any number of hosts and devices, and a pipeline started at step ``n`` reads nothing before it.
* Which crop example ``g`` is (``crop_sampling``):

  - ``"per_track"`` (the reference, docs/reference.md §4.3): an epoch is one crop of every track,
    tracks in the order of a permutation drawn from ``default_rng([seed, 1, epoch])``; the crop
    start is uniform over the track's valid starts. Every track is equally likely whatever its
    length.
  - ``"all_audio"``: every crop start of the split is equally likely, so long songs weigh more.
    An epoch is ``M`` examples (all starts divided by the clip length, rounded up): one uniform
    draw in each of ``M`` equal slices of all starts, shuffled by ``default_rng([seed, 1, epoch])``.

  ``default_rng([seed, 0, g])`` then draws everything else of the example.
* Silent crops: as the reference, a crop whose audio is all zeros or that holds no labelled note
  is redrawn uniformly over its whole track, at most :data:`MAX_CROP_REDRAWS` times (the
  reference has no bound); a crop that stays silent gets all-negative rows (:mod:`sampler`).
* Evaluation (``random_crop=False``, docs/deviations.md 13, 35): one crop per track, the first
  candidate starting at :data:`EVAL_OFFSET_SECONDS` (10 s), or at 0 when the track is shorter
  than the offset plus one clip (20 s for 10-s clips); as the reference, a silent or note-less
  candidate moves on by :data:`EVAL_STEP_SECONDS` (at most :data:`MAX_CROP_REDRAWS` times, and
  not past the track's end); tracks in dataset order, dealt round-robin to hosts; one finite pass;
  rows sampled with ``default_rng([seed, 2, track_position])``, the same at every validation; the last batch is padded by
  repeating the host's last crop, with ``valid`` = 0 on the padding rows.
* Rows are built in numpy inside a ``tf.data`` parallel map (deterministic order), batched,
  prefetched, then each host's batch becomes one global ``jax.Array`` sharded along ``data_axis``.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Iterator

import numpy as np

from jointist_jax import instruments, music, storage
from jointist_jax.data import records, sampler, targets

# Examples built at once. Each reads one record (a few MB); from a bucket each read waits tens of
# milliseconds for the first byte, so many reads must be in flight to keep up with local disk.
# 16 kept at least 80 % of the rate without latency under 30 ms to the first byte, for both
# stages' shapes (benchmarks/input_pipeline.py --gcs_emulator --latency; README.md, Benchmarks).
LOCAL_WORKERS, REMOTE_WORKERS = 4, 16
# A track whose crops are this many times in a row silent gets an all-negative example instead.
MAX_CROP_REDRAWS = 32
CROP_SAMPLINGS = ("per_track", "all_audio")
EVAL_OFFSET_SECONDS = 10.0
EVAL_STEP_SECONDS = 1.0
_INFINITE = 1 << 62


# --- crop-start weighting ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CropTable:
    """Valid crop starts of every record: record ``r`` allows starts ``lo[r] .. hi[r]`` (inclusive)."""

    lo: np.ndarray       # int64 (R,) absolute sample
    hi: np.ndarray       # int64 (R,), hi < lo: no valid start in this record
    cumulative: np.ndarray  # int64 (R + 1,) running count of starts

    @property
    def total(self) -> int:
        return int(self.cumulative[-1])

    def locate(self, position: int) -> tuple[int, int]:
        """The ``position``-th crop start (0-based) as ``(record, absolute start sample)``."""
        record = int(np.searchsorted(self.cumulative, position, side="right") - 1)
        return record, int(self.lo[record] + position - self.cumulative[record])


def resolve_hop(dataset: records.ClipDataset, index: records.RecordIndex) -> int | None:
    """Window hop in samples: from the metadata, else ``window_start / window_index`` of the records."""
    later = index.window_index > 0
    derived = None
    if np.any(later):
        hops = np.unique(index.window_start[later] // index.window_index[later])
        if len(hops) != 1 or np.any(index.window_start[later] % index.window_index[later]):
            raise ValueError(f"{str(dataset.path)!r}: window starts are not multiples of one hop; "
                             f"window_start/window_index gives {hops[:5].tolist()}")
        derived = int(hops[0])
    if dataset.hop_samples is not None and derived is not None and derived != dataset.hop_samples:
        raise ValueError(f"{str(dataset.path)!r}: the records' window hop is {derived} samples, the "
                         f"dataset metadata says {dataset.hop_samples}")
    return dataset.hop_samples if dataset.hop_samples is not None else derived


def crop_table(index: records.RecordIndex, clip_samples: int, hop_samples: int | None) -> CropTable:
    """Valid crop starts per record: ``[k·H, min(k·H + H − 1, N − clip)]``.

    Every start of a track lies in exactly one window when ``clip`` equals the dataset's clip (the
    default). With a shorter ``clip``, the last window's starts past ``k·H + H − 1`` (fewer than
    the difference of the clip lengths per track) are not drawn. Without a known hop only
    single-window tracks can be indexed (their window is the whole track). A track shorter than
    one clip has no valid start: training leaves it out, as the reference refuses such tracks
    (docs/deviations.md 34).
    """
    ws, n = index.window_start, index.track_length
    lo = ws.copy()
    if hop_samples is None:
        if np.any(index.window_index > 0):
            raise ValueError("the window hop is unknown but some tracks have several windows")
        hi = n - clip_samples
    else:
        hi = np.minimum(ws + hop_samples - 1, n - clip_samples)
    counts = np.maximum(hi - lo + 1, 0)
    return CropTable(lo=lo, hi=hi, cumulative=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))


def epoch_size(table: CropTable, clip_samples: int) -> int:
    """``all_audio`` examples per epoch: as many crops as fit all crop starts end to end (at least 1)."""
    return max(1, math.ceil(table.total / clip_samples))


def epoch_positions(seed: int, epoch: int, total: int, size: int) -> np.ndarray:
    """``size`` crop-start positions in ``[0, total)``: one uniform draw per equal slice, shuffled.

    Each position is marginally uniform over all starts, and an epoch covers the data evenly.
    """
    rng = np.random.default_rng([seed, 1, epoch])
    edges = (np.arange(size + 1, dtype=np.float64) * total / size)
    lo = np.floor(edges[:-1]).astype(np.int64)
    hi = np.maximum(np.floor(edges[1:]).astype(np.int64), lo + 1)
    positions = np.minimum(lo + (rng.random(size) * (hi - lo)).astype(np.int64), total - 1)
    return positions[rng.permutation(size)]


def epoch_tracks(seed: int, epoch: int, num_tracks: int) -> np.ndarray:
    """``per_track``: the order in which epoch ``epoch`` visits the tracks (a permutation)."""
    return np.random.default_rng([seed, 1, epoch]).permutation(num_tracks)


@dataclasses.dataclass(frozen=True)
class TrackStarts:
    """The crop starts of each track: track ``t`` owns records ``records[t]`` (window order), whose
    start counts run up to ``cumulative[t][-1]``."""

    records: list          # [np.ndarray int64] per track
    cumulative: list       # [np.ndarray int64 (len + 1,)] per track
    track_of_record: np.ndarray  # int64 (R,)

    @classmethod
    def of(cls, index: records.RecordIndex, table: CropTable) -> "TrackStarts":
        """Tracks in dataset order; a track without any valid crop start is left out (-1)."""
        _, first, inverse = np.unique(index.track_id, return_index=True, return_inverse=True)
        rank = np.empty(len(first), np.int64)
        rank[np.argsort(first)] = np.arange(len(first))
        track = rank[inverse.reshape(-1)]
        order = np.lexsort((index.window_index, track))
        bounds = np.searchsorted(track[order], np.arange(len(first) + 1))
        counts = np.diff(table.cumulative)
        per_track, cumulative = [], []
        track_of_record = np.full(len(track), -1, np.int64)
        for t in range(len(first)):
            rows = order[bounds[t]:bounds[t + 1]]
            if counts[rows].sum() == 0:
                continue
            track_of_record[rows] = len(per_track)
            per_track.append(rows)
            cumulative.append(np.concatenate([[0], np.cumsum(counts[rows])]).astype(np.int64))
        return cls(records=per_track, cumulative=cumulative, track_of_record=track_of_record)

    def __len__(self) -> int:
        return len(self.records)

    def draw(self, track: int, rng: np.random.Generator, table: CropTable) -> tuple[int, int]:
        """A crop start uniform over the track's valid starts, as ``(record, absolute start)``."""
        cumulative = self.cumulative[track]
        position = int(rng.integers(cumulative[-1]))
        row = int(np.searchsorted(cumulative, position, side="right") - 1)
        record = int(self.records[track][row])
        return record, int(table.lo[record] + position - cumulative[row])


def is_audible(record, start: int, spec: "ExampleSpec") -> bool:
    """The reference's test of a training crop: some labelled note and some non-zero sample."""
    offset = start - int(record["window_start"])
    seconds = spec.clip_samples / spec.sample_rate
    return bool(_present(record, offset / spec.sample_rate, seconds).any()
                and np.any(record.mix(offset, spec.clip_samples)))


def draw_audible_crop(first: tuple[int, int], redraw, read, spec: "ExampleSpec",
                      max_redraws: int = MAX_CROP_REDRAWS):
    """``(record, start)`` of the first audible crop among ``first`` and up to ``max_redraws``
    calls of ``redraw()``; the last one drawn if none is audible. ``read(record)`` gives a record."""
    record_id, start = first
    record = read(record_id)
    for _ in range(max_redraws):
        if is_audible(record, start, spec):
            break
        new_id, start = redraw()
        if new_id != record_id:
            record_id, record = new_id, read(new_id)
    return record, start


def eval_crop_start(track_length: int, clip_samples: int, sample_rate: int,
                    offset_seconds: float = EVAL_OFFSET_SECONDS) -> int:
    """docs/deviations.md 13: the fixed evaluation crop starts at 10 s, or at 0 if the track is too short."""
    offset = int(round(offset_seconds * sample_rate))
    return offset if track_length >= offset + clip_samples else 0


def eval_record(index: records.RecordIndex, table: CropTable, rows: np.ndarray, start: int) -> int:
    """The record among ``rows`` (one track's records) that holds a crop starting at ``start``."""
    inside = rows[(table.lo[rows] <= start) & (start <= table.hi[rows])]
    if len(inside) == 0:
        # The start falls between two windows' start ranges: use the window that holds it.
        inside = rows[index.window_start[rows] <= start][-1:]
    return int(inside[0])


def eval_crops(index: records.RecordIndex, table: CropTable, clip_samples: int, sample_rate: int,
               offset_seconds: float = EVAL_OFFSET_SECONDS) -> list[tuple[int, int]]:
    """The first candidate ``(record, start)`` of each track with a valid crop (one shorter than a
    clip has none and is left out, as the reference refuses it), in order of the tracks' first
    records. :func:`next_eval_starts` gives the later candidates."""
    crops = []
    order = dict.fromkeys(index.track_id.tolist())
    for track in order:
        rows = np.flatnonzero(index.track_id == track)
        if int(index.track_length[rows[0]]) < clip_samples:
            continue
        start = eval_crop_start(int(index.track_length[rows[0]]), clip_samples, sample_rate, offset_seconds)
        crops.append((eval_record(index, table, rows, start), start))
    return crops


def next_eval_starts(start: int, track_length: int, clip_samples: int, sample_rate: int,
                     step_seconds: float = EVAL_STEP_SECONDS) -> range:
    """The later candidates of a fixed evaluation crop: every ``step_seconds`` after ``start``
    while the crop fits the track (the reference's loop over silent or note-less crops)."""
    step = int(round(step_seconds * sample_rate))
    return range(start + step, track_length - clip_samples + 1, step)


def audible_eval_crop(index: records.RecordIndex, table: CropTable, first: tuple[int, int], read,
                      spec: "ExampleSpec"):
    """``(record, start)`` of a track's evaluation crop: ``first`` (from :func:`eval_crops`), or the
    first later candidate (:func:`next_eval_starts`) that is audible, as the reference's loop; the
    last candidate looked at if none is. ``read(record)`` gives a record."""
    record, start = first
    rows = np.flatnonzero(index.track_id == index.track_id[record])
    later = iter(next_eval_starts(start, int(index.track_length[record]), spec.clip_samples, spec.sample_rate))
    last = [first]

    def advance():  # the next candidate; the last one again once the track ends
        candidate = next(later, None)
        if candidate is not None:
            last[0] = (eval_record(index, table, rows, candidate), candidate)
        return last[0]

    return draw_audible_crop(first, advance, read, spec)


# --- one example ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ExampleSpec:
    """Shapes of one clip's outputs."""

    clip_samples: int
    sample_rate: int
    num_positive: int
    num_negative: int
    temperature: float
    transcribe_negatives: bool
    targets: bool
    stems: bool
    evaluation: bool

    @property
    def rows(self) -> int:
        return self.num_positive + self.num_negative

    @property
    def frames(self) -> int:
        return targets.num_frames(self.clip_samples / self.sample_rate)

    def fields(self) -> list[tuple[str, np.dtype, tuple[int, ...]]]:
        """``(key, dtype, per-clip shape)`` of every output, in output order."""
        k, t, c, n = self.rows, self.frames, self.clip_samples, instruments.CONDITION_SIZE
        out = [("waveform", np.float32, (c,)), ("instruments", np.float32, (n,))]
        if k:
            out += [("class_ids", np.int32, (k,)), ("conditions", np.float32, (k, n)),
                    ("is_positive", np.float32, (k,))]
            if self.targets:
                out += [(name, np.float32, (k, t, music.NUM_PITCHES))
                        for name in ("onset_roll", "reg_onset_roll", "frame_roll", "mask_roll")]
            if self.stems:
                out += [("source", np.float32, (k, c)), ("source_valid", np.float32, (k,))]
        if self.evaluation:
            out.append(("valid", np.float32, ()))
        return out


def _to_float(samples: np.ndarray, length: int) -> np.ndarray:
    """int16 samples as float32 in [-1, 1), zero-padded at the end to ``length``."""
    piece = samples.astype(np.float32) / 32768.0
    short = length - piece.shape[-1]
    if short > 0:
        piece = np.pad(piece, [(0, 0)] * (piece.ndim - 1) + [(0, short)])
    return piece


def _present(record, offset_s: float, seconds: float) -> np.ndarray:
    return targets.instrument_labels(record["note_class"], record["note_onset"], record["note_offset"],
                                     offset_s, seconds)


def build_example(record: records.Record, start: int, rng: np.random.Generator, spec: ExampleSpec, *,
                  valid: float = 1.0) -> dict[str, np.ndarray]:
    """The outputs of one clip from its record and absolute crop start (drawn by the caller)."""
    c, sr = spec.clip_samples, spec.sample_rate
    window_start = int(record["window_start"])
    track_length = int(record["track_length"])
    seconds = c / sr

    offset = start - window_start
    labels = _present(record, offset / sr, seconds)
    mix = record.mix(offset, c)
    if len(mix) < c and start + c <= track_length:
        raise ValueError(
            f"record {record['track_id']!r} window {int(record['window_index'])} holds too few samples "
            f"for a {c}-sample crop at offset {offset}: clip_seconds exceeds the dataset's clip")

    out = {"waveform": _to_float(mix, c), "instruments": labels}
    if spec.rows:
        present = np.flatnonzero(labels)
        class_ids, is_positive = sampler.sample_conditions(
            rng, present, spec.num_positive, spec.num_negative, spec.temperature)
        out["class_ids"] = class_ids
        out["conditions"] = instruments.condition_one_hot(class_ids)
        out["is_positive"] = is_positive.astype(np.float32)
        positives = sorted(set(class_ids[is_positive].tolist()))
        if spec.targets:
            rolls = {}
            for cls in positives:
                sel = record["note_class"] == cls
                rolls[cls] = targets.note_rolls(
                    record["note_onset"][sel], record["note_offset"][sel], record["note_pitch"][sel],
                    start=offset / sr, seconds=seconds)
            out.update(sampler.row_rolls(class_ids, is_positive, rolls, frames=spec.frames,
                                         num_keys=music.NUM_PITCHES,
                                         transcribe_negatives=spec.transcribe_negatives))
        if spec.stems:
            stem_row = {int(cls): i for i, cls in enumerate(record["stem_classes"])}
            # Only the stems of the sampled positive classes are decoded, and only up to the crop.
            wanted = [cls for cls in positives if cls in stem_row]
            crops = record.stems([stem_row[cls] for cls in wanted], offset, c)
            stems = {cls: _to_float(crop, c) for cls, crop in zip(wanted, crops)}
            out["source"], out["source_valid"] = sampler.row_sources(class_ids, is_positive, stems, c)
    if spec.evaluation:
        out["valid"] = np.float32(valid)
    return out


# --- the pipeline ---------------------------------------------------------------------------------

def _local_batch(global_batch: int, process_count: int) -> int:
    if global_batch <= 0 or global_batch % process_count:
        raise ValueError(f"global_batch {global_batch} must be a positive multiple of the process "
                         f"count {process_count}")
    return global_batch // process_count


class InputPipeline:
    """Iterator over global batches (dicts of ``jax.Array``); see the module docstring.

    Iterate it for global arrays, or call :meth:`local_batches` for this host's numpy batches.
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, data_dir, split: str, *, global_batch: int, num_positive: int = 0,
                 num_negative: int = 0, temperature: float = 0.5, transcribe_negatives: bool = False,
                 seed: int = 0, start_step: int = 0, mesh=None, data_axis: str = "data",
                 clip_seconds: float = 10.0, random_crop: bool = True, targets: bool = True,
                 stems: bool = True, prefetch: int = 2, num_workers: int | None = None,
                 eval_offset_seconds: float = EVAL_OFFSET_SECONDS, crop_sampling: str = "per_track",
                 process_index: int | None = None, process_count: int | None = None):
        if crop_sampling not in CROP_SAMPLINGS:
            raise ValueError(f"crop_sampling must be one of {CROP_SAMPLINGS}, got {crop_sampling!r}")
        if seed < 0 or start_step < 0:
            raise ValueError(f"seed and start_step must be >= 0, got seed={seed}, start_step={start_step}")
        if num_positive < 0 or num_negative < 0:
            raise ValueError(f"num_positive/num_negative must be >= 0, got {num_positive}/{num_negative}")
        self._jax_layout = process_index is None and process_count is None
        if self._jax_layout:
            import jax
            process_index, process_count = jax.process_index(), jax.process_count()
        elif process_index is None or process_count is None:
            raise ValueError("pass both process_index and process_count, or neither")
        self.process_index, self.process_count = process_index, process_count
        self.global_batch = global_batch
        self.local_batch = _local_batch(global_batch, process_count)
        self.mesh, self.data_axis = mesh, data_axis
        self.seed, self.start_step = seed, start_step
        self.random_crop, self.crop_sampling = random_crop, crop_sampling

        self.dataset = records.open_dataset(data_dir)
        if num_workers is None:
            num_workers = REMOTE_WORKERS if storage.is_remote(self.dataset.path) else LOCAL_WORKERS
        self.prefetch, self.num_workers = prefetch, max(1, num_workers)
        self.split = split
        clip = int(round(clip_seconds * self.dataset.sample_rate))
        if self.dataset.clip_samples is not None and clip > self.dataset.clip_samples:
            raise ValueError(f"clip_seconds {clip_seconds} is longer than the dataset's clip "
                             f"({self.dataset.clip_samples / self.dataset.sample_rate} s) in "
                             f"{str(self.dataset.path)!r}")
        self.spec = ExampleSpec(
            clip_samples=clip, sample_rate=self.dataset.sample_rate, num_positive=num_positive,
            num_negative=num_negative, temperature=temperature, transcribe_negatives=transcribe_negatives,
            targets=targets, stems=stems, evaluation=not random_crop)
        # Every host indexes the whole split: the global batch does not depend on the host count.
        self.index = records.split_index(self.dataset, split)
        if len(self.index) == 0:
            raise ValueError(f"split {split!r} of {str(self.dataset.path)!r} has no records")
        self.table = crop_table(self.index, clip, resolve_hop(self.dataset, self.index))
        if random_crop:
            if self.table.total == 0:
                raise ValueError(f"split {split!r}: no valid {clip_seconds}-s crop start in {str(self.dataset.path)!r}")
            self.tracks = TrackStarts.of(self.index, self.table)
            self.examples_per_epoch = (len(self.tracks) if crop_sampling == "per_track"
                                       else epoch_size(self.table, clip))
            self.steps_per_epoch = max(1, self.examples_per_epoch // self.global_batch)
            self._slots = None
        else:
            crops = eval_crops(self.index, self.table, clip, self.dataset.sample_rate, eval_offset_seconds)
            if not crops:
                raise ValueError(f"split {split!r} of {str(self.dataset.path)!r} has no track at least one "
                                 f"{clip_seconds}-s clip long")
            mine = list(range(process_index, len(crops), process_count))
            most = math.ceil(len(crops) / process_count)
            self.steps_per_epoch = math.ceil(most / self.local_batch)
            self.num_tracks = len(crops)
            # (track position, record, start, valid); padding repeats the host's last crop.
            fill = mine[-1] if mine else 0
            self._slots = [(p, *crops[p], 1.0) for p in mine]
            self._slots += [(fill, *crops[fill], 0.0)] * (self.steps_per_epoch * self.local_batch - len(mine))
            if start_step > self.steps_per_epoch:
                raise ValueError(f"start_step {start_step} is past the {self.steps_per_epoch} evaluation steps")
        self.reader = records.RecordReader(self.dataset, self.index)
        self._positions: dict[int, np.ndarray] = {}
        self._positions_lock = threading.Lock()
        self._corruption: records.CorruptRecordError | None = None  # the first, raised by local_batches
        self._iterator = None

    # -- examples --

    def _epoch_positions(self, epoch: int) -> np.ndarray:
        with self._positions_lock:
            if epoch not in self._positions:
                if len(self._positions) >= 2:
                    self._positions.pop(min(self._positions))
                self._positions[epoch] = (
                    epoch_tracks(self.seed, epoch, len(self.tracks)) if self.crop_sampling == "per_track"
                    else epoch_positions(self.seed, epoch, self.table.total, self.examples_per_epoch))
            return self._positions[epoch]

    def global_example(self, i: int) -> int:
        """The global example that local example ``i`` of this host is (module docstring)."""
        step, slot = divmod(i, self.local_batch)
        return step * self.global_batch + self.process_index * self.local_batch + slot

    def example(self, i: int) -> dict[str, np.ndarray]:
        """Local example ``i`` of this host: a pure function of the seed, the global example
        number and the data (evaluation: of the seed, the track and the data)."""
        if self._slots is not None:
            position, record, start, valid = self._slots[i]
            rng = np.random.default_rng([self.seed, 2, position])
            record_data, start = audible_eval_crop(self.index, self.table, (record, start), self.reader.read_lazy,
                                                   self.spec)
            return build_example(record_data, start, rng, self.spec, valid=valid)
        g = self.global_example(i)
        epoch, j = divmod(g, self.examples_per_epoch)
        rng = np.random.default_rng([self.seed, 0, g])
        drawn = int(self._epoch_positions(epoch)[j])
        if self.crop_sampling == "per_track":
            track = drawn
            first = self.tracks.draw(track, rng, self.table)
        else:
            first = self.table.locate(drawn)
            track = int(self.tracks.track_of_record[first[0]])
        record, start = draw_audible_crop(first, lambda: self.tracks.draw(track, rng, self.table),
                                          self.reader.read_lazy, self.spec)
        return build_example(record, start, rng, self.spec)

    def _tf_dataset(self):
        import tensorflow as tf

        fields = self.spec.fields()
        first = self.start_step * self.local_batch
        last = _INFINITE if self._slots is None else len(self._slots)

        def produce(i):
            try:
                ex = self.example(int(i))
            except records.CorruptRecordError as error:
                if self._corruption is None:  # several workers may race here: any of theirs will do
                    self._corruption = error
                raise
            return tuple(np.asarray(ex[name], dtype=dtype) for name, dtype, _ in fields)

        def to_dict(i):
            values = tf.numpy_function(produce, [i], [tf.as_dtype(d) for _, d, _ in fields], stateful=False)
            out = {}
            for (name, _, shape), value in zip(fields, values):
                value.set_shape(shape)
                out[name] = value
            return out

        ds = tf.data.Dataset.range(first, last)
        ds = ds.map(to_dict, num_parallel_calls=self.num_workers, deterministic=True)
        ds = ds.batch(self.local_batch, drop_remainder=True)
        if self.prefetch:
            ds = ds.prefetch(self.prefetch)
        options = tf.data.Options()
        options.deterministic = True
        return ds.with_options(options)

    def local_batches(self) -> Iterator[dict[str, np.ndarray]]:
        """This host's batches as numpy dicts, ``local_batch`` clips each.

        A record that fails its CRC check stops the iteration with its own
        :class:`records.CorruptRecordError` (shard, record, byte offset, track id), not the
        ``tf.data`` error that carries it."""
        import tensorflow as tf

        try:
            for batch in self._tf_dataset().as_numpy_iterator():
                yield batch
        except tf.errors.OpError:
            if self._corruption is not None:
                raise self._corruption from None
            raise

    # -- global arrays --

    def _sharding(self):
        import jax
        from jax.sharding import NamedSharding, PartitionSpec

        mesh = self.mesh
        if mesh is None:
            mesh = jax.make_mesh((len(jax.devices()),), (self.data_axis,))
        if self.data_axis not in mesh.axis_names:
            raise ValueError(f"mesh axes {mesh.axis_names} lack the data axis {self.data_axis!r}")
        size = mesh.shape[self.data_axis]
        if self.global_batch % size:
            raise ValueError(f"global_batch {self.global_batch} is not divisible by the mesh's "
                             f"{self.data_axis!r} axis size {size}")
        return NamedSharding(mesh, PartitionSpec(self.data_axis))

    def __iter__(self):
        import jax

        if not self._jax_layout:
            raise RuntimeError("global arrays need the real process layout; this pipeline was built with "
                               "explicit process_index/process_count, use local_batches()")
        sharding = self._sharding()

        def generate():
            for batch in self.local_batches():
                yield {key: jax.make_array_from_process_local_data(
                    sharding, value, (self.global_batch,) + value.shape[1:]) for key, value in batch.items()}

        self._iterator = generate()
        return self._iterator

    def close(self) -> None:
        """Stops iteration and closes the shard files."""
        if self._iterator is not None:
            self._iterator.close()
            self._iterator = None
        self.reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def make_train_iterator(data_dir, split: str, *, global_batch: int, num_positive: int = 0,
                        num_negative: int = 0, temperature: float = 0.5, transcribe_negatives: bool = False,
                        seed: int = 0, start_step: int = 0, mesh=None, data_axis: str = "data",
                        clip_seconds: float = 10.0, random_crop: bool = True, targets: bool = True,
                        stems: bool = True, prefetch: int = 2, num_workers: int | None = None,
                        eval_offset_seconds: float = EVAL_OFFSET_SECONDS, crop_sampling: str = "per_track",
                        process_index: int | None = None, process_count: int | None = None) -> InputPipeline:
    """Builds the input pipeline (module docstring); iterate it for dicts of global ``jax.Array``.

    Args:
      data_dir: TFDS data dir holding ``slakh2100/clips/<version>`` (or the version dir itself),
        local or ``gs://``.
      split: ``train``, ``validation`` or ``test``.
      global_batch: clips per step over all hosts; each host makes ``global_batch // process_count``.
      num_positive, num_negative: rows per clip (0 and 0: recognizer batches, waveform + labels).
      temperature: positive sampler temperature. transcribe_negatives: docs/deviations.md 14 option.
      seed: data seed. start_step: first step to produce; earlier batches are not read.
      mesh, data_axis: batches are sharded along ``data_axis`` (default mesh: all devices).
      clip_seconds: crop length. random_crop: False = evaluation mode (one fixed crop per track,
        finite, ``valid`` key). targets / stems: False skips rolls / sources.
      prefetch: batches prefetched. num_workers: parallel example builders (default
        :data:`LOCAL_WORKERS`, or :data:`REMOTE_WORKERS` for a dataset in a bucket).
      eval_offset_seconds: evaluation crop start (docs/deviations.md 13).
      crop_sampling: ``"per_track"`` (the reference: every track equally likely) or
        ``"all_audio"`` (every crop start equally likely); see the module docstring.
      process_index, process_count: for tests (default: jax's); explicit values allow only
        :meth:`InputPipeline.local_batches`.
    """
    return InputPipeline(
        data_dir, split, global_batch=global_batch, num_positive=num_positive, num_negative=num_negative,
        temperature=temperature, transcribe_negatives=transcribe_negatives, seed=seed, start_step=start_step,
        mesh=mesh, data_axis=data_axis, clip_seconds=clip_seconds, random_crop=random_crop, targets=targets,
        stems=stems, prefetch=prefetch, num_workers=num_workers, eval_offset_seconds=eval_offset_seconds,
        crop_sampling=crop_sampling, process_index=process_index, process_count=process_count)


def steps_per_epoch(data_dir, split: str, *, global_batch: int, clip_seconds: float = 10.0,
                    crop_sampling: str = "per_track") -> int:
    """Training steps per epoch (examples per epoch // global batch, at least 1)."""
    with InputPipeline(data_dir, split, global_batch=global_batch, clip_seconds=clip_seconds,
                       targets=False, stems=False, crop_sampling=crop_sampling,
                       process_index=0, process_count=1) as pipe:
        return pipe.steps_per_epoch
