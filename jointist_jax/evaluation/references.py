"""What the metrics compare against: a track's reference notes and rolls.

Reference notes come from the dataset as stored (bass one octave down, like the training
targets, so predictions and references share one convention). Reference frame rolls are the
training targets' frame rolls over the whole track (``targets.note_rolls``).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from jointist_jax.data import targets
from jointist_jax.data.tracks import Track
from jointist_jax.music import FRAMES_PER_SECOND, Notes


def reference_notes(track: Track) -> dict[int, Notes]:
    """Class index -> reference notes of the track (classes without notes are absent)."""
    return track.notes.by_class()


def reference_frame_rolls(notes_by_class: Mapping[int, Notes], num_frames: int) -> dict[int, np.ndarray]:
    """Class index -> (num_frames, 88) 0/1 frame roll of each class's notes, from frame 0."""
    seconds = (num_frames - 1) / FRAMES_PER_SECOND
    rolls = {}
    for cls, notes in notes_by_class.items():
        roll = targets.note_rolls(notes.onsets, notes.offsets, notes.pitches, start=0.0,
                                  seconds=seconds)["frame_roll"]
        rolls[cls] = roll[:num_frames]
    return rolls


def recognition_labels(track: Track, num_classes: int) -> np.ndarray:
    """(num_classes,) 0/1: the classes with at least one note in the track."""
    labels = np.zeros(num_classes, np.int64)
    labels[np.asarray(track.classes, np.int64)] = 1
    return labels
