"""The one note type and the shared constants: round trips through MIDI and JSON (through the rolls
and the decoder: tests/test_rolls.py)."""

import json

import numpy as np
import pretty_midi
import pytest

from jointist_jax import audio, instruments
from jointist_jax import rolls
from jointist_jax.inference import midi_io
from jointist_jax.inference.windows import WindowSpec
from jointist_jax.music import (FRAMES_PER_SECOND, HOP_SAMPLES, LOWEST_MIDI_NOTE, NUM_PITCHES, SAMPLE_RATE, Notes,
                                concatenate)

PIANO, BASS, DRUMS = instruments.class_index("Piano"), instruments.class_index("Bass"), instruments.class_index("Drums")


def test_constants_agree_with_the_front_end_and_the_rolls():
    assert (SAMPLE_RATE, FRAMES_PER_SECOND, HOP_SAMPLES) == (16000, 100, 160)
    assert (LOWEST_MIDI_NOTE, NUM_PITCHES) == (21, 88)
    assert WindowSpec().frame_hop == HOP_SAMPLES
    one_second = audio.log_mel(np.zeros(SAMPLE_RATE, np.float32))
    assert one_second.shape[0] == rolls.num_frames(1.0) == FRAMES_PER_SECOND + 1
    out = rolls.note_rolls([0.5], [0.6], [LOWEST_MIDI_NOTE + NUM_PITCHES - 1], start=0.0, seconds=1.0)
    assert out["frame_roll"].shape == (FRAMES_PER_SECOND + 1, NUM_PITCHES)
    assert out["frame_roll"][50:61, NUM_PITCHES - 1].tolist() == [1.0] * 11


def test_notes_round_trip_through_midi_and_json(tmp_path):
    song = {PIANO: Notes([0.0, 0.5, 1.25], [0.5, 1.0, 2.0], [60, 64, 67], [90, 100, 110]),
            BASS: Notes([0.25], [1.75], [40]), DRUMS: Notes([0.1], [0.2], [36])}
    midi_io.notes_to_midi(song, min_duration=0.0).write(str(tmp_path / "song.mid"))
    back = {instruments.class_index(track.name): Notes(
        [n.start for n in track.notes], [n.end for n in track.notes], [n.pitch for n in track.notes],
        [n.velocity for n in track.notes]) for track in pretty_midi.PrettyMIDI(str(tmp_path / "song.mid")).instruments}
    assert list(back) == list(song)
    for cls, notes in song.items():
        assert back[cls].pitches.tolist() == notes.pitches.tolist()
        assert back[cls].velocities.tolist() == notes.velocities.tolist()
        np.testing.assert_allclose(back[cls].onsets, notes.onsets, atol=1e-3)
        np.testing.assert_allclose(back[cls].offsets, notes.offsets, atol=1e-3)
        events = json.loads(json.dumps(notes.to_events()))
        assert Notes.from_events(events) == notes
    assert song[PIANO].to_events()[0] == {"onset_time": 0.0, "offset_time": 0.5, "midi_note": 60, "velocity": 90}


def test_classes_select_split_and_concatenate():
    track = Notes([0.0, 0.1, 0.2, 0.3], [1.0, 1.1, 1.2, 1.3], [40, 60, 41, 36], classes=[BASS, PIANO, BASS, DRUMS])
    assert track.classes.dtype == np.int32 and track.pitches.dtype == np.int32
    bass = track.of_class(BASS)
    assert bass.pitches.tolist() == [40, 41] and bass.classes.tolist() == [BASS, BASS]
    split = track.by_class()
    assert list(split) == [PIANO, BASS, DRUMS]
    assert split[BASS] == Notes([0.0, 0.2], [1.0, 1.2], [40, 41]) and split[BASS].classes is None
    assert split[BASS] != bass  # one has classes, the other not
    assert len(concatenate(list(split.values()))) == 4 and concatenate(list(split.values())).classes is None
    assert concatenate([track, track]).classes.tolist() == [BASS, PIANO, BASS, DRUMS] * 2
    assert concatenate([]) == Notes.empty()
    with pytest.raises(ValueError, match="no classes"):
        split[BASS].by_class()


def test_transpose_duration_filter_and_validation():
    notes = Notes([0.0, 0.0, 1.0], [1.0, 1.0, 1.02], [40, 120, 5])
    assert notes.transposed(12).pitches.tolist() == [52, 127, 17]
    assert notes.transposed(-12).pitches.tolist() == [28, 108, 0]
    assert notes.longer_than(0.05) == Notes([0.0, 0.0], [1.0, 1.0], [40, 120])
    with pytest.raises(ValueError, match="Notes.classes: expected class indices 0..38"):
        Notes([0.0], [1.0], [60], classes=[39])
    with pytest.raises(ValueError, match="Notes.classes: expected 1 entries"):
        Notes([0.0], [1.0], [60], classes=[1, 2])
    with pytest.raises(ValueError, match="Notes.onsets: expected times >= 0"):
        Notes([-0.1], [1.0], [60])
