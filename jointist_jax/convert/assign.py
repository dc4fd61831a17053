"""Setting one of our modules from one reference module's state dict (strict, like
``load_state_dict(strict=True)``): every tensor is mapped or explicitly ignored, and every
parameter and BatchNorm statistic of ours receives exactly one tensor.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jointist_jax import audio
from jointist_jax.audio import mel as mel_lib
from jointist_jax.convert import layers, mapping
from jointist_jax.convert.torch_checkpoint import ConversionError
from jointist_jax.models import gru as gru_lib

# Front-end buffers are float32 computations of closed formulas, so a checkpoint's copy matches ours
# only to float32 rounding. The tolerance per buffer sits between that rounding and the smallest
# change of front end it must still catch (docs/deviations.md 21):
# * Hann windows: torch.hann_window in float32 differs from ours by 2.1e-7; a symmetric instead of
#   a periodic window differs by 1.2e-3.
# * mel filterbank: torchaudio builds it in float32, and the 231 mel edge points (up to 2840 mel)
#   rounded to float32 move the edge frequencies by up to ~1e-3 Hz, which the division by the
#   filter widths (down to ~8 Hz) turns into 2.17e-5 at most (measured, (1025, 229) HTK bank).
#   The nearest filterbank we must reject, f_max 0.1 Hz off, differs by 1.06e-3; Slaney instead of
#   HTK, f_min or f_max 1 Hz off, or another bin count differ by 1e-2 or more (or in shape).
WINDOW_ATOL = 1e-6
MEL_FILTERBANK_ATOL = 1e-4


def buffer_atol(key: str) -> float:
    """The largest absolute difference accepted between a checkpoint's front-end buffer and ours."""
    return MEL_FILTERBANK_ATOL if key.endswith("mel_scale.fb") else WINDOW_ATOL


def format_keys(keys, limit: int = 8) -> str:
    """Sorted keys for an error message: the first ``limit``, then how many there are in all."""
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def _resolve(model: nnx.Module, path: mapping.Path):
    """The attribute at ``path`` (names and list indices) below ``model``."""
    node = model
    for part in path:
        node = node[part] if isinstance(part, int) else getattr(node, part)
    return node


def expected_buffer(key: str, model: nnx.Module) -> np.ndarray:
    """Our value of a reference front-end buffer (:data:`mapping.FRONT_END_BUFFERS`)."""
    if key == "spec_layer.spectrogram.window":
        return audio.hann_window(mel_lib.N_FFT)
    if key == "spec_layer.mel_scale.fb":
        return audio.mel_filterbank()
    if key in ("unet_base.stft.window", "unet_base.istft.window"):
        return audio.hann_window(model.n_fft)
    raise KeyError(f"{key!r} is not a front-end buffer")


def check_norm_epsilons(model: nnx.Module, *, what: str) -> None:
    """Every BatchNorm/LayerNorm of ``model`` must use PyTorch's epsilon (1e-5), or the converted
    statistics would normalise differently."""
    for path, node in nnx.iter_graph(model):
        if isinstance(node, (nnx.BatchNorm, nnx.LayerNorm)) and node.epsilon != layers.TORCH_NORM_EPSILON:
            raise ConversionError(f"{what}: our {type(node).__name__} at {'/'.join(map(str, path))} has "
                                  f"epsilon {node.epsilon}, the reference uses {layers.TORCH_NORM_EPSILON}")


def assign_reference_weights(model: nnx.Module, module: str, tensors: Mapping[str, np.ndarray], *,
                             source: str) -> None:
    """Sets every parameter and BatchNorm statistic of ``model`` from reference ``module``'s tensors.

    Args:
      model: our Transcriber / Recognizer / Separator (modified in place).
      module: reference module name of the tsv (e.g. ``transcription_CNN8Dropout``).
      tensors: the module's state dict with bare keys (Lightning prefix already stripped).
      source: what to name in error messages (file and prefix).

    Raises:
      ConversionError: a missing, unexpected or mis-shaped key (named), a front-end buffer that
        differs from ours, or a parameter of ours that no tensor reached.
    """
    expected = mapping.reference_keys(module)
    missing = set(expected) - set(tensors)
    if missing:
        raise ConversionError(f"{source}: missing key(s) {format_keys(missing)} of reference module {module}")
    unexpected = set(tensors) - set(expected)
    if unexpected:
        raise ConversionError(f"{source}: unexpected key(s) {format_keys(unexpected)}: not part of reference "
                              f"module {module}")
    check_norm_epsilons(model, what=source)

    ours = dict(nnx.to_flat_state(nnx.state(model, (nnx.Param, nnx.BatchStat))))
    assigned: set[mapping.Path] = set()
    gru_groups: dict[mapping.Path, dict[str, np.ndarray]] = defaultdict(dict)
    for key in sorted(expected):
        value = np.asarray(tensors[key])
        if mapping.is_ignored(key):
            continue
        if mapping.is_front_end_buffer(key):
            check_front_end_buffer(key, value, expected_buffer(key, model), source)
            continue
        target = mapping.target(module, key, expected[key])
        if target.kind == "gru":
            gru_groups[target.path][target.gru_key] = value
            assigned.add(mapping.gru_variable(target, expected[key])[0])
            continue
        if target.path not in ours:
            raise ConversionError(f"{source}: key {key!r} maps to {'/'.join(map(str, target.path))}, which our "
                                  f"model does not have")
        variable = _resolve(model, target.path)
        our_shape = tuple(variable.shape)
        if value.shape != layers.to_torch_shape(target.kind, our_shape):
            raise ConversionError(f"{source}: key {key!r} has shape {value.shape}, expected "
                                  f"{layers.to_torch_shape(target.kind, our_shape)} for our "
                                  f"{'/'.join(map(str, target.path))} {our_shape}")
        if key.endswith("running_var") and np.any(value < 0):
            raise ConversionError(f"{source}: key {key!r} (a BatchNorm running variance) has negative entries")
        variable.set_value(jnp.asarray(layers.to_ours(target.kind, value), variable.dtype))
        assigned.add(target.path)

    for path, gru_tensors in gru_groups.items():
        try:
            gru_lib.load_pytorch_weights(_resolve(model, path), gru_tensors)
        except (KeyError, ValueError, AttributeError, IndexError) as e:  # a missing module, a bad tensor
            raise ConversionError(f"{source}: GRU {'.'.join(map(str, path))}: {e}") from e

    left = set(ours) - assigned
    if left:
        raise ConversionError(f"{source}: no tensor of reference module {module} reaches our "
                              f"{format_keys('/'.join(map(str, p)) for p in left)}")


def check_front_end_buffer(key: str, value: np.ndarray, ours: np.ndarray, source: str) -> None:
    """Raises :class:`ConversionError` unless a checkpoint's front-end buffer ``value`` has our shape and
    equals ``ours`` to float32 rounding (:func:`buffer_atol`)."""
    if value.shape != ours.shape:
        raise ConversionError(f"{source}: front-end buffer {key!r} has shape {value.shape}, ours "
                              f"{ours.shape} ({mapping.FRONT_END_BUFFERS[key]})")
    error = float(np.max(np.abs(value.astype(np.float64) - ours)))
    if not np.isfinite(error) or error > buffer_atol(key):
        raise ConversionError(f"{source}: front-end buffer {key!r} differs from ours by up to {error:.3g} "
                              f"(more than float32 rounding, {buffer_atol(key):.0e}; "
                              f"{mapping.FRONT_END_BUFFERS[key]}): the checkpoint expects other features "
                              f"than jointist_jax.audio computes")
