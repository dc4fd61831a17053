"""Onset-gated frame decoding on hand-built posteriorgrams (docs/reference.md §7.1, docs/deviations.md 15)."""

import numpy as np
import pytest

from jointist_jax.rolls import DecodeOptions, decode_instruments, decode_note_frames, decode_notes
from jointist_jax.music import Notes


def notes_of(*rows):
    """Notes from (onset, offset, pitch[, velocity]) rows; velocity 100 by default."""
    rows = [tuple(r) + (100,) * (4 - len(r)) for r in rows]
    columns = list(zip(*rows)) if rows else [[], [], [], []]
    return Notes(*columns)


def rows_of(notes):
    """(onset, offset, pitch, velocity) of each note."""
    return list(zip(notes.onsets.tolist(), notes.offsets.tolist(), notes.pitches.tolist(), notes.velocities.tolist()))


def _rolls(frames=20, keys=88):
    return np.zeros((frames, keys), np.float32), np.zeros((frames, keys), np.float32)


def _reference_decode(onset, frame, onset_threshold=0.1, frame_threshold=0.1):
    """A direct loop transcription of the reference rule (without its frame-0 wrap)."""
    frames = frame > frame_threshold
    onset_diff = (onset > onset_threshold) & frames
    notes = []
    for t, p in zip(*np.nonzero(onset_diff)):
        if t > 0 and onset_diff[t - 1, p]:
            continue
        offset = t
        while offset < frames.shape[0] and frames[offset, p]:
            offset += 1
        if offset > t:
            notes.append((t / 100, offset / 100, int(p) + 21))
    return notes_of(*notes)


def test_single_note_times_pitch_velocity():
    onset, frame = _rolls()
    onset[3, 40] = 0.9
    frame[3:8, 40] = 0.8
    assert decode_notes(onset, frame) == notes_of((0.03, 0.08, 61, 100))


def test_onset_needs_active_frame():
    onset, frame = _rolls()
    onset[3, 40] = 0.9          # onset without frame: no note
    frame[10:15, 41] = 0.9      # frame without onset: no note
    assert decode_notes(onset, frame) == notes_of()


def test_consecutive_onsets_merge_and_offset_walks_frames():
    onset, frame = _rolls()
    onset[2:5, 10] = 0.5        # one run of three onset frames -> one note
    frame[2:12, 10] = 0.5
    onset[14, 10] = 0.5         # a new onset after a gap -> a second note
    frame[14:16, 10] = 0.5
    assert decode_notes(onset, frame) == notes_of((0.02, 0.12, 31), (0.14, 0.16, 31))


def test_reonset_inside_a_sounding_note_starts_another_note():
    onset, frame = _rolls()
    onset[2, 5] = onset[6, 5] = 0.5
    frame[2:10, 5] = 0.5
    assert decode_notes(onset, frame) == notes_of((0.02, 0.10, 26), (0.06, 0.10, 26))


def test_no_wrap_at_frame_zero():
    onset, frame = _rolls()
    onset[0, 7] = onset[-1, 7] = 0.9   # the reference's onset_diff[-1] would swallow the frame-0 onset
    frame[0:3, 7] = frame[-1, 7] = 0.9
    notes = decode_notes(onset, frame)
    assert (0.0, 0.03, 28, 100) in rows_of(notes)
    assert (0.19, 0.20, 28, 100) in rows_of(notes)   # a note still sounding at the end stops at T


def test_thresholds_are_strict_and_configurable():
    onset, frame = _rolls()
    onset[1, 0] = 0.1            # not > 0.1
    frame[1:4, 0] = 0.5
    onset[5, 1] = 0.3
    frame[5:9, 1] = 0.3
    assert decode_notes(onset, frame) == notes_of((0.05, 0.09, 22))
    high = DecodeOptions(onset_threshold=0.4, frame_threshold=0.2)
    assert decode_notes(onset, frame, high) == notes_of()
    low = DecodeOptions(onset_threshold=0.05, frame_threshold=0.2)
    assert decode_notes(onset, frame, low) == notes_of((0.01, 0.04, 21), (0.05, 0.09, 22))


def test_min_note_frames():
    onset, frame = _rolls()
    onset[2, 3] = onset[10, 4] = 0.9
    frame[2, 3] = 0.9            # 1 frame
    frame[10:14, 4] = 0.9        # 4 frames
    assert len(decode_notes(onset, frame)) == 2
    assert decode_notes(onset, frame, DecodeOptions(min_note_frames=4)) == notes_of((0.10, 0.14, 25))
    assert decode_notes(onset, frame, DecodeOptions(min_note_frames=5)) == notes_of()


def test_matches_reference_loop_on_random_rolls():
    rng = np.random.default_rng(0)
    onset = (rng.random((300, 88)) < 0.05) * rng.random((300, 88))
    frame = (rng.random((300, 88)) < 0.6) * rng.random((300, 88))
    expected = _reference_decode(onset, frame)
    assert len(expected) > 100
    # The reference visits (t, p) in time-major order.
    assert decode_notes(onset, frame) == expected


def test_decode_instruments_independent_per_class():
    onset = np.zeros((2, 10, 88), np.float32)
    frame = np.zeros_like(onset)
    onset[0, 1, 50] = frame[0, 1:4, 50] = 0.9
    onset[1, 0, 50] = 0.9
    frame[1, :, 50] = 0.9   # a class's frames must not leak into another class's offsets
    notes = decode_instruments(onset, frame, [38, 0])
    assert list(notes) == [38, 0]
    assert notes[38] == notes_of((0.01, 0.04, 71))
    assert notes[0] == notes_of((0.0, 0.10, 71))
    rows = decode_note_frames(onset, frame)
    assert rows.tolist() == [[0, 1, 4, 50], [1, 0, 10, 50]]


def test_bad_shapes_and_options_raise():
    with pytest.raises(ValueError, match="same shape"):
        decode_notes(np.zeros((5, 88)), np.zeros((6, 88)))
    with pytest.raises(ValueError, match="K=3"):
        decode_instruments(np.zeros((2, 5, 88)), np.zeros((2, 5, 88)), [0, 1, 2])
    with pytest.raises(ValueError, match="onset_threshold"):
        DecodeOptions(onset_threshold=1.5)
    with pytest.raises(ValueError, match="min_note_frames"):
        DecodeOptions(min_note_frames=0)
