"""Which crops the input pipeline reads: valid crop starts, the epoch order, silent-crop redraws
and the fixed evaluation crops (docs/reference.md §4.3; docs/deviations.md 12, 13, 29, 30, 34, 35).

* Every window of the split's record index (:mod:`jointist_jax.data.records`) gets its range of
  valid crop starts (:class:`CropTable`).
* Which crop global example ``g`` is (``crop_sampling``):

  - ``"per_track"`` (the reference, docs/reference.md §4.3): an epoch is one crop of every track,
    tracks in the order of a permutation drawn from ``default_rng([seed, 1, epoch])``
    (:func:`epoch_tracks`); the crop start is uniform over the track's valid starts
    (:meth:`TrackStarts.draw`). Every track is equally likely whatever its length.
  - ``"all_audio"``: every crop start of the split is equally likely, so long songs weigh more.
    An epoch is ``M`` examples (all starts divided by the clip length, rounded up): one uniform
    draw in each of ``M`` equal slices of all starts, shuffled by ``default_rng([seed, 1, epoch])``
    (:func:`epoch_positions`).
* Silent crops: as the reference, a crop whose audio is all zeros or that holds no labelled note
  is redrawn uniformly over its whole track, at most :data:`MAX_CROP_REDRAWS` times (the
  reference has no bound) (:func:`draw_audible_crop`); a crop that stays silent gets all-negative
  rows (:mod:`jointist_jax.data.sampler`).
* Evaluation (docs/deviations.md 13, 35): one crop per track, the first candidate starting at
  :data:`EVAL_OFFSET_SECONDS` (10 s), or at 0 when the track is shorter than the offset plus one
  clip (20 s for 10-s clips) (:func:`eval_crops`); as the reference, a silent or note-less
  candidate moves on by :data:`EVAL_STEP_SECONDS` (at most :data:`MAX_CROP_REDRAWS` times, and
  not past the track's end) (:func:`audible_eval_crop`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np

from jointist_jax.data import records, targets

if TYPE_CHECKING:
    from jointist_jax.data.spec import InputSpec

# A track whose crops are this many times in a row silent gets an all-negative example instead.
MAX_CROP_REDRAWS = 32
CROP_SAMPLINGS = ("per_track", "all_audio")
EVAL_OFFSET_SECONDS = 10.0
EVAL_STEP_SECONDS = 1.0


def crop_labels(record, offset_s: float, seconds: float) -> np.ndarray:
    """The recognizer labels (:func:`jointist_jax.data.targets.instrument_labels`) of the crop of
    ``record`` that starts ``offset_s`` seconds into its window and lasts ``seconds``."""
    return targets.instrument_labels(record["note_class"], record["note_onset"], record["note_offset"],
                                     offset_s, seconds)


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


def is_audible(record, start: int, spec: "InputSpec") -> bool:
    """The reference's test of a training crop: some labelled note and some non-zero sample."""
    offset = start - int(record["window_start"])
    seconds = spec.clip_samples / spec.sample_rate
    return bool(crop_labels(record, offset / spec.sample_rate, seconds).any()
                and np.any(record.mix(offset, spec.clip_samples)))


def draw_audible_crop(first: tuple[int, int], redraw, read, spec: "InputSpec",
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
                      spec: "InputSpec"):
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
