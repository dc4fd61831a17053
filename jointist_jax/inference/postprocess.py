"""Posteriorgrams -> notes: onset-gated frame decoding (docs/reference.md §7.1), vectorised in numpy.

The rule, per instrument and piano key (as the reference's ``OnsetFramePostProcessor``):

1. ``frames = frame_output > frame_threshold``, ``onsets = reg_onset_output > onset_threshold``.
2. ``onset_diff = onsets & frames``: a note starts only where both are active.
3. A run of consecutive ``onset_diff`` frames is one onset, at the run's first frame. Frame 0
   has no predecessor (the reference wraps to the last frame there: docs/deviations.md 15 fixes it).
4. The note ends at the first inactive ``frames`` frame at or after the onset (or at T).
5. Notes of fewer than ``min_note_frames`` frames are dropped (1 = keep all, the reference).

Times are frame / frames_per_second; the velocity is always 100. A second onset inside an
already sounding note starts another note that ends with the same frame run, as in the
reference; the MIDI writer keeps both. Decoded notes are :class:`jointist_jax.music.Notes`.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from jointist_jax.music import FRAMES_PER_SECOND, Notes

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
    num_frames = frames.shape[t_axis]
    time_index = np.arange(num_frames, dtype=np.int32).reshape((num_frames, 1))
    inactive_at = np.where(frames, np.int32(num_frames), time_index)
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


def shift_notes(notes_by_class: Mapping[int, Notes], class_ids: set[int], semitones: int) -> dict[int, Notes]:
    """Transposes the notes of ``class_ids`` by ``semitones`` (clipped to MIDI 0..127)."""
    return {class_id: notes.transposed(semitones) if class_id in class_ids else notes
            for class_id, notes in notes_by_class.items()}
