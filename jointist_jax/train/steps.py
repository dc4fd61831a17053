"""Pure train and eval steps for every stage: ``train_step(state, batch) -> (state, metrics)``.

The model lives in the step as an NNX graph definition (static, captured by the closure) plus
the state arrays carried in :class:`TrainState`; the step merges them, runs the stage's forward
pass and losses, and splits the updated BatchNorm statistics back out. Per-step randomness
(dropout) is ``fold_in(base_key, step)``, so a resumed run draws the same numbers without
storing keys. Losses are float32 whatever the compute dtype.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jointist_jax import audio
from jointist_jax.models import losses

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
    """Everything a step reads and writes. ``rest`` holds non-trained module state (RNG streams)."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rest: Any

    def checkpoint_items(self) -> dict:
        """What a checkpoint stores; ``rest`` is re-created from the seed on restore."""
        return dict(step=self.step, params=self.params, batch_stats=self.batch_stats,
                    opt_state=self.opt_state)


def split_model(model: nnx.Module):
    """(graphdef, params, batch_stats, rest) of a module."""
    return nnx.split(model, nnx.Param, nnx.BatchStat, ...)


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


def _recognizer_loss(logits: jax.Array, batch: Batch) -> jax.Array:
    if "valid" not in batch:
        return losses.recognizer_loss(logits, batch["instruments"])
    per_clip = jax.vmap(lambda l, y: losses.recognizer_loss(l[None], y[None]))(logits, batch["instruments"])
    valid = batch["valid"].astype(jnp.float32)
    return jnp.sum(per_clip * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def stage_losses(model: nnx.Module, batch: Batch, stage: str,
                 rngs: nnx.Rngs | None) -> tuple[jax.Array, Metrics]:
    """(total loss, per-module losses) of ``stage`` on one batch of the input pipeline.

    ir: BCE over 39 classes. transcription: L_T. separation: L_MSS. joint: L_T + L_MSS, with the
    separation loss back-propagating into the transcriber (no stop-gradient; docs/reference.md §3.4).
    """
    batch = _weighted_clip_masks(batch)
    if stage == "ir":
        loss = _recognizer_loss(model(audio.log_mel(batch["waveform"]), rngs=rngs), batch)
        return loss, {"ir_loss": loss}
    if stage == "transcription":
        outputs = model(audio.log_mel(batch["waveform"]), batch["conditions"], rngs=rngs)
        loss, aux = losses.transcription_loss(outputs, batch)
        return loss, {"transcription_loss": loss, **aux}
    if stage == "separation":
        outputs = model(batch["waveform"], batch["conditions"], None, rngs=rngs)
        loss = losses.separation_loss(outputs["waveform"], batch["source"], batch["source_valid"])
        return loss, {"separation_loss": loss}
    if stage == "joint":
        outputs = model.transcribe_and_separate(batch["waveform"], batch["conditions"], rngs=rngs)
        l_t, aux = losses.transcription_loss(outputs, batch)
        l_s = losses.separation_loss(outputs["waveform"], batch["source"], batch["source_valid"])
        return l_t + l_s, {"transcription_loss": l_t, "separation_loss": l_s, **aux}
    raise ValueError(f"unknown stage {stage!r}")


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, stage: str,
                    base_key: jax.Array) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """The pure training step of ``stage`` for a train-mode ``graphdef``."""

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


def make_eval_step(graphdef: nnx.GraphDef, stage: str) -> Callable[[TrainState, Batch], Metrics]:
    """The pure validation step for an eval-mode ``graphdef``: losses with running statistics."""

    def eval_step(state: TrainState, batch: Batch) -> Metrics:
        model = nnx.merge(graphdef, state.params, state.batch_stats, state.rest, copy=True)
        loss, metrics = stage_losses(model, batch, stage, None)
        weight = jnp.sum(batch["valid"]) if "valid" in batch else jnp.asarray(batch["waveform"].shape[0])
        return dict(metrics, loss=loss, weight=weight.astype(jnp.float32))

    return eval_step
