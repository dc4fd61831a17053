"""Packing arithmetic: how one Slakh track is cut into overlapping stored windows, and back.

A track of ``N`` samples (``N >= clip``) is stored as ``K = ceil((N - clip + 1) / H)`` windows;
window ``k`` covers samples ``[k*H, min(k*H + H + clip - 1, N))``. Every training crop start
``s`` in ``[0, N - clip]`` then lies in exactly one window, ``k = s // H``, and the crop
``[s, s + clip)`` lies inside that window, so a reader can draw any 10-s crop by reading one
record. Storage overhead is ``(H + clip - 1) / H`` (1.33x for the default 30-s hop).

Notes are stored per window with times relative to the window start; a window holds every
note with ``onset <= window end`` and ``offset >= window start`` (so notes begun before the
window are there for the target mask, and the last window keeps a note starting exactly at the
end of the track). Note times are first quantised to :data:`TIME_QUANTUM`
(2**-15 s, a binary fraction, under one 16-kHz sample) so that window-relative float32 times
within 512 s of the window start are exact: :func:`assemble_track` then puts every note back in
exactly one window without rounding ambiguity and recovers its times exactly (only the offset
of a note held for more than ~8 minutes past its window's start can be off, by < 0.1 ms). The
builder (``data_pipelines/slakh2100``) packs with these functions and the reader
(``jointist_jax/data/``) reads back with them: :func:`num_windows`, :func:`window_bounds`,
:func:`window_of_crop`, :func:`assemble_track`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from jointist_jax.music import SAMPLE_RATE

# Note times are multiples of this (seconds). It is a power of two so that
# ``onset - window_start`` is exact in float32 for windows shorter than MAX_WINDOW_SECONDS.
TIME_QUANTUM = 2.0 ** -15
# float32 has a 24-bit significand: times below 2**24 quanta (512 s) stay exact.
MAX_WINDOW_SECONDS = 2.0 ** 24 * TIME_QUANTUM

NOTE_FIELDS = ("note_class", "note_pitch", "note_velocity", "note_onset", "note_offset")


def num_windows(num_samples: int, clip: int, hop: int) -> int:
    """Number of stored windows for a track of ``num_samples``; 0 if shorter than one clip."""
    _check_positive(clip=clip, hop=hop)
    if num_samples < clip:
        return 0
    return -(-(num_samples - clip + 1) // hop)


def window_bounds(num_samples: int, clip: int, hop: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` sample ranges of the stored windows of one track."""
    return [(k * hop, min(k * hop + hop + clip - 1, num_samples))
            for k in range(num_windows(num_samples, clip, hop))]


def window_of_crop(crop_start: int, hop: int) -> int:
    """Index of the window that holds the crop starting at sample ``crop_start``."""
    if crop_start < 0:
        raise ValueError(f"crop start must be >= 0, got {crop_start}")
    return crop_start // hop


def quantize_times(seconds: np.ndarray) -> np.ndarray:
    """Rounds times (s) to the nearest multiple of :data:`TIME_QUANTUM` (float64)."""
    return np.round(np.asarray(seconds, dtype=np.float64) / TIME_QUANTUM) * TIME_QUANTUM


def check_hop(hop_seconds: float, clip_seconds: float, sample_rate: int) -> tuple[int, int]:
    """Validates the packing parameters; returns ``(hop, clip)`` in samples.

    The hop must be a whole number of samples and a multiple of :data:`TIME_QUANTUM` (window
    starts then lie on the note-time grid), and one window must be shorter than
    :data:`MAX_WINDOW_SECONDS` (exact float32 relative times).
    """
    hop = hop_seconds * sample_rate
    clip = clip_seconds * sample_rate
    if hop <= 0 or clip <= 0 or hop != int(hop) or clip != int(clip):
        raise ValueError(f"hop_seconds={hop_seconds} and clip_seconds={clip_seconds} must be "
                         f"positive whole numbers of samples at {sample_rate} Hz")
    if (hop_seconds / TIME_QUANTUM) != int(hop_seconds / TIME_QUANTUM):
        raise ValueError(f"hop_seconds={hop_seconds} must be a multiple of 2**-15 s")
    if hop_seconds + clip_seconds >= MAX_WINDOW_SECONDS:
        raise ValueError(f"hop_seconds + clip_seconds must be < {MAX_WINDOW_SECONDS:g} s, "
                         f"got {hop_seconds + clip_seconds}")
    return int(hop), int(clip)


def window_notes(notes: Mapping[str, np.ndarray], start: int, end: int,
                 sample_rate: int) -> dict[str, np.ndarray]:
    """The notes of one window, with times relative to the window start.

    Args:
      notes: track-level ``note_*`` arrays (:data:`NOTE_FIELDS`) with absolute, quantised times,
        sorted by (onset, class, pitch, offset, velocity).
      start, end: the window's sample range.
      sample_rate: samples per second.

    Returns:
      the ``note_*`` arrays of every note with ``onset <= end`` and ``offset >= start`` (in
      seconds), in the track order; onsets/offsets float32 relative to ``start``, the rest int32.
    """
    t0, t1 = start / sample_rate, end / sample_rate
    onset, offset = notes["note_onset"], notes["note_offset"]
    # ``<=``: a note starting exactly at the end of the track must reach the last window (the
    # reference keeps it). In an earlier window such a note is an extra copy that no crop of that
    # window overlaps and that assemble_track leaves to the window owning its onset.
    keep = (onset <= t1) & (offset >= t0)
    out = {name: np.asarray(notes[name][keep], dtype=np.int32)
           for name in ("note_class", "note_pitch", "note_velocity")}
    out["note_onset"] = (onset[keep] - t0).astype(np.float32)
    out["note_offset"] = (offset[keep] - t0).astype(np.float32)
    return out


def assemble_track(windows: Sequence[Mapping[str, np.ndarray]],
                   sample_rate: int = SAMPLE_RATE) -> dict[str, np.ndarray]:
    """Reassembles the decoded windows of one track into full-length audio and notes.

    ``mix = concat(window_k[:H] for k < last) + window_last``; each note is taken from the one
    window its onset falls in (``0 <= onset - window_start < H``; the last window owns the
    tail), which is exact because note times lie on the :data:`TIME_QUANTUM` grid.

    Args:
      windows: every window of one track, in window order, as decoded numpy dicts (keys of the
        record schema; ``track_id`` may be bytes or str).
      sample_rate: the dataset's sample rate (the records store sample positions).

    Returns:
      ``track_id`` (str), ``track_length`` (int), ``mix`` (int16 [N]), ``stem_classes``
      (int32 [C]), ``stems`` (int16 [C, N]), ``track_classes`` and the ``note_*`` arrays with
      times relative to the track start (float64), sorted by (onset, class, pitch).

    Raises:
      ValueError: if the windows are not the complete, ordered window set of one track.
    """
    if not windows:
        raise ValueError("assemble_track needs at least one window")
    first = windows[0]
    track_id = _text(first["track_id"])
    n = int(first["track_length"])
    if any(_text(w["track_id"]) != track_id for w in windows):
        raise ValueError(f"{track_id}: windows of several tracks were passed")
    indices = [int(w["window_index"]) for w in windows]
    if indices != list(range(len(windows))):
        raise ValueError(f"{track_id}: expected window indices 0..{len(windows) - 1} in order, "
                         f"got {indices}")
    starts = [int(w["window_start"]) for w in windows]
    last = len(windows) - 1
    hop = starts[1] - starts[0] if last > 0 else n
    if starts != [k * hop for k in range(len(windows))]:
        raise ValueError(f"{track_id}: window starts {starts} are not multiples of one hop")

    mix = np.concatenate([np.asarray(w["mix"])[:hop] if k < last else np.asarray(w["mix"])
                          for k, w in enumerate(windows)])
    stems = np.concatenate([np.asarray(w["stems"])[:, :hop] if k < last else np.asarray(w["stems"])
                            for k, w in enumerate(windows)], axis=1)
    if mix.shape[0] != n or stems.shape[1] != n:
        raise ValueError(f"{track_id}: windows reassemble to {mix.shape[0]} samples, "
                         f"track_length says {n}")

    parts: dict[str, list[np.ndarray]] = {name: [] for name in NOTE_FIELDS}
    for k, w in enumerate(windows):
        rel = np.asarray(w["note_onset"], dtype=np.float64)
        owned = rel >= 0 if k > 0 else np.ones(rel.shape, bool)
        if k < last:
            owned &= rel < hop / sample_rate
        t0 = starts[k] / sample_rate
        for name in NOTE_FIELDS:
            values = np.asarray(w[name])[owned]
            if name in ("note_onset", "note_offset"):
                values = values.astype(np.float64) + t0
            parts[name].append(values)
    out: dict[str, np.ndarray] = {name: np.concatenate(parts[name]) for name in NOTE_FIELDS}
    out.update(track_id=track_id, track_length=n, mix=mix, stems=stems,
               stem_classes=np.asarray(first["stem_classes"], dtype=np.int32),
               track_classes=np.asarray(first["track_classes"], dtype=np.int32))
    return out


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
