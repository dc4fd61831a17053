"""Transcription metrics on hand-built note lists, checked by hand and against mir_eval / sklearn."""

import mir_eval
import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from jointist_jax.metrics import mt3_metrics
from jointist_jax.metrics.matching import MatchCounts, midi_to_hz
from jointist_jax.metrics.transcription_metrics import (aggregate_transcription, frame_f1, note_f1,
                                                           song_transcription_scores)
from jointist_jax.music import Notes

PIANO, E_PIANO, GUITAR, BASS, DRUMS = 0, 1, 9, 10, 38


def notes(*triples):
    """Notes from (onset, offset, pitch) triples."""
    if not triples:
        return Notes.empty()
    on, off, pitch = zip(*triples)
    return Notes(on, off, pitch, [100] * len(triples))


REF = notes((0.0, 0.5, 60), (0.5, 1.0, 62), (1.0, 1.5, 64), (1.5, 2.0, 65))


def mir_eval_prf(ref, est, *, offset_ratio=None, hz=True):
    convert = midi_to_hz if hz else (lambda p: np.asarray(p, float))
    p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
        np.stack([ref.onsets, ref.offsets], 1), convert(ref.pitches),
        np.stack([est.onsets, est.offsets], 1), convert(est.pitches),
        onset_tolerance=0.05, offset_ratio=offset_ratio)
    return p, r, f


def test_perfect_match_scores_one():
    assert note_f1(REF, REF) == (1.0, 1.0, 1.0)
    assert note_f1(REF, REF, with_offset=True) == (1.0, 1.0, 1.0)
    assert mir_eval_prf(REF, REF) == (1.0, 1.0, 1.0)


def test_missed_and_extra_notes_match_mir_eval():
    missed = notes(*[(o, f, p) for o, f, p in zip(REF.onsets[:3], REF.offsets[:3], REF.pitches[:3])])
    assert note_f1(REF, missed) == pytest.approx((1.0, 0.75, 6 / 7))
    assert note_f1(REF, missed) == pytest.approx(mir_eval_prf(REF, missed))
    extra = notes((0.0, 0.5, 60), (0.5, 1.0, 62), (1.0, 1.5, 64), (1.5, 2.0, 65), (2.5, 3.0, 70))
    assert note_f1(REF, extra) == pytest.approx((0.8, 1.0, 8 / 9))
    assert note_f1(REF, extra) == pytest.approx(mir_eval_prf(REF, extra))


def test_onset_tolerance_is_50_ms():
    ref = notes((1.0, 2.0, 60))
    assert note_f1(ref, notes((1.04, 2.0, 60)))[2] == 1.0
    assert note_f1(ref, notes((1.06, 2.0, 60)))[2] == 0.0
    assert mir_eval_prf(ref, notes((1.06, 2.0, 60)))[2] == 0.0


def test_offset_tolerance_is_twenty_percent_of_duration_or_50_ms():
    long_ref = notes((0.0, 1.0, 60))  # tolerance max(0.2 * 1.0, 0.05) = 0.2 s
    assert note_f1(long_ref, notes((0.0, 1.15, 60)), with_offset=True)[2] == 1.0
    assert note_f1(long_ref, notes((0.0, 1.25, 60)), with_offset=True)[2] == 0.0
    assert note_f1(long_ref, notes((0.0, 1.25, 60)), with_offset=False)[2] == 1.0
    short_ref = notes((0.0, 0.1, 60))  # 0.2 * 0.1 = 0.02 s < 50 ms floor
    assert note_f1(short_ref, notes((0.0, 0.14, 60)), with_offset=True)[2] == 1.0
    assert note_f1(short_ref, notes((0.0, 0.16, 60)), with_offset=True)[2] == 0.0
    for est in (notes((0.0, 1.15, 60)), notes((0.0, 1.25, 60))):
        expected = mir_eval_prf(long_ref, est, offset_ratio=0.2)
        assert note_f1(long_ref, est, with_offset=True) == pytest.approx(expected)


def test_empty_estimate_or_reference_scores_zero():
    assert note_f1(REF, Notes.empty()) == (0.0, 0.0, 0.0)
    assert note_f1(Notes.empty(), REF) == (0.0, 0.0, 0.0)
    scores = song_transcription_scores({PIANO: REF}, {})
    assert scores.per_class[PIANO]["note_f1"] == 0.0
    assert scores.per_class[PIANO]["note_with_offset_f1_paper_compat"] == 0.0


def test_semitone_error_misses_in_hz_but_hits_in_paper_compat():
    ref, est = notes((0.0, 0.5, 60)), notes((0.0, 0.5, 61))
    assert note_f1(ref, est)[2] == 0.0
    assert note_f1(ref, est, paper_compat=True)[2] == 1.0
    # The reference's call, reproduced directly: MIDI numbers as Hz.
    assert mir_eval_prf(ref, est, hz=False)[2] == 1.0
    assert mir_eval_prf(ref, est, hz=True)[2] == 0.0
    # 1200 * log2(36 / 35) = 48.8 cents: a hit from pitch 35 on; 1200 * log2(35 / 34) = 50.2: a miss.
    assert note_f1(notes((0, 1, 35)), notes((0, 1, 36)), paper_compat=True)[2] == 1.0
    assert note_f1(notes((0, 1, 34)), notes((0, 1, 35)), paper_compat=True)[2] == 0.0
    scores = song_transcription_scores({PIANO: ref}, {PIANO: est}).per_class[PIANO]
    assert scores["note_f1"] == 0.0 and scores["note_f1_paper_compat"] == 1.0


def test_only_classes_present_in_the_reference_are_scored():
    scores = song_transcription_scores({PIANO: REF, GUITAR: Notes.empty()},
                                       {PIANO: REF, GUITAR: REF, BASS: REF})
    assert list(scores.per_class) == [PIANO]


def test_drums_are_scored_onset_only_and_left_out_of_flat():
    drums_ref = notes((0.0, 0.1, 36), (0.5, 0.6, 38))
    drums_est = notes((0.0, 0.5, 36), (0.5, 1.0, 38))  # offsets far off: irrelevant for drums
    piano_est = notes((0.0, 0.5, 60), (0.5, 1.0, 62))  # half of REF
    scores = song_transcription_scores({PIANO: REF, DRUMS: drums_ref}, {PIANO: piano_est, DRUMS: drums_est})
    assert scores.per_class[DRUMS]["note_f1"] == 1.0
    assert not any(k.startswith("note_with_offset") for k in scores.per_class[DRUMS])
    assert scores.per_class[PIANO]["note_with_offset_f1"] == pytest.approx(2 / 3)
    # Flat = piano alone: the perfect drums must not raise it.
    assert scores.flat["note_f1"] == pytest.approx(2 / 3)
    assert scores.flat["note_recall"] == pytest.approx(0.5)
    drums_only = song_transcription_scores({DRUMS: drums_ref}, {DRUMS: drums_est})
    assert drums_only.flat == {}


def test_flat_merges_non_drum_classes_ignoring_instrument_labels():
    ref = {PIANO: notes((0.0, 0.5, 60)), BASS: notes((0.0, 0.5, 40))}
    est = {GUITAR: notes((0.0, 0.5, 60)), BASS: notes((0.0, 0.5, 40), (1.0, 1.5, 45))}
    scores = song_transcription_scores(ref, est)
    assert scores.flat["note_precision"] == pytest.approx(2 / 3)
    assert scores.flat["note_recall"] == 1.0
    assert scores.per_class[PIANO]["note_f1"] == 0.0  # the piano note was labelled guitar


def _roll_of(notes_, frames=300):
    """(frames, 88) 0/1 frame roll of notes at 100 fps, frames onset..offset inclusive (the targets')."""
    roll = np.zeros((frames, 88), np.float32)
    for on, off, pitch in zip(notes_.onsets, notes_.offsets, notes_.pitches):
        roll[int(round(on * 100)):int(round(off * 100)) + 1, pitch - 21] = 1
    return roll


def _onset_roll_of(notes_, frames=300):
    roll = np.zeros((frames, 88), np.float32)
    for on, pitch in zip(notes_.onsets, notes_.pitches):
        roll[int(round(on * 100)), pitch - 21] = 1
    return roll


def test_flat_paper_compat_fuses_same_pitch_notes_of_two_instruments():
    """Piano and guitar play C4 at overlapping times (0.0-1.0 s, 0.5-1.5 s). The transcriber's
    frames cover both, but it misses the guitar's onset, so per instrument only the piano note is
    decoded. Merged lists (ours): the guitar note is missed, recall 1/2. The reference's OR'ed
    rolls: one reference note 0.0-1.51 s (a maximal run of frames) and one estimated note over the
    same span (the piano's onset gates the OR'ed frames): a perfect score."""
    piano, guitar = notes((0.0, 1.0, 60)), notes((0.5, 1.5, 60))
    ref = {PIANO: piano, GUITAR: guitar}
    ref_rolls = {PIANO: _roll_of(piano), GUITAR: _roll_of(guitar)}
    est_frames = {PIANO: 0.9 * _roll_of(piano), GUITAR: 0.9 * _roll_of(guitar)}
    est_onsets = {PIANO: 0.9 * _onset_roll_of(piano), GUITAR: np.zeros((300, 88), np.float32)}
    est = {PIANO: piano}  # decoded per instrument: the guitar note has no onset, so no note
    scores = song_transcription_scores(ref, est, ref_rolls, est_frames, est_onset_rolls=est_onsets)
    assert scores.flat["note_recall"] == 0.5 and scores.flat["note_precision"] == 1.0
    assert scores.flat["note_recall_paper_compat"] == 1.0 and scores.flat["note_precision_paper_compat"] == 1.0
    assert scores.flat["note_with_offset_f1_paper_compat"] == 1.0


def test_flat_paper_compat_fuses_repeated_notes_and_passes_midi_as_hz():
    """One instrument repeats E4 back to back (0.0-0.5, 0.5-1.0 s): the target roll is one run of
    frames, so the reference has ONE flat note 0.0-1.01 s. An estimate with the two notes found
    exactly scores 2/2 on merged lists but 1/1 on the fused ones; an estimate of a single long
    note 0.0-1.0 s misses one note on merged lists and scores perfectly on fused ones. A wrong
    semitone (F4) is a hit only in the paper's MIDI-as-Hz matching."""
    repeated = notes((0.0, 0.5, 64), (0.5, 1.0, 64))
    ref, ref_rolls = {PIANO: repeated}, {PIANO: _roll_of(repeated)}
    long_note = notes((0.0, 1.0, 64))
    scores = song_transcription_scores(ref, {PIANO: long_note}, ref_rolls, {PIANO: _roll_of(long_note)},
                                       est_onset_rolls={PIANO: _onset_roll_of(long_note)})
    assert scores.flat["note_recall"] == 0.5
    assert scores.flat["note_f1_paper_compat"] == 1.0
    semitone_up = notes((0.0, 1.0, 65))
    shifted = song_transcription_scores(ref, {PIANO: semitone_up}, ref_rolls, {PIANO: _roll_of(semitone_up)},
                                        est_onset_rolls={PIANO: _onset_roll_of(semitone_up)})
    assert shifted.flat["note_f1"] == 0.0 and shifted.flat["note_f1_paper_compat"] == 1.0


def test_flat_paper_compat_decodes_like_the_reference():
    """The fused lists themselves: maximal runs for the reference; onset-gated runs for the
    estimate (onset and frame posteriorgrams thresholded at 0.1, drums left out)."""
    from jointist_jax.metrics import fused_notes

    ref_roll = np.zeros((20, 88), np.float32)
    ref_roll[2:6, 39] = 1
    ref_roll[6:9, 39] = 1  # touches the first run: fused
    ref_roll[12:14, 39] = 1
    drums = np.ones((20, 88), np.float32)
    frame = np.zeros((20, 88), np.float32)
    frame[3:10, 40] = 0.2
    onset = np.zeros((20, 88), np.float32)
    onset[3:5, 40] = 0.5  # two onset frames: one note
    onset[15, 40] = 0.5  # no frame there: no note
    ref, est = fused_notes.fused_flat_notes({PIANO: ref_roll, DRUMS: drums}, {PIANO: frame, DRUMS: drums},
                                            {PIANO: onset, DRUMS: drums}, frame_threshold=0.1, onset_threshold=0.1)
    assert list(zip(ref.onsets, ref.offsets, ref.pitches)) == [(0.02, 0.09, 60), (0.12, 0.14, 60)]
    assert list(zip(est.onsets, est.offsets, est.pitches)) == [(0.03, 0.1, 61)]
    with pytest.raises(ValueError, match="est_onset_rolls has classes"):
        fused_notes.fused_flat_notes({PIANO: ref_roll}, {PIANO: frame}, {}, frame_threshold=0.1, onset_threshold=0.1)


def test_flat_paper_compat_leaves_out_missed_and_false_positive_instruments():
    """Predicted instruments: piano found exactly, guitar missed (not predicted), strings predicted
    but not in the reference. Ours counts the guitar's notes as missed and the strings' as false;
    the reference's flat rolls hold only the piano, as its scoring loop does."""
    STRINGS = 15
    piano, guitar, strings = notes((0.0, 0.5, 60)), notes((1.0, 1.5, 67)), notes((2.0, 2.5, 72))
    ref = {PIANO: piano, GUITAR: guitar}
    ref_rolls = {PIANO: _roll_of(piano), GUITAR: _roll_of(guitar)}
    est = {PIANO: piano, STRINGS: strings}
    est_frames = {PIANO: _roll_of(piano), STRINGS: _roll_of(strings)}
    est_onsets = {PIANO: _onset_roll_of(piano), STRINGS: _onset_roll_of(strings)}
    scores = song_transcription_scores(ref, est, ref_rolls, est_frames, est_onset_rolls=est_onsets)
    assert scores.flat["note_recall"] == 0.5 and scores.flat["note_precision"] == 0.5
    assert scores.flat["note_recall_paper_compat"] == 1.0 and scores.flat["note_precision_paper_compat"] == 1.0
    # Nothing both labelled and predicted: no flat paper score for the song (ours scores 0).
    only_false = song_transcription_scores(ref, {STRINGS: strings}, ref_rolls, {STRINGS: _roll_of(strings)},
                                           est_onset_rolls={STRINGS: _onset_roll_of(strings)})
    assert only_false.flat["note_f1"] == 0.0 and "note_f1_paper_compat" not in only_false.flat


def test_flat_paper_compat_needs_onset_rolls():
    ref_rolls = {PIANO: _roll_of(REF)}
    without = song_transcription_scores({PIANO: REF}, {PIANO: REF}, ref_rolls, ref_rolls)
    assert "note_f1" in without.flat and "note_f1_paper_compat" not in without.flat
    with pytest.raises(ValueError, match="est_onset_rolls needs ref_rolls and est_rolls"):
        song_transcription_scores({PIANO: REF}, {PIANO: REF}, est_onset_rolls=ref_rolls)


def test_piece_wise_and_instrument_wise_means_differ_on_two_songs():
    song_a = song_transcription_scores({PIANO: REF, BASS: notes((0, 1, 40))}, {PIANO: REF}, song="a")
    song_b = song_transcription_scores({PIANO: REF}, {PIANO: REF}, song="b")
    report = aggregate_transcription([song_a, song_b])
    # Piece-wise: mean(mean(1, 0), 1) = 0.75. Instrument-wise: mean(piano 1, bass 0) = 0.5.
    assert report.scalars["note_f1/piece_wise"] == pytest.approx(0.75)
    assert report.scalars["note_f1/instrument_wise"] == pytest.approx(0.5)
    assert report.scalars["note_f1/flat"] == pytest.approx(np.mean([2 * 4 / 9, 1.0]))
    assert report.per_class["note_f1"] == {"Piano": 1.0, "Bass": 0.0}
    assert "note_with_offset_f1_paper_compat/instrument_wise" in report.scalars
    assert not any(k.startswith("frame_") for k in report.scalars)  # no rolls given


def test_frame_f1_matches_sklearn_binary_and_truncates():
    ref = np.zeros((6, 4))
    ref[0:3, 1] = 1
    ref[2:5, 3] = 1
    est = np.zeros((5, 4))
    est[1:4, 1] = 0.9
    est[0:2, 0] = 0.2
    expected = precision_recall_fscore_support(ref[:5].ravel(), est.ravel() > 0.1, average="binary",
                                               zero_division=0)[:3]
    assert frame_f1(ref, est) == pytest.approx(expected)
    assert frame_f1(ref, est) == pytest.approx((2 / 5, 1 / 3, 4 / 11))  # tp 2, fp 3, fn 4
    assert frame_f1(np.zeros((3, 4)), np.zeros((3, 4))) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="pitch columns"):
        frame_f1(ref, np.zeros((6, 3)))


def test_frame_scores_per_class_and_flat_or():
    t = 10
    piano, bass, drums = np.zeros((t, 88)), np.zeros((t, 88)), np.zeros((t, 88))
    piano[0:5, 39] = 1
    bass[0:5, 19] = 1
    drums[:, 15] = 1
    ref_rolls = {PIANO: piano, BASS: bass, DRUMS: drums}
    # Estimate: piano perfect as a posteriorgram, the bass notes transcribed as guitar, no drums.
    est_rolls = {PIANO: piano * 0.8, GUITAR: bass}
    ref = {PIANO: notes((0, 0.05, 60)), BASS: notes((0, 0.05, 40)), DRUMS: notes((0, 0.1, 36))}
    scores = song_transcription_scores(ref, {}, ref_rolls, est_rolls)
    assert scores.per_class[PIANO]["frame_f1"] == 1.0
    assert scores.per_class[BASS]["frame_f1"] == 0.0
    assert scores.per_class[DRUMS]["frame_f1"] == 0.0
    assert scores.flat["frame_f1"] == 1.0  # OR of non-drum rolls: identity ignored, drums excluded
    with pytest.raises(ValueError, match="ref_rolls has no roll for class 10"):
        song_transcription_scores(ref, {}, {PIANO: piano, DRUMS: drums}, est_rolls)
    with pytest.raises(ValueError, match="both ref_rolls and est_rolls"):
        song_transcription_scores(ref, {}, ref_rolls, None)


def test_mt3_granularities():
    ref = {PIANO: notes((0.0, 0.5, 60))}
    same_family = {E_PIANO: notes((0.0, 0.5, 60))}  # program 4: GM family 0 like piano's program 0
    other_family = {BASS: notes((0.0, 0.5, 60))}  # program 38: family 4
    counts = {g: mt3_metrics.mt3_counts(ref, same_family, g) for g in mt3_metrics.GRANULARITIES}
    assert counts == {"flat": MatchCounts(1, 1, 1), "midi_class": MatchCounts(1, 1, 1),
                      "full_program": MatchCounts(0, 1, 1)}
    assert mt3_metrics.mt3_counts(ref, other_family, "flat") == MatchCounts(1, 1, 1)
    assert mt3_metrics.mt3_counts(ref, other_family, "midi_class") == MatchCounts(0, 1, 1)
    # Drums: own track at every granularity, matched without offsets.
    drum_ref = {DRUMS: notes((0.0, 0.1, 60))}
    assert mt3_metrics.mt3_counts(drum_ref, {DRUMS: notes((0.0, 1.0, 60))}, "full_program") == MatchCounts(1, 1, 1)
    assert mt3_metrics.mt3_counts(drum_ref, ref, "flat") == MatchCounts(0, 1, 1)
    # Non-drums keep the offset criterion.
    assert mt3_metrics.mt3_counts(ref, {PIANO: notes((0.0, 1.0, 60))}, "flat") == MatchCounts(0, 1, 1)
    with pytest.raises(ValueError, match="granularity"):
        mt3_metrics.track_key(PIANO, "family")


def test_mt3_counts_extra_instruments_as_false_positives():
    scores = song_transcription_scores({PIANO: REF}, {PIANO: REF, BASS: notes((3.0, 3.5, 40))})
    assert scores.per_class[PIANO]["note_f1"] == 1.0
    assert scores.mt3["full_program"] == MatchCounts(4, 4, 5)


def test_mt3_pools_counts_over_songs_and_reports_song_mean():
    one = notes((0.0, 0.5, 60))
    three = notes((0.0, 0.5, 60), (1.0, 1.5, 62), (2.0, 2.5, 64))
    wrong = notes((0.0, 0.5, 70), (1.0, 1.5, 72), (2.0, 2.5, 74))
    songs = [song_transcription_scores({PIANO: one}, {PIANO: one}, song="hit"),
             song_transcription_scores({PIANO: three}, {PIANO: wrong}, song="miss")]
    report = aggregate_transcription(songs)
    # Pooled: 1 match of 4 reference and 4 estimated notes -> F = 0.25; song mean: (1 + 0) / 2.
    for g in mt3_metrics.GRANULARITIES:
        assert report.scalars[f"mt3/onset_offset_program_f1/{g}"] == pytest.approx(0.25)
        assert report.scalars[f"mt3/onset_offset_program_precision/{g}"] == pytest.approx(0.25)
        assert report.scalars[f"mt3/onset_offset_program_f1_song_mean/{g}"] == pytest.approx(0.5)


def test_zero_length_notes_are_dropped_before_matching():
    ref = notes((0.0, 0.5, 60), (1.0, 1.0, 62))
    assert note_f1(ref, notes((0.0, 0.5, 60))) == (1.0, 1.0, 1.0)


def test_notes_validation_and_conversions():
    with pytest.raises(ValueError, match="Notes.offsets: note 0 ends"):
        notes((1.0, 0.5, 60))
    with pytest.raises(ValueError, match="Notes.pitches"):
        notes((0.0, 0.5, 128))
    with pytest.raises(ValueError, match="Notes.offsets: expected 2 entries"):
        Notes([0, 1], [1], [60, 61], [100, 100])
    with pytest.raises(ValueError, match="missing field"):
        Notes.from_events([{"onset_time": 0.0, "midi_note": 60}])
    with pytest.raises(ValueError, match="class indices 0..38"):
        song_transcription_scores({39: REF}, {})
    with pytest.raises(ValueError, match="expected a Notes"):
        song_transcription_scores({PIANO: [(0, 1, 60)]}, {})
    with pytest.raises(ValueError, match="pitches >= 1"):
        note_f1(notes((0, 1, 0)), notes((0, 1, 0)), paper_compat=True)
    events = Notes.from_events([{"onset_time": 0.0, "offset_time": 0.5, "midi_note": 60}])
    assert events.velocities.tolist() == [100] and len(events) == 1
    split = Notes([0, 1, 2], [1, 2, 3], [40, 60, 41], classes=[BASS, PIANO, BASS]).by_class()
    assert sorted(split) == [PIANO, BASS]
    assert split[BASS].pitches.tolist() == [40, 41]
    assert midi_to_hz([69, 81]).tolist() == [440.0, 880.0]


def test_report_names_are_the_documented_ones():
    roll = np.zeros((10, 88))
    roll[0:5, 39] = 1
    ref = {PIANO: notes((0.0, 0.05, 60)), DRUMS: notes((0.0, 0.05, 36))}
    report = aggregate_transcription([song_transcription_scores(ref, ref, {PIANO: roll, DRUMS: roll},
                                                                {PIANO: roll, DRUMS: roll},
                                                                est_onset_rolls={PIANO: roll, DRUMS: roll})])
    per_song = {f"{kind}_{stat}{suffix}" for stat in ("precision", "recall", "f1")
                for kind, suffix in [("note", ""), ("note", "_paper_compat"), ("note_with_offset", ""),
                                     ("note_with_offset", "_paper_compat"), ("frame", "")]}
    expected = {f"{name}/{agg}" for name in per_song for agg in ("piece_wise", "instrument_wise", "flat")}
    expected |= {f"mt3/onset_offset_program_{stat}/{g}" for stat in ("precision", "recall", "f1", "f1_song_mean")
                 for g in mt3_metrics.GRANULARITIES}
    assert set(report.scalars) == expected
    assert set(report.per_class) == per_song
    assert report.per_class["note_f1"] == {"Piano": 1.0, "Drums": 1.0}
    assert "Drums" not in report.per_class["note_with_offset_f1"]


def test_blockwise_matching_equals_mir_eval_on_dense_random_notes():
    rng = np.random.default_rng(3)
    for _ in range(5):
        n = 200
        on = np.sort(rng.uniform(0, 20, n))
        ref = Notes(on, on + rng.uniform(0.05, 1.0, n), rng.integers(30, 90, n), np.full(n, 100))
        est_on = np.clip(on + rng.normal(0.02, 0.03, n), 0, None)
        est = Notes(est_on, np.maximum(est_on + 0.01, ref.offsets + rng.normal(0, 0.1, n)),
                    ref.pitches + rng.integers(-1, 2, n), np.full(n, 100))
        for with_offset in (False, True):
            for compat in (False, True):
                expected = mir_eval_prf(ref, est, offset_ratio=0.2 if with_offset else None, hz=not compat)
                assert note_f1(ref, est, with_offset=with_offset, paper_compat=compat) == pytest.approx(expected)


def test_onset_tolerance_boundary_follows_mir_eval_rounding():
    ref = notes((1.0, 2.0, 60))
    for delay in (0.05, 0.05004, 0.0502):
        est = notes((1.0 + delay, 2.0, 60))
        assert note_f1(ref, est) == pytest.approx(mir_eval_prf(ref, est))
    assert note_f1(ref, notes((1.05004, 2.0, 60)))[2] == 1.0  # mir_eval rounds distances to 4 decimals
