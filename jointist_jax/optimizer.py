"""The reference's optimiser: PyTorch Adam with amsgrad, under a warm-up + staircase schedule.

docs/deviations.md 7 / docs/reference.md §1.2: ``Adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
amsgrad=True)`` with ``LambdaLR`` stepped every optimiser step:
multiplier(step) = step / warmup for step <= warmup, else decay_rate ** (step // decay_every).
The very first update therefore has learning rate 0. ``warmup_steps = 0`` (which the reference's
formula cannot take: it divides by the warm-up) means no warm-up: the staircase from step 0, so the
first update has the full rate. No gradient clipping.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax


def learning_rate_schedule(lr: float, warmup_steps: int, decay_every: int,
                           decay_rate: float) -> optax.Schedule:
    """lr * (step / warmup) up to ``warmup_steps``, then lr * decay_rate ** (step // decay_every);
    with ``warmup_steps = 0`` the staircase alone (full rate at step 0)."""
    if warmup_steps < 0 or decay_every <= 0:
        raise ValueError(f"warmup_steps must be >= 0 and decay_every > 0, got {warmup_steps}, {decay_every}")

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        decayed = decay_rate ** jnp.floor(step / decay_every)
        if warmup_steps == 0:
            return lr * decayed
        return lr * jnp.where(step <= warmup_steps, step / warmup_steps, decayed)

    return schedule


class TorchAmsgradState(NamedTuple):
    count: jax.Array
    exp_avg: optax.Updates
    exp_avg_sq: optax.Updates
    max_exp_avg_sq: optax.Updates


def scale_by_torch_amsgrad(b1: float = 0.9, b2: float = 0.999,
                           eps: float = 1e-8) -> optax.GradientTransformation:
    """Adam(amsgrad=True) exactly as ``torch.optim.Adam`` computes it.

    PyTorch keeps the running maximum of the *raw* second moment and bias-corrects it with the
    current step: ``m_hat / (sqrt(max(v)) / sqrt(1 - b2^t) + eps)``. optax's ``scale_by_amsgrad``
    takes the maximum of the bias-corrected moment instead, which gives different updates early
    in training, so this transformation is written out here.
    """

    def init(params):
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)
        return TorchAmsgradState(jnp.zeros([], jnp.int32), zeros(), zeros(), zeros())

    def update(grads, state, params=None):
        del params
        count = state.count + 1
        t = count.astype(jnp.float32)
        exp_avg = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.exp_avg, grads)
        exp_avg_sq = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.exp_avg_sq, grads)
        max_sq = jax.tree.map(jnp.maximum, state.max_exp_avg_sq, exp_avg_sq)
        bias1 = 1 - b1**t
        bias2_sqrt = jnp.sqrt(1 - b2**t)
        updates = jax.tree.map(lambda m, v: (m / bias1) / (jnp.sqrt(v) / bias2_sqrt + eps), exp_avg, max_sq)
        return updates, TorchAmsgradState(count, exp_avg, exp_avg_sq, max_sq)

    return optax.GradientTransformation(init, update)


def make_optimizer(config: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimiser and its schedule from ``config.optimizer`` (fields of configs/defaults.py)."""
    schedule = learning_rate_schedule(config.lr, config.warmup_steps, config.decay_every, config.decay_rate)
    tx = optax.chain(scale_by_torch_amsgrad(config.b1, config.b2, config.eps),
                     optax.scale_by_learning_rate(schedule))
    return tx, schedule
