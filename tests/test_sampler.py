"""The instrument sampler and per-row targets (docs/reference.md §3.1, docs/deviations.md 8 and 14)."""

import numpy as np
import pytest

from jointist_jax import instruments
from jointist_jax.data import sampler


def test_row_order_dtypes_and_positive_membership():
    rng = np.random.default_rng(0)
    ids, pos = sampler.sample_conditions(rng, [3, 7], num_positive=3, num_negative=2)
    assert ids.dtype == np.int32 and pos.dtype == bool
    assert pos.tolist() == [True, True, True, False, False]
    assert set(ids[:3].tolist()) <= {3, 7}
    assert not set(ids[3:].tolist()) & {3, 7}


def test_positive_frequencies_follow_occurrence_weights():
    rng = np.random.default_rng(1)
    present = [0, 12, 38]
    ids, _ = sampler.sample_conditions(rng, present, num_positive=40000, num_negative=0)
    w = instruments.occurrence_weights(0.5)[present]
    expected = w / w.sum()
    observed = np.array([(ids == c).mean() for c in present])
    np.testing.assert_allclose(observed, expected, atol=0.01)
    # Temperature 0: uniform over the present classes.
    ids, _ = sampler.sample_conditions(rng, present, num_positive=30000, num_negative=0, temperature=0.0)
    np.testing.assert_allclose([(ids == c).mean() for c in present], [1 / 3] * 3, atol=0.015)


def test_negatives_uniform_over_absent_classes_including_empty():
    rng = np.random.default_rng(2)
    present = [0, 1, 2]
    ids, pos = sampler.sample_conditions(rng, present, num_positive=0, num_negative=37000)
    assert not pos.any()
    counts = np.bincount(ids, minlength=40)
    assert counts[present].sum() == 0
    absent = np.setdiff1d(np.arange(40), present)
    assert counts[39] > 0  # Empty is reachable
    np.testing.assert_allclose(counts[absent] / len(ids), 1 / 37, atol=0.005)


def test_draws_are_with_replacement():
    rng = np.random.default_rng(3)
    ids, _ = sampler.sample_conditions(rng, [5], num_positive=4, num_negative=0)
    assert ids.tolist() == [5, 5, 5, 5]
    ids, _ = sampler.sample_conditions(rng, np.arange(39), num_positive=0, num_negative=3)
    assert ids.tolist() == [39, 39, 39]  # only Empty is absent, drawn three times


def test_silent_crop_gives_all_negative_rows():
    rng = np.random.default_rng(4)
    ids, pos = sampler.sample_conditions(rng, [], num_positive=3, num_negative=1)
    assert len(ids) == 4 and not pos.any()
    assert ((ids >= 0) & (ids < 40)).all()


def test_same_rng_state_same_draws():
    a = sampler.sample_conditions(np.random.default_rng(9), [1, 2, 3], 3, 2)
    b = sampler.sample_conditions(np.random.default_rng(9), [1, 2, 3], 3, 2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_bad_arguments_raise():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="0..38"):
        sampler.sample_conditions(rng, [39], 1, 1)
    with pytest.raises(ValueError, match=">= 0"):
        sampler.sample_conditions(rng, [1], -1, 1)


def _rolls(value):
    return {name: np.full((5, 88), value, np.float32)
            for name in ("onset_roll", "reg_onset_roll", "frame_roll", "mask_roll")}


def test_row_rolls_negatives_masked_out_or_trained_to_silence():
    ids, pos = np.array([4, 4, 9]), np.array([True, True, False])
    out = sampler.row_rolls(ids, pos, {4: _rolls(0.5)}, frames=5, num_keys=88)
    for name, value in out.items():
        assert value.shape == (3, 5, 88)
        assert (value[:2] == 0.5).all() and (value[2] == 0).all(), name
    out = sampler.row_rolls(ids, pos, {4: _rolls(0.5)}, frames=5, num_keys=88, transcribe_negatives=True)
    assert (out["mask_roll"][2] == 1).all() and (out["frame_roll"][2] == 0).all()
    with pytest.raises(KeyError, match="class 4"):
        sampler.row_rolls(ids, pos, {}, frames=5, num_keys=88)


def test_row_sources_validity():
    ids, pos = np.array([4, 7, 9]), np.array([True, True, False])
    source, valid = sampler.row_sources(ids, pos, {4: np.full(6, 0.25, np.float32)}, 6)
    assert source.shape == (3, 6) and valid.tolist() == [1.0, 0.0, 1.0]
    assert (source[0] == 0.25).all() and not source[1:].any()
