"""What the metrics compare against: a track's reference notes and instrument labels.

Reference notes come from the dataset as stored (bass one octave down, like the training
targets, so predictions and references share one convention). Reference frame rolls are
:func:`jointist_jax.rolls.reference_frame_rolls` of these notes.
"""

from __future__ import annotations

import numpy as np

from jointist_jax.data.tracks import Track
from jointist_jax.music import Notes


def reference_notes(track: Track) -> dict[int, Notes]:
    """Class index -> reference notes of the track (classes without notes are absent)."""
    return track.notes.by_class()


def recognition_labels(track: Track, num_classes: int) -> np.ndarray:
    """(num_classes,) 0/1: the classes with at least one note in the track."""
    labels = np.zeros(num_classes, np.int64)
    labels[np.asarray(track.classes, np.int64)] = 1
    return labels
