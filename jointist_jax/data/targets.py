"""Recognizer labels of one crop (docs/reference.md §4.5, docs/deviations.md 12).

The transcription targets of a crop (onset, frame and mask rolls) are :func:`jointist_jax.rolls.note_rolls`;
a class is labelled when one of its notes overlaps the crop in the same sense
(:func:`jointist_jax.rolls.overlapping`).
"""

from __future__ import annotations

import numpy as np

from jointist_jax import instruments
from jointist_jax.rolls import overlapping


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
