"""Notes <-> piano rolls: the training targets, the decoder and the evaluation's reference rolls.

Three directions share the one frame grid of :mod:`jointist_jax.music` (``FRAMES_PER_SECOND``
frames per second, key 0 = ``LOWEST_MIDI_NOTE``, ``NUM_PITCHES`` keys):

* notes -> rolls (:func:`note_rolls`, docs/reference.md §4.4, docs/deviations.md 12): the onset,
  soft-onset, frame and mask rolls of one instrument in one crop, the transcription targets.
  Pure numpy; called once per sampled row inside the input pipeline, so the per-note work is
  vectorised and the only Python loop is over the (at most 88) keys that have an onset. Times
  (``onsets``, ``offsets``, ``start``) share one time base, in seconds; the crop covers
  ``[start, start + seconds]``.
* rolls -> notes (:func:`decode_notes`, docs/reference.md §7.1): onset-gated frame decoding of
  posteriorgrams, vectorised in numpy. Per instrument and piano key (as the reference's
  ``OnsetFramePostProcessor``):

  1. ``frames = frame_output > frame_threshold``, ``onsets = reg_onset_output > onset_threshold``.
  2. ``onset_diff = onsets & frames``: a note starts only where both are active.
  3. A run of consecutive ``onset_diff`` frames is one onset, at the run's first frame. Frame 0
     has no predecessor (the reference wraps to the last frame there: docs/deviations.md 15 fixes it).
  4. The note ends at the first inactive ``frames`` frame at or after the onset (or at T).
  5. Notes of fewer than ``min_note_frames`` frames are dropped (1 = keep all, the reference).

  Times are frame / frames_per_second; the velocity is always 100. A second onset inside an
  already sounding note starts another note that ends with the same frame run, as in the
  reference; the MIDI writer keeps both. Decoded notes are :class:`jointist_jax.music.Notes`.
* a whole track's notes -> reference frame rolls (:func:`reference_frame_rolls`): what the
  evaluation's frame metrics compare against, the training targets' frame rolls from frame 0.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from jointist_jax.music import FRAMES_PER_SECOND, LOWEST_MIDI_NOTE, NUM_PITCHES, Notes

# --- notes -> rolls

# Kong et al. (2021) soft-onset target: linear decay to 0 at +-50 ms.
REGRESSION_RADIUS_SECONDS = 0.05


def num_frames(seconds: float, frames_per_second: int = FRAMES_PER_SECOND) -> int:
    """Frames of a crop: ``round(seconds * frames_per_second) + 1`` (1001 for 10 s), as the STFT's."""
    return int(round(seconds * frames_per_second)) + 1


def overlapping(onsets: np.ndarray, offsets: np.ndarray, start: float, seconds: float) -> np.ndarray:
    """Boolean mask of notes that overlap ``[start, start + seconds]``.

    docs/deviations.md 12: this is the union of the reference's two strict-inequality tests (onset or offset
    strictly inside the window) and the notes spanning the whole window, which the reference drops.
    """
    onsets = np.asarray(onsets, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.float64)
    return (onsets < start + seconds) & (offsets > start)


def _check_notes(onsets, offsets, pitches):
    onsets = np.asarray(onsets, dtype=np.float64).reshape(-1)
    offsets = np.asarray(offsets, dtype=np.float64).reshape(-1)
    pitches = np.asarray(pitches).reshape(-1)
    if not onsets.shape == offsets.shape == pitches.shape:
        raise ValueError(
            f"note arrays must have equal lengths, got onsets {onsets.shape}, offsets {offsets.shape}, "
            f"pitches {pitches.shape}")
    return onsets, offsets, pitches.astype(np.int64)


def _interval_cover(lo: np.ndarray, hi: np.ndarray, keys: np.ndarray, frames: int, num_pitches: int) -> np.ndarray:
    """(frames, num_pitches) bool: True where some half-open interval [lo, hi) on its key covers the frame."""
    lo = np.clip(lo, 0, frames)
    hi = np.clip(hi, 0, frames)
    keep = hi > lo
    diff = np.zeros((frames + 1, num_pitches), dtype=np.int32)
    np.add.at(diff, (lo[keep], keys[keep]), 1)
    np.add.at(diff, (hi[keep], keys[keep]), -1)
    return np.cumsum(diff[:-1], axis=0) > 0


def regression_target(onset_frames: np.ndarray, shifts: np.ndarray, frames: int,
                      frames_per_second: int = FRAMES_PER_SECOND) -> np.ndarray:
    """Kong et al.'s soft onset target on one key (docs/reference.md §4.4).

    Args:
      onset_frames: sorted, unique onset frame indices on this key.
      shifts: the sub-frame shift ``(onset - start) - frame / frames_per_second`` of each onset, in
        seconds.
      frames: number of frames.

    Returns:
      float32 (frames,): ``1 - 20 * clip(|d|, 0, 0.05)`` where ``d = (t - loc) / frames_per_second -
      shift`` uses the onset assigned to frame ``t``: frames before ``(a + b) // 2`` go to the
      earlier of two consecutive onsets ``a < b``, the others to the later one. All zeros without onsets.
    """
    if len(onset_frames) == 0:
        return np.zeros(frames, dtype=np.float32)
    locs = np.asarray(onset_frames, dtype=np.int64)
    t = np.arange(frames)
    prev = np.clip(np.searchsorted(locs, t, side="right") - 1, 0, len(locs) - 1)
    nxt = np.minimum(prev + 1, len(locs) - 1)
    midpoint = (locs[prev] + locs[nxt]) // 2
    # Frames after the last onset at or before them, from the midpoint on, belong to the next onset.
    owner = np.where((t >= locs[prev]) & (nxt != prev) & (t >= midpoint), nxt, prev)
    d = (t - locs[owner]) / frames_per_second - np.asarray(shifts, dtype=np.float64)[owner]
    out = 1.0 - np.clip(np.abs(d), 0.0, REGRESSION_RADIUS_SECONDS) / REGRESSION_RADIUS_SECONDS
    return out.astype(np.float32)


def note_rolls(onsets, offsets, pitches, *, start: float, seconds: float,
               frames_per_second: int = FRAMES_PER_SECOND, lowest_note: int = LOWEST_MIDI_NOTE,
               num_pitches: int = NUM_PITCHES) -> dict[str, np.ndarray]:
    """Onset, soft-onset, frame and mask rolls of one instrument in one crop (docs/reference.md §4.4).

    Notes overlapping the crop are kept, including those spanning it (docs/deviations.md 12). Per note,
    ``key = clip(pitch - lowest_note, 0, num_pitches - 1)`` and, with ``fps = frames_per_second``,
    ``bgn = round((onset - start) * fps)``, ``fin = round((offset - start) * fps)``; the frame roll
    is 1 on frames ``max(bgn, 0) .. fin`` (inclusive); a note with ``bgn >= 0`` marks
    ``onset_roll[bgn]`` and its sub-frame shift; a note begun before the crop zeroes
    ``mask_roll[:fin + 1]`` on its key.

    Returns:
      dict with ``onset_roll``, ``reg_onset_roll``, ``frame_roll``, ``mask_roll``, each float32
      (frames, num_pitches) with ``frames = round(seconds * fps) + 1``.
    """
    onsets, offsets, pitches = _check_notes(onsets, offsets, pitches)
    frames = num_frames(seconds, frames_per_second)
    keep = overlapping(onsets, offsets, start, seconds)
    rel_on = onsets[keep] - start
    rel_off = offsets[keep] - start
    keys = np.clip(pitches[keep] - lowest_note, 0, num_pitches - 1)
    # np.round rounds half to even, as Python's round() in the reference does.
    bgn = np.round(rel_on * frames_per_second).astype(np.int64)
    fin = np.round(rel_off * frames_per_second).astype(np.int64)
    valid = fin >= 0
    bgn, fin, keys, rel_on = bgn[valid], fin[valid], keys[valid], rel_on[valid]

    frame_roll = _interval_cover(np.maximum(bgn, 0), fin + 1, keys, frames, num_pitches)
    began_before = bgn < 0
    mask_roll = ~_interval_cover(np.zeros(began_before.sum(), np.int64), fin[began_before] + 1,
                                 keys[began_before], frames, num_pitches)

    onset_roll = np.zeros((frames, num_pitches), dtype=np.float32)
    reg_onset_roll = np.zeros((frames, num_pitches), dtype=np.float32)
    has_onset = (bgn >= 0) & (bgn < frames)
    on_frames, on_keys = bgn[has_onset], keys[has_onset]
    on_shifts = rel_on[has_onset] - on_frames / frames_per_second
    onset_roll[on_frames, on_keys] = 1.0
    for key in np.unique(on_keys):
        sel = on_keys == key
        frames_k, shifts_k = on_frames[sel], on_shifts[sel]
        # Two notes on one frame: the later one in note order wins, as the reference overwrites.
        order = np.argsort(frames_k, kind="stable")
        frames_k, shifts_k = frames_k[order], shifts_k[order]
        last = np.r_[frames_k[1:] != frames_k[:-1], True]
        reg_onset_roll[:, key] = regression_target(frames_k[last], shifts_k[last], frames, frames_per_second)

    return {
        "onset_roll": onset_roll,
        "reg_onset_roll": reg_onset_roll,
        "frame_roll": frame_roll.astype(np.float32),
        "mask_roll": mask_roll.astype(np.float32),
    }


# --- rolls -> notes

DEFAULT_THRESHOLD = 0.1


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    """Thresholds and minimum length of :func:`decode_notes` (defaults: docs/reference.md §1.2 evaluation)."""

    onset_threshold: float = DEFAULT_THRESHOLD
    frame_threshold: float = DEFAULT_THRESHOLD
    min_note_frames: int = 1
    frames_per_second: float = FRAMES_PER_SECOND

    def __post_init__(self):
        for name in ("onset_threshold", "frame_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.min_note_frames < 1:
            raise ValueError(f"min_note_frames must be >= 1, got {self.min_note_frames}")
        if self.frames_per_second <= 0:
            raise ValueError(f"frames_per_second must be > 0, got {self.frames_per_second}")


def decode_note_frames(reg_onset_output: np.ndarray, frame_output: np.ndarray,
                       options: DecodeOptions = DecodeOptions()) -> np.ndarray:
    """Notes of posteriorgrams (..., T, 88) as an int array (N, ndim) of (*lead, onset, offset, key).

    Leading axes (e.g. instruments K) are decoded independently; rows come in lead-major,
    then time-major, then key order. ``offset`` is exclusive (the first inactive frame).
    """
    onset = np.asarray(reg_onset_output)
    frame = np.asarray(frame_output)
    if onset.shape != frame.shape:
        raise ValueError(f"reg_onset_output {onset.shape} and frame_output {frame.shape} must have the same shape")
    if onset.ndim < 2:
        raise ValueError(f"posteriorgrams must be (..., T, keys), got shape {onset.shape}")
    frames = frame > options.frame_threshold
    onset_diff = (onset > options.onset_threshold) & frames
    # A frame starts an onset run if the previous frame is not in onset_diff; frame 0 has none.
    previous = np.zeros_like(onset_diff)
    previous[..., 1:, :] = onset_diff[..., :-1, :]
    starts = onset_diff & ~previous

    # next_off[t] = first frame >= t whose frame is inactive (T if none): a reverse running minimum.
    t_axis = frames.ndim - 2
    length = frames.shape[t_axis]
    time_index = np.arange(length, dtype=np.int32).reshape((length, 1))
    inactive_at = np.where(frames, np.int32(length), time_index)
    next_off = np.flip(np.minimum.accumulate(np.flip(inactive_at, axis=t_axis), axis=t_axis), axis=t_axis)

    found = np.argwhere(starts)  # C order: lead-major, then time, then key
    offsets = next_off[tuple(found.T)]
    rows = np.concatenate([found[:, :-1], offsets[:, None], found[:, -1:]], axis=1)
    keep = rows[:, -2] - rows[:, -3] >= options.min_note_frames
    return rows[keep]


def decode_notes(reg_onset_output: np.ndarray, frame_output: np.ndarray,
                 options: DecodeOptions = DecodeOptions()) -> Notes:
    """Notes of one instrument's posteriorgrams (T, 88), in time-major order."""
    if np.ndim(reg_onset_output) != 2:
        raise ValueError(f"decode_notes takes one instrument's (T, keys) posteriorgram, got "
                         f"shape {np.shape(reg_onset_output)}")
    rows = decode_note_frames(reg_onset_output, frame_output, options)
    return Notes.from_frames(rows[:, 0], rows[:, 1], rows[:, 2], options.frames_per_second)


def decode_instruments(reg_onset_output: np.ndarray, frame_output: np.ndarray, class_ids: Sequence[int],
                       options: DecodeOptions = DecodeOptions()) -> dict[int, Notes]:
    """Notes per class index from stacked posteriorgrams (K, T, 88) of the K classes ``class_ids``."""
    if np.ndim(reg_onset_output) != 3 or np.shape(reg_onset_output)[0] != len(class_ids):
        raise ValueError(f"posteriorgrams must be (K={len(class_ids)}, T, keys), got "
                         f"shape {np.shape(reg_onset_output)}")
    # One instrument at a time bounds the temporary arrays to one (T, 88) slice (a long song has
    # T ~ 30k frames and K up to 39).
    return {int(class_id): decode_notes(reg_onset_output[k], frame_output[k], options)
            for k, class_id in enumerate(class_ids)}


# --- a track's reference rolls

def reference_frame_rolls(notes_by_class: Mapping[int, Notes], num_frames: int) -> dict[int, np.ndarray]:
    """Class index -> (num_frames, 88) 0/1 frame roll of each class's notes, from frame 0 (the
    evaluation's reference rolls: the training targets' frame rolls over the whole track)."""
    seconds = (num_frames - 1) / FRAMES_PER_SECOND
    rolls = {}
    for cls, notes in notes_by_class.items():
        roll = note_rolls(notes.onsets, notes.offsets, notes.pitches, start=0.0, seconds=seconds)["frame_roll"]
        rolls[cls] = roll[:num_frames]
    return rolls
