"""The reference's optimiser: torch Adam(amsgrad) arithmetic and the warm-up/staircase schedule."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jointist_jax import optimizer


def test_schedule_matches_lambda_lr():
    schedule = optimizer.learning_rate_schedule(1e-3, warmup_steps=1000, decay_every=10000, decay_rate=0.9)
    for step, expected in [(0, 0.0), (1, 1e-6), (500, 5e-4), (1000, 1e-3), (1001, 1e-3),
                           (9999, 1e-3), (10000, 9e-4), (25000, 1e-3 * 0.81)]:
        np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("warmup, expected", [
    # (step 0, step 1, the end of warm-up, one step later): the rate at each, as lr multiples.
    (0, (1.0, 1.0, 1.0, 1.0)),  # no warm-up: the full rate from the first update
    (1, (0.0, 1.0, 1.0, 1.0)),
    (4, (0.0, 0.25, 1.0, 1.0)),
])
def test_warm_up_rates_at_step_0_step_1_and_its_end(warmup, expected):
    schedule = optimizer.learning_rate_schedule(2e-3, warmup_steps=warmup, decay_every=100, decay_rate=0.5)
    got = [float(schedule(step)) for step in (0, 1, warmup, warmup + 1)]
    np.testing.assert_allclose(got, [2e-3 * m for m in expected], rtol=1e-6, atol=0)
    # The staircase after warm-up, whatever the warm-up.
    np.testing.assert_allclose([float(schedule(s)) for s in (99, 100, 250)], [2e-3, 1e-3, 5e-4], rtol=1e-6)


def test_no_warm_up_makes_the_first_update_a_full_step():
    config = ml_collections.ConfigDict(dict(lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, warmup_steps=0,
                                            decay_every=100, decay_rate=0.9))
    tx, _ = optimizer.make_optimizer(config)
    params = {"w": jnp.ones(3)}
    updates, _ = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    # Adam's first step moves each parameter by lr (m_hat / sqrt(v_hat) = 1).
    np.testing.assert_allclose(np.asarray(updates["w"]), -1e-3, rtol=1e-4)


def test_schedule_rejects_bad_arguments():
    with pytest.raises(ValueError, match="decay_every"):
        optimizer.learning_rate_schedule(1e-3, 10, 0, 0.9)
    with pytest.raises(ValueError, match="warmup_steps must be >= 0"):
        optimizer.learning_rate_schedule(1e-3, -1, 10, 0.9)


def _torch_adam_amsgrad(grads, lr=1e-2, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.Adam(amsgrad=True) written out in numpy, per its documented algorithm."""
    p = np.zeros_like(grads[0])
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    vmax = np.zeros_like(p)
    out = []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = np.maximum(vmax, v)
        denom = np.sqrt(vmax) / np.sqrt(1 - b2**t) + eps
        p = p - lr / (1 - b1**t) * m / denom
        out.append(p.copy())
    return out


def test_amsgrad_matches_torch_algorithm():
    rng = np.random.default_rng(0)
    # Large early gradients then small ones: where optax's amsgrad (max of bias-corrected v) differs.
    grads = [rng.normal(size=5) * s for s in (5.0, 3.0, 0.1, 0.1, 0.05, 0.01)]
    expected = _torch_adam_amsgrad(grads)
    tx = optax.chain(optimizer.scale_by_torch_amsgrad(), optax.scale(-1e-2))
    params = jnp.zeros(5)
    state = tx.init(params)
    for g, want in zip(grads, expected):
        updates, state = tx.update(jnp.asarray(g), state, params)
        params = optax.apply_updates(params, updates)
        np.testing.assert_allclose(np.asarray(params), want, rtol=1e-5, atol=1e-7)
    optax_params = jnp.zeros(5)
    optax_tx = optax.amsgrad(1e-2)
    optax_state = optax_tx.init(optax_params)
    for g in grads:
        u, optax_state = optax_tx.update(jnp.asarray(g), optax_state, optax_params)
        optax_params = optax.apply_updates(optax_params, u)
    assert not np.allclose(np.asarray(optax_params), expected[-1], rtol=1e-4)


def test_make_optimizer_first_update_is_zero():
    config = ml_collections.ConfigDict(dict(lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, warmup_steps=10,
                                            decay_every=100, decay_rate=0.9))
    tx, schedule = optimizer.make_optimizer(config)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    updates, state = tx.update({"w": jnp.ones(3)}, state, params)
    assert float(jnp.abs(updates["w"]).max()) == 0.0  # LambdaLR: lr = 0 at step 0
    updates, state = tx.update({"w": jnp.ones(3)}, state, params)
    np.testing.assert_allclose(np.asarray(updates["w"]), -1e-4, rtol=1e-4)
