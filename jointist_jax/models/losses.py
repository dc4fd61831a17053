"""Training losses of the three Jointist modules, as pure float32 functions (docs/deviations.md 6).

* :func:`transcription_loss` — masked BCE on the soft onset target and the frame roll (docs/reference.md §3.2);
* :func:`separation_loss` — L1 on the waveform over rows with a target stem (docs/reference.md §3.3);
* :func:`recognizer_loss` — multi-label BCE over the 39 classes (docs/reference.md §1.3).
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from jointist_jax import instruments

# The reference clamps posteriorgrams to [1e-7, 1 - 1e-7] before the log (End2End/losses.py).
BCE_CLAMP = 1e-7


def _safe_ratio(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """numerator / denominator, or 0 where denominator is 0 (no NaN in the value or its gradient)."""
    nonzero = denominator > 0
    return jnp.where(nonzero, numerator / jnp.where(nonzero, denominator, 1.0), 0.0)


def masked_bce(prediction: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """sum(bce(clamp(p), t) * m) / sum(m) over every element; 0 when the mask is all zero."""
    p = jnp.clip(prediction.astype(jnp.float32), BCE_CLAMP, 1.0 - BCE_CLAMP)
    t = target.astype(jnp.float32)
    m = mask.astype(jnp.float32)
    bce = -t * jnp.log(p) - (1.0 - t) * jnp.log1p(-p)
    return _safe_ratio(jnp.sum(bce * m), jnp.sum(m))


def _require_same_shape(name_a: str, a: jax.Array, name_b: str, b: jax.Array) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}; "
                         "they must match")


def transcription_loss(outputs: Mapping[str, jax.Array],
                       batch_rolls: Mapping[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L_T of docs/reference.md §3.2: masked BCE(onset) + masked BCE(frame), each one global masked mean.

    ``bce(o, t, m) = sum(m * [-t log o' - (1 - t) log(1 - o')]) / sum(m)`` with
    ``o' = clip(o, 1e-7, 1 - 1e-7)``, summed over all rows, frames and keys (not averaged per row).
    Rows with an all-zero ``mask_roll`` (negative samples) contribute nothing; an all-zero mask
    gives a loss of 0.

    Args:
      outputs: ``reg_onset_output`` and ``frame_output`` posteriorgrams, e.g. (B, K, T, 88).
      batch_rolls: ``reg_onset_roll``, ``frame_roll`` and ``mask_roll`` of the same shape.

    Returns:
      ``(loss, aux)`` with aux ``{"onset_loss", "frame_loss"}``, all float32 scalars.
    """
    for key in ("reg_onset_output", "frame_output"):
        if key not in outputs:
            raise KeyError(f"transcription_loss: outputs lack {key!r} (have {sorted(outputs)})")
    for key in ("reg_onset_roll", "frame_roll", "mask_roll"):
        if key not in batch_rolls:
            raise KeyError(f"transcription_loss: batch_rolls lack {key!r} (have {sorted(batch_rolls)})")
    mask = batch_rolls["mask_roll"]
    for out_key, roll_key in (("reg_onset_output", "reg_onset_roll"), ("frame_output", "frame_roll")):
        _require_same_shape(out_key, outputs[out_key], roll_key, batch_rolls[roll_key])
        _require_same_shape(out_key, outputs[out_key], "mask_roll", mask)
    onset = masked_bce(outputs["reg_onset_output"], batch_rolls["reg_onset_roll"], mask)
    frame = masked_bce(outputs["frame_output"], batch_rolls["frame_roll"], mask)
    return onset + frame, {"onset_loss": onset, "frame_loss": frame}


def separation_loss(prediction: jax.Array, target: jax.Array, valid: jax.Array) -> jax.Array:
    """L_MSS of docs/reference.md §3.3: mean |prediction - target| over the valid rows and all their samples.

    Args:
      prediction: separated waveforms (B, K, L).
      target: target stems (B, K, L).
      valid: (B, K) true where the row has a target stem (negatives' silent targets count as valid).

    Returns:
      a float32 scalar; 0 when no row is valid.
    """
    _require_same_shape("separation prediction", prediction, "target", target)
    if valid.shape != prediction.shape[:-1]:
        raise ValueError(f"separation valid has shape {tuple(valid.shape)}, expected the prediction's "
                         f"leading shape {tuple(prediction.shape[:-1])}")
    row = valid.astype(jnp.float32)[..., None]
    error = jnp.abs(prediction.astype(jnp.float32) - target.astype(jnp.float32))
    return _safe_ratio(jnp.sum(error * row), jnp.sum(row) * prediction.shape[-1])


def recognizer_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """L_IR of docs/reference.md §1.3: mean BCE(sigmoid(logits), labels[:, :39]) over batch and classes.

    Computed from log-sigmoids, ``-(y log s(x) + (1 - y) log s(-x))``, which is exact where the
    reference's ``binary_cross_entropy(sigmoid(x))`` would saturate.

    Args:
      logits: (B, 39) recognizer logits.
      labels: (B, 40) multi-hot instrument labels; the last column (``Empty``) is dropped.

    Returns:
      a float32 scalar.
    """
    if logits.ndim != 2 or logits.shape[-1] != instruments.NUM_CLASSES:
        raise ValueError(f"recognizer logits must be (batch, {instruments.NUM_CLASSES}), got {tuple(logits.shape)}")
    if labels.shape != (logits.shape[0], instruments.CONDITION_SIZE):
        raise ValueError(f"recognizer labels must be (batch, {instruments.CONDITION_SIZE}) = "
                         f"{(logits.shape[0], instruments.CONDITION_SIZE)}, got {tuple(labels.shape)}")
    x = logits.astype(jnp.float32)
    y = labels[:, : instruments.NUM_CLASSES].astype(jnp.float32)
    bce = -(y * jax.nn.log_sigmoid(x) + (1.0 - y) * jax.nn.log_sigmoid(-x))
    return jnp.mean(bce)
