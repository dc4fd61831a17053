"""Inference's edits of decoded notes. Decoding itself (posteriorgrams -> notes) is
:func:`jointist_jax.rolls.decode_notes`."""

from __future__ import annotations

from typing import Mapping

from jointist_jax.music import Notes


def shift_notes(notes_by_class: Mapping[int, Notes], class_ids: set[int], semitones: int) -> dict[int, Notes]:
    """Transposes the notes of ``class_ids`` by ``semitones`` (clipped to MIDI 0..127)."""
    return {class_id: notes.transposed(semitones) if class_id in class_ids else notes
            for class_id, notes in notes_by_class.items()}
