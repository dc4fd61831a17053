"""SNR-style SDR (docs/reference.md §7.4) on constructed signals, its averages, and the skip of absent stems."""

import numpy as np
import pytest

from jointist_jax.metrics.separation_metrics import aggregate_separation, sdr, song_separation_scores

PIANO, BASS, DRUMS = 0, 10, 38


def sine(n=16000, freq=440.0, amplitude=1.0):
    return amplitude * np.sin(2 * np.pi * freq * np.arange(n) / 16000)


def test_sdr_of_scaled_estimates():
    ref = sine()
    # est = ref / 2: error power = ref power / 4 -> 10 log10(4) dB.
    assert sdr(ref, 0.5 * ref) == pytest.approx(10 * np.log10(4.0))
    # est = 0.9 ref: error power = ref power / 100 -> 20 dB.
    assert sdr(ref, 0.9 * ref) == pytest.approx(20.0)
    assert sdr(ref, np.zeros_like(ref)) == pytest.approx(0.0)


def test_sdr_floors_both_powers_at_1e_minus_8():
    ref = sine()  # power 0.5
    assert sdr(ref, ref) == pytest.approx(10 * np.log10(0.5 / 1e-8))
    assert sdr(np.zeros(100), np.zeros(100)) == 0.0
    assert sdr(np.zeros(100), np.ones(100)) == pytest.approx(-80.0)


def test_sdr_is_per_row():
    ref = np.stack([sine(), sine(freq=220.0)])
    est = np.stack([0.5 * ref[0], 0.9 * ref[1]])
    np.testing.assert_allclose(sdr(ref, est), [10 * np.log10(4.0), 20.0])
    with pytest.raises(ValueError, match="differs"):
        sdr(ref, est[:, :-1])


def test_source_piece_and_instrument_wise_and_skipped_stems():
    ref = sine()
    song_a = song_separation_scores({PIANO: (ref, 0.5 * ref), BASS: (ref, np.zeros_like(ref))}, song="a")
    song_b = song_separation_scores({PIANO: (ref, 0.9 * ref), BASS: (None, ref)}, song="b")
    assert song_b.sdr == {PIANO: pytest.approx(20.0)}
    assert song_b.skipped == (BASS,)
    report = aggregate_separation([song_a, song_b])
    six = 10 * np.log10(4.0)
    assert report.scalars["sdr/source_wise"] == pytest.approx((six + 0.0 + 20.0) / 3)
    assert report.scalars["sdr/piece_wise"] == pytest.approx(((six + 0.0) / 2 + 20.0) / 2)
    assert report.scalars["sdr/instrument_wise"] == pytest.approx(((six + 20.0) / 2 + 0.0) / 2)
    assert report.scalars["sdr/num_sources"] == 3.0
    assert report.scalars["sdr/num_skipped"] == 1.0
    assert report.per_class["sdr"] == {"Piano": pytest.approx((six + 20.0) / 2), "Bass": pytest.approx(0.0)}


def test_nothing_scored_gives_counts_only():
    report = aggregate_separation([song_separation_scores({DRUMS: (None, sine())})])
    assert report.scalars == {"sdr/num_sources": 0.0, "sdr/num_skipped": 1.0}
    assert report.per_class == {"sdr": {}}


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"class 0 \(Piano\).*equal length"):
        song_separation_scores({PIANO: (sine(), sine()[:-1])}, song="x")
    with pytest.raises(ValueError, match="class indices 0..38"):
        song_separation_scores({39: (sine(), sine())})
    with pytest.raises(ValueError, match="tuple"):
        song_separation_scores({PIANO: sine()})
    with pytest.raises(ValueError, match="SongSeparationScores"):
        aggregate_separation([{PIANO: 1.0}])
