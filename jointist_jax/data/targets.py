"""Piano-roll targets and recognizer labels for one crop (docs/reference.md §4.4, docs/deviations.md 12).

Pure numpy; called once per sampled row inside the input pipeline, so the per-note work is
vectorised and the only Python loop is over the (at most 88) keys that have an onset.

Times (``onsets``, ``offsets``, ``start``) share one time base, in seconds; the crop covers
``[start, start + seconds]``.
"""

from __future__ import annotations

import numpy as np

from jointist_jax import instruments
from jointist_jax.music import FRAMES_PER_SECOND, LOWEST_MIDI_NOTE, NUM_PITCHES

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


def instrument_labels(note_class, onsets, offsets, start: float, seconds: float) -> np.ndarray:
    """float32 (40,) recognizer labels: 1 for every class with a note overlapping the crop.

    ``Empty`` (index 39) is never set; a class index outside 0..38 raises ``ValueError``.
    """
    note_class = np.asarray(note_class, dtype=np.int64).reshape(-1)
    onsets = np.asarray(onsets, dtype=np.float64).reshape(-1)
    offsets = np.asarray(offsets, dtype=np.float64).reshape(-1)
    if not note_class.shape == onsets.shape == offsets.shape:
        raise ValueError(
            f"note arrays must have equal lengths, got note_class {note_class.shape}, "
            f"onsets {onsets.shape}, offsets {offsets.shape}")
    if np.any((note_class < 0) | (note_class >= instruments.NUM_CLASSES)):
        raise ValueError(f"note_class must lie in 0..{instruments.NUM_CLASSES - 1}, got "
                         f"{sorted(set(note_class.tolist()))}")
    labels = np.zeros(instruments.CONDITION_SIZE, dtype=np.float32)
    labels[note_class[overlapping(onsets, offsets, start, seconds)]] = 1.0
    return labels
