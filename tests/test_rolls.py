"""Notes <-> rolls (jointist_jax.rolls): the piano-roll targets (docs/reference.md §4.4, docs/deviations.md 12),
notes through the rolls and the decoder, and the evaluation's reference rolls."""

import numpy as np
import pytest

from jointist_jax import rolls
from jointist_jax.music import FRAMES_PER_SECOND, LOWEST_MIDI_NOTE, Notes


def crop_rolls(notes, start=0.0, seconds=10.0):
    onsets, offsets, pitches = (np.array(x, dtype=float) for x in zip(*notes)) if notes else ([], [], [])
    return rolls.note_rolls(onsets, offsets, np.asarray(pitches, dtype=int), start=start, seconds=seconds)


def kong_regression_loop(column, fps=100):
    """Kong et al.'s ``get_regression`` written as loops, the reference to compare with."""
    step = 1.0 / fps
    output = np.ones_like(column)
    locts = np.where(column < 0.5)[0]
    if len(locts):
        for t in range(0, locts[0]):
            output[t] = step * (t - locts[0]) - column[locts[0]]
        for i in range(len(locts) - 1):
            mid = (locts[i] + locts[i + 1]) // 2
            for t in range(locts[i], mid):
                output[t] = step * (t - locts[i]) - column[locts[i]]
            for t in range(mid, locts[i + 1]):
                output[t] = step * (t - locts[i + 1]) - column[locts[i + 1]]
        for t in range(locts[-1], len(column)):
            output[t] = step * (t - locts[-1]) - column[locts[-1]]
    return 1.0 - np.clip(np.abs(output), 0.0, 0.05) * 20


def test_shapes_and_dtypes_for_ten_seconds():
    out = crop_rolls([(1.0, 2.0, 60)])
    assert set(out) == {"onset_roll", "reg_onset_roll", "frame_roll", "mask_roll"}
    for value in out.values():
        assert value.shape == (1001, 88) and value.dtype == np.float32
    assert rolls.num_frames(2.0) == 201


def test_onset_frame_and_regression_ramp_with_subframe_shift():
    out = crop_rolls([(0.123, 0.5, 60)])  # key 39, frame round(12.3) = 12, shift +3 ms
    key = 60 - 21
    assert np.flatnonzero(out["onset_roll"][:, key]).tolist() == [12]
    assert out["onset_roll"].sum() == 1
    reg = out["reg_onset_roll"][:, key]
    expected = {7: 0.0, 8: 0.14, 11: 0.74, 12: 0.94, 13: 0.86, 16: 0.26, 17: 0.06, 18: 0.0}
    for frame, value in expected.items():
        assert reg[frame] == pytest.approx(value, abs=1e-5), frame
    assert np.flatnonzero(out["frame_roll"][:, key]).tolist() == list(range(12, 51))
    assert out["mask_roll"].min() == 1.0
    other = np.delete(out["reg_onset_roll"], key, axis=1)
    assert not other.any()  # keys without onsets: all zeros


def test_two_close_onsets_use_the_midpoint_rule():
    out = crop_rolls([(0.100, 0.12, 60), (0.162, 0.3, 60)])  # frames 10 and 16 (+2 ms); midpoint frame 13
    reg = out["reg_onset_roll"][:, 39]
    expected = {10: 1.0, 11: 0.8, 12: 0.6, 13: 0.36, 14: 0.56, 15: 0.76, 16: 0.96, 17: 0.84}
    for frame, value in expected.items():
        assert reg[frame] == pytest.approx(value, abs=1e-5), frame


def test_regression_matches_reference_loops():
    rng = np.random.default_rng(0)
    for _ in range(20):
        frames = 120
        locs = np.unique(rng.integers(0, frames, size=rng.integers(1, 8)))
        shifts = rng.uniform(-0.005, 0.005, size=len(locs))
        column = np.ones(frames)
        column[locs] = shifts
        np.testing.assert_allclose(rolls.regression_target(locs, shifts, frames),
                                   kong_regression_loop(column), atol=1e-6)


def test_note_begun_before_window_masks_its_frames():
    out = crop_rolls([(1.5, 2.3, 64)], start=2.0)  # bgn -50, fin 30
    key = 64 - 21
    assert np.flatnonzero(out["frame_roll"][:, key]).tolist() == list(range(0, 31))
    assert np.flatnonzero(out["mask_roll"][:, key] == 0).tolist() == list(range(0, 31))
    assert out["onset_roll"].sum() == 0 and out["reg_onset_roll"].sum() == 0
    assert np.delete(out["mask_roll"], key, axis=1).min() == 1.0


def test_note_spanning_the_whole_window_is_kept_with_zero_mask():
    out = crop_rolls([(-1.0, 12.0, 50)])
    assert out["frame_roll"][:, 29].tolist() == [1.0] * 1001
    assert out["mask_roll"][:, 29].tolist() == [0.0] * 1001
    assert out["onset_roll"].sum() == 0


def test_note_running_past_the_end_is_truncated():
    out = crop_rolls([(9.5, 11.0, 70)])
    key = 70 - 21
    assert np.flatnonzero(out["frame_roll"][:, key]).tolist() == list(range(950, 1001))
    assert out["onset_roll"][950, key] == 1.0
    assert out["mask_roll"].min() == 1.0


def test_notes_outside_the_window_are_ignored():
    out = crop_rolls([(10.5, 11.0, 60), (-3.0, -0.5, 61), (10.0, 10.5, 62)])
    assert sum(v.sum() for k, v in out.items() if k != "mask_roll") == 0
    assert out["mask_roll"].min() == 1.0


def test_drum_short_notes_have_one_frame():
    # Drums (class 38) get no special treatment: zero-length MIDI notes light one frame.
    out = crop_rolls([(1.0, 1.0, 36), (1.004, 1.004, 38)])
    assert np.flatnonzero(out["frame_roll"][:, 15]).tolist() == [100]
    assert np.flatnonzero(out["frame_roll"][:, 17]).tolist() == [100]
    assert out["reg_onset_roll"][100, 17] == pytest.approx(1 - 20 * 0.004, abs=1e-5)


def test_out_of_range_pitches_clamp_to_edge_keys():
    out = crop_rolls([(1.0, 2.0, 10), (3.0, 4.0, 120)])
    assert out["onset_roll"][100, 0] == 1.0 and out["onset_roll"][300, 87] == 1.0
    assert out["onset_roll"].sum() == 2


def test_same_frame_onsets_last_note_wins():
    out = crop_rolls([(1.003, 2.0, 60), (0.998, 2.0, 60)])  # both frame 100; the later note's shift -2 ms
    assert out["reg_onset_roll"][100, 39] == pytest.approx(1 - 20 * 0.002, abs=1e-5)


def test_mismatched_note_arrays_raise():
    with pytest.raises(ValueError, match="equal lengths"):
        rolls.note_rolls([1.0, 2.0], [2.0], [60, 61], start=0.0, seconds=10.0)


# ------------------------------------------------------------------------------ notes -> rolls -> notes
# (onset frame, offset frame, MIDI pitch); no two notes of a pitch touch, so a roll keeps them apart.
FRAME_NOTES = [(3, 40, 21), (10, 25, 60), (30, 31, 60), (50, 90, 108), (55, 70, 64)]


def test_notes_round_trip_through_the_rolls_and_the_decoder():
    on, off, pitch = (np.array(column) for column in zip(*FRAME_NOTES))
    notes = Notes.from_frames(on, off, pitch - LOWEST_MIDI_NOTE)
    assert notes.onsets.tolist() == (on / 100).tolist() and notes.pitches.tolist() == pitch.tolist()
    assert notes.velocities.tolist() == [100] * len(FRAME_NOTES)
    out = rolls.note_rolls(notes.onsets, notes.offsets, notes.pitches, start=0.0, seconds=1.0)
    decoded = rolls.decode_notes(out["onset_roll"], out["frame_roll"])
    # The frame roll holds the offset frame itself; the decoder ends a note at the first silent frame.
    order = np.lexsort((pitch, on))
    assert decoded == Notes.from_frames(on[order], off[order] + 1, pitch[order] - LOWEST_MIDI_NOTE)


def test_known_notes_give_known_rolls_and_decode_back():
    """Two notes on known frames: the exact roll cells, then the decoded notes' times and pitches."""
    out = rolls.note_rolls([0.05, 0.20], [0.08, 0.22], [60, 21], start=0.0, seconds=0.3)
    frame, onset = out["frame_roll"], out["onset_roll"]
    assert frame.shape == (31, 88)
    assert np.flatnonzero(frame[:, 39]).tolist() == [5, 6, 7, 8] and np.flatnonzero(frame[:, 0]).tolist() == [20, 21, 22]
    assert np.argwhere(onset).tolist() == [[5, 39], [20, 0]]
    decoded = rolls.decode_notes(onset, frame)
    assert decoded.onsets.tolist() == [0.05, 0.20] and decoded.offsets.tolist() == [0.09, 0.23]
    assert decoded.pitches.tolist() == [60, 21] and decoded.velocities.tolist() == [100, 100]


# ------------------------------------------------------------------------------ reference rolls
def test_reference_frame_rolls_are_the_targets_frame_rolls_from_frame_zero():
    notes = {3: Notes([0.02, 0.5], [0.04, 2.0], [60, 61]), 38: Notes.empty()}
    out = rolls.reference_frame_rolls(notes, num_frames=60)
    assert sorted(out) == [3, 38] and out[3].shape == (60, 88) and out[38].sum() == 0
    assert np.flatnonzero(out[3][:, 39]).tolist() == [2, 3, 4]
    assert np.flatnonzero(out[3][:, 40]).tolist() == list(range(50, 60))  # cut at num_frames
    expected = rolls.note_rolls(notes[3].onsets, notes[3].offsets, notes[3].pitches, start=0.0,
                                seconds=59 / FRAMES_PER_SECOND)["frame_roll"]
    np.testing.assert_array_equal(out[3], expected)
