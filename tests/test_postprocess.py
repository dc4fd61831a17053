"""Inference's edits of decoded notes."""

from jointist_jax.inference.postprocess import shift_notes
from jointist_jax.music import Notes


def test_shift_notes_only_named_classes_and_clips():
    notes = {10: Notes([0, 0], [1, 1], [40, 120]), 0: Notes([0], [1], [40])}
    shifted = shift_notes(notes, {10}, 12)
    assert shifted[10].pitches.tolist() == [52, 127]
    assert shifted[0] == notes[0]
