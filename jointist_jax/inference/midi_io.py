"""Notes per instrument class -> a multi-track MIDI file (docs/reference.md §7.2).

One track per class, named after the class, with its General MIDI program from
``instruments.output_program``; drums are a drum track (pretty_midi puts it on channel 10).
Notes shorter than ``min_duration`` seconds are left out of the file (0.05 s in the reference;
the JSON notes keep them).
"""

from __future__ import annotations

from typing import Mapping

import pretty_midi

from jointist_jax import instruments
from jointist_jax.music import Notes

DEFAULT_MIN_DURATION = 0.05


def notes_to_midi(notes_by_class: Mapping[int, Notes], *,
                  min_duration: float = DEFAULT_MIN_DURATION) -> pretty_midi.PrettyMIDI:
    """A PrettyMIDI with one instrument track per class index of ``notes_by_class`` (in that order)."""
    if min_duration < 0:
        raise ValueError(f"min_duration must be >= 0 seconds, got {min_duration}")
    midi = pretty_midi.PrettyMIDI()
    for class_id, notes in notes_by_class.items():
        program, is_drum = instruments.output_program(class_id)
        track = pretty_midi.Instrument(program=program, is_drum=is_drum, name=instruments.CLASS_NAMES[class_id])
        kept = notes.longer_than(min_duration)
        track.notes = [pretty_midi.Note(velocity=int(velocity), pitch=int(pitch), start=float(onset), end=float(offset))
                       for onset, offset, pitch, velocity in zip(kept.onsets, kept.offsets, kept.pitches,
                                                                 kept.velocities)]
        midi.instruments.append(track)
    return midi
