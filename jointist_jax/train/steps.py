"""Pure train and eval steps for every stage: ``train_step(state, batch) -> (state, metrics)``.

The model lives in the step as an NNX graph definition (static, captured by the closure) plus
the state arrays carried in :class:`TrainState`; the step merges them, runs the stage's forward
pass and losses (its :class:`~jointist_jax.stages.Stage`'s ``losses``), and splits the
updated BatchNorm statistics back out. Per-step randomness (dropout) is
``fold_in(base_key, step)``, so a resumed run draws the same numbers without storing keys.
Losses are float32 whatever the compute dtype.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jointist_jax import runs, stages

Batch = stages.Batch
Metrics = stages.Metrics


@flax.struct.dataclass
class TrainState:
    """Everything a step reads and writes. ``rest`` holds non-trained module state (RNG streams)."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rest: Any

    @classmethod
    def create(cls, model: nnx.Module, tx: optax.GradientTransformation | None = None, *,
               step: int | jax.Array = 0) -> "TrainState":
        """The state of ``model`` at ``step``: its parameters, BatchNorm statistics and other state
        (``rest``), and ``tx``'s fresh optimiser state (None without ``tx``). Works under
        ``jax.eval_shape`` and ``jax.jit``."""
        _, params, batch_stats, rest = stages.split_model(model)
        return cls(step=jnp.asarray(step, jnp.int32), params=params, batch_stats=batch_stats,
                   opt_state=None if tx is None else tx.init(params), rest=rest)

    @classmethod
    def from_checkpoint_items(cls, items: dict, rest: Any) -> "TrainState":
        """The state from restored :meth:`checkpoint_items` and the module's ``rest``."""
        return cls(rest=rest, **items)

    def checkpoint_items(self) -> dict:
        """What a checkpoint stores (:func:`jointist_jax.runs.checkpoint_items`); ``rest`` is
        re-created from the seed on restore."""
        return runs.checkpoint_items(self.step, dict(params=self.params, batch_stats=self.batch_stats),
                                     self.opt_state)


def _weighted_clip_masks(batch: Batch) -> Batch:
    """Folds an eval batch's per-clip ``valid`` flags (padding of the last batch) into its masks."""
    if "valid" not in batch:
        return batch
    valid = batch["valid"].astype(jnp.float32)
    batch = dict(batch)
    if "mask_roll" in batch:
        batch["mask_roll"] = batch["mask_roll"] * valid[:, None, None, None]
    if "source_valid" in batch:
        batch["source_valid"] = batch["source_valid"] * valid[:, None]
    return batch


def stage_losses(model: nnx.Module, batch: Batch, stage: str | stages.Stage,
                 rngs: nnx.Rngs | None) -> tuple[jax.Array, Metrics]:
    """(total loss, per-module losses) of ``stage`` (a registered name or a
    :class:`~jointist_jax.stages.Stage`) on one batch of the input pipeline; an eval batch's
    padding clips are masked out first."""
    return stages.resolve(stage).losses(model, _weighted_clip_masks(batch), rngs)


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, stage: str | stages.Stage,
                    base_key: jax.Array) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """The pure training step of ``stage`` (name or Stage) for a train-mode ``graphdef``."""
    stage = stages.resolve(stage)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        dropout_key = jax.random.fold_in(base_key, state.step)

        # The module (and its RNG streams) must be created inside the differentiated trace, with
        # fresh Variables (copy=True), for BatchNorm to update its statistics there.
        def loss_fn(params, batch_stats, rest):
            model = nnx.merge(graphdef, params, batch_stats, rest, copy=True)
            rngs = nnx.Rngs(dropout=dropout_key)
            loss, metrics = stage_losses(model, batch, stage, rngs)
            return loss, (metrics, nnx.state(model, nnx.BatchStat))

        (loss, (metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats, state.rest)
        # Named so that profiles can tell the optimiser's ops from the model's.
        with jax.named_scope("optimizer"):
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads),
                       param_norm=optax.tree.norm(params), learning_rate=schedule(state.step))
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                                  opt_state=opt_state)
        return new_state, metrics

    return train_step


def make_eval_step(graphdef: nnx.GraphDef, stage: str | stages.Stage) -> Callable[[TrainState, Batch], Metrics]:
    """The pure validation step for an eval-mode ``graphdef``: losses with running statistics."""
    stage = stages.resolve(stage)

    def eval_step(state: TrainState, batch: Batch) -> Metrics:
        model = nnx.merge(graphdef, state.params, state.batch_stats, state.rest, copy=True)
        loss, metrics = stage_losses(model, batch, stage, None)
        weight = jnp.sum(batch["valid"]) if "valid" in batch else jnp.asarray(batch["waveform"].shape[0])
        return dict(metrics, loss=loss, weight=weight.astype(jnp.float32))

    return eval_step
