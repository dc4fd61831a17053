"""Losses against hand-computed numpy values (docs/reference.md §3.2, §3.3, §1.3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jointist_jax.models import losses


def _np_bce(o, t):
    o = np.clip(o, 1e-7, 1 - 1e-7)
    return -t * np.log(o) - (1 - t) * np.log(1 - o)


def _rolls(rng, shape):
    return {
        "reg_onset_roll": rng.uniform(size=shape).astype(np.float32),
        "frame_roll": (rng.uniform(size=shape) > 0.5).astype(np.float32),
        "mask_roll": (rng.uniform(size=shape) > 0.3).astype(np.float32),
    }


def test_transcription_loss_is_one_global_masked_mean():
    rng = np.random.default_rng(0)
    shape = (2, 3, 5, 88)
    outputs = {"reg_onset_output": rng.uniform(size=shape).astype(np.float32),
               "frame_output": rng.uniform(size=shape).astype(np.float32)}
    rolls = _rolls(rng, shape)
    # Negative rows (mask all zero) must not count, and rows have different mask sums, so a
    # per-row mean would differ from the global one.
    rolls["mask_roll"][0, 1] = 0.0
    rolls["mask_roll"][1, 2, :3] = 0.0
    m = rolls["mask_roll"]
    expected_onset = (_np_bce(outputs["reg_onset_output"], rolls["reg_onset_roll"]) * m).sum() / m.sum()
    expected_frame = (_np_bce(outputs["frame_output"], rolls["frame_roll"]) * m).sum() / m.sum()
    loss, aux = losses.transcription_loss(outputs, rolls)
    np.testing.assert_allclose(aux["onset_loss"], expected_onset, rtol=1e-5)
    np.testing.assert_allclose(aux["frame_loss"], expected_frame, rtol=1e-5)
    np.testing.assert_allclose(loss, expected_onset + expected_frame, rtol=1e-5)
    assert loss.dtype == jnp.float32


def test_transcription_loss_hand_values_and_clamp():
    # One row of 4 keys: o = [0.5, 0, 1, 0.9], t = [1, 0, 1, 0], m = [1, 1, 1, 0].
    o = np.array([0.5, 0.0, 1.0, 0.9], np.float32)
    t = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
    m = np.array([1.0, 1.0, 1.0, 0.0], np.float32)
    # -log 0.5 = 0.6931; clamped exact predictions give -log(1 - 1e-7) ~ 1e-7 each.
    expected = (np.log(2.0) + 2 * 1e-7) / 3
    outputs = {"reg_onset_output": o, "frame_output": o}
    rolls = {"reg_onset_roll": t, "frame_roll": t, "mask_roll": m}
    loss, aux = losses.transcription_loss(outputs, rolls)
    np.testing.assert_allclose(aux["onset_loss"], expected, rtol=1e-4)
    np.testing.assert_allclose(loss, 2 * expected, rtol=1e-4)
    # A confidently wrong prediction is clamped: -log(1e-7) = 16.118, not inf.
    wrong, _ = losses.transcription_loss({"reg_onset_output": np.zeros(1, np.float32),
                                          "frame_output": np.zeros(1, np.float32)},
                                         {"reg_onset_roll": np.ones(1), "frame_roll": np.ones(1),
                                          "mask_roll": np.ones(1)})
    np.testing.assert_allclose(wrong, 2 * -np.log(1e-7), rtol=1e-4)


def test_transcription_loss_empty_mask_is_zero_with_finite_gradient():
    shape = (1, 2, 3, 88)
    outputs = {"reg_onset_output": jnp.full(shape, 0.3), "frame_output": jnp.full(shape, 0.6)}
    rolls = {"reg_onset_roll": jnp.ones(shape), "frame_roll": jnp.ones(shape), "mask_roll": jnp.zeros(shape)}
    loss, _ = losses.transcription_loss(outputs, rolls)
    assert float(loss) == 0.0
    grads = jax.grad(lambda out: losses.transcription_loss(out, rolls)[0])(outputs)
    for g in jax.tree.leaves(grads):
        assert np.all(np.isfinite(g)) and np.all(g == 0)


def test_transcription_loss_rejects_bad_inputs():
    shape = (1, 1, 3, 88)
    outputs = {"reg_onset_output": jnp.zeros(shape), "frame_output": jnp.zeros(shape)}
    rolls = {"reg_onset_roll": jnp.zeros(shape), "frame_roll": jnp.zeros(shape), "mask_roll": jnp.zeros(shape)}
    with pytest.raises(KeyError, match="mask_roll"):
        losses.transcription_loss(outputs, {k: v for k, v in rolls.items() if k != "mask_roll"})
    with pytest.raises(KeyError, match="frame_output"):
        losses.transcription_loss({"reg_onset_output": outputs["reg_onset_output"]}, rolls)
    with pytest.raises(ValueError, match="frame_roll"):
        losses.transcription_loss(outputs, dict(rolls, frame_roll=jnp.zeros((1, 1, 4, 88))))


def test_separation_loss_mean_abs_over_valid_rows():
    pred = np.array([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]],
                     [[5.0, 5.0, 5.0], [1.0, -1.0, 1.0]]], np.float32)
    target = np.array([[[0.0, 2.0, 1.0], [9.0, 9.0, 9.0]],
                       [[5.0, 4.0, 5.0], [0.0, 0.0, 0.0]]], np.float32)
    valid = np.array([[True, False], [True, True]])
    # valid rows: |1,0,2| + |0,1,0| + |1,1,1| = 7 over 3 rows x 3 samples; the invalid 27 is ignored.
    np.testing.assert_allclose(losses.separation_loss(pred, target, valid), 7.0 / 9.0, rtol=1e-6)


def test_separation_loss_no_valid_row_is_zero():
    pred = jnp.ones((2, 1, 4))
    loss = losses.separation_loss(pred, jnp.zeros((2, 1, 4)), jnp.zeros((2, 1), bool))
    assert float(loss) == 0.0
    grad = jax.grad(lambda p: losses.separation_loss(p, jnp.zeros((2, 1, 4)), jnp.zeros((2, 1), bool)))(pred)
    assert np.all(np.isfinite(grad))


def test_separation_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="target"):
        losses.separation_loss(jnp.zeros((1, 2, 4)), jnp.zeros((1, 2, 5)), jnp.ones((1, 2), bool))
    with pytest.raises(ValueError, match="valid"):
        losses.separation_loss(jnp.zeros((1, 2, 4)), jnp.zeros((1, 2, 4)), jnp.ones((2,), bool))


def test_recognizer_loss_matches_numpy_and_drops_empty_column():
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3.0, size=(4, 39)).astype(np.float32)
    labels = (rng.uniform(size=(4, 40)) > 0.7).astype(np.float32)
    labels[:, 39] = 1.0  # 'Empty' must be ignored
    s = 1 / (1 + np.exp(-logits.astype(np.float64)))
    y = labels[:, :39]
    expected = np.mean(-(y * np.log(s) + (1 - y) * np.log(1 - s)))
    np.testing.assert_allclose(losses.recognizer_loss(logits, labels), expected, rtol=1e-5)


def test_recognizer_loss_is_stable_for_large_logits():
    logits = jnp.array([[100.0, -100.0] + [0.0] * 37])
    labels = jnp.zeros((1, 40)).at[0, 1].set(1.0)
    # Elements: label 0 at logit 100 -> 100; label 1 at -100 -> 100; 37 x log 2.
    expected = (200.0 + 37 * np.log(2.0)) / 39
    np.testing.assert_allclose(losses.recognizer_loss(logits, labels), expected, rtol=1e-5)
    grad = jax.grad(losses.recognizer_loss)(logits, labels)
    assert np.all(np.isfinite(grad))


def test_recognizer_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="logits"):
        losses.recognizer_loss(jnp.zeros((2, 40)), jnp.zeros((2, 40)))
    with pytest.raises(ValueError, match="labels"):
        losses.recognizer_loss(jnp.zeros((2, 39)), jnp.zeros((2, 39)))
