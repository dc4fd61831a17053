"""Pure layout conversions from PyTorch tensors to jointist-jax parameters (docs/reference.md §11.2).

Each ``LAYOUTS[kind]`` is a pair of NumPy functions ``(to_ours, to_torch)``: ``to_ours`` turns the
reference's tensor into the array our module stores, ``to_torch`` is its exact inverse (used to
report the expected PyTorch shape in errors and by the tests to check that every converted leaf
came from its source tensor). GRUs are not here: their four tensors per layer and direction are
stacked by :func:`jointist_jax.models.gru.load_pytorch_weights`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# BatchNorm/LayerNorm epsilon of every normalisation layer in the reference (PyTorch's default).
TORCH_NORM_EPSILON = 1e-5


def conv2d_kernel(weight: np.ndarray) -> np.ndarray:
    """``nn.Conv2d`` weight (out, in, kH, kW) -> ``nnx.Conv`` kernel (kH, kW, in, out)."""
    _require_ndim(weight, 4, "Conv2d weight (out, in, kH, kW)")
    return np.ascontiguousarray(np.transpose(weight, (2, 3, 1, 0)))


def conv2d_weight(kernel: np.ndarray) -> np.ndarray:
    """Inverse of :func:`conv2d_kernel`: (kH, kW, in, out) -> (out, in, kH, kW)."""
    _require_ndim(kernel, 4, "Conv kernel (kH, kW, in, out)")
    return np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1)))


def linear_kernel(weight: np.ndarray) -> np.ndarray:
    """``nn.Linear`` weight (out, in) -> ``nnx.Linear`` kernel (in, out)."""
    _require_ndim(weight, 2, "Linear weight (out, in)")
    return np.ascontiguousarray(weight.T)


def linear_weight(kernel: np.ndarray) -> np.ndarray:
    """Inverse of :func:`linear_kernel`."""
    _require_ndim(kernel, 2, "Linear kernel (in, out)")
    return np.ascontiguousarray(kernel.T)


def conv1d_pointwise_kernel(weight: np.ndarray) -> np.ndarray:
    """``nn.Conv1d`` weight with kernel size 1, (out, in, 1) -> ``nnx.Linear`` kernel (in, out).

    A kernel-1 Conv1d over (B, C, T) is a Dense applied per time step (the recognizer's ``conv``).
    """
    _require_ndim(weight, 3, "Conv1d weight (out, in, 1)")
    if weight.shape[2] != 1:
        raise ValueError(f"Conv1d weight must have kernel size 1 to become a Dense, got shape {weight.shape}")
    return np.ascontiguousarray(weight[:, :, 0].T)


def conv1d_pointwise_weight(kernel: np.ndarray) -> np.ndarray:
    """Inverse of :func:`conv1d_pointwise_kernel`: (in, out) -> (out, in, 1)."""
    _require_ndim(kernel, 2, "Dense kernel (in, out)")
    return np.ascontiguousarray(kernel.T[:, :, None])


def conv_transpose2x2_kernel(weight: np.ndarray) -> np.ndarray:
    """``nn.ConvTranspose2d(k=2, s=2)`` weight (in, out, 2, 2) -> our ``ConvTranspose2x2.kernel``.

    Our module (``jointist_jax.models.separator.conv_transpose_2x2``) keeps PyTorch's layout and
    orientation: ``out[2i + a, 2j + b, o] = sum_c x[i, j, c] * kernel[c, o, a, b]``, which is what
    PyTorch computes for stride == kernel size and no padding (no spatial flip; checked numerically
    against ``nn.ConvTranspose2d`` in tests/test_convert_layers.py). So this is a copy.
    """
    _require_ndim(weight, 4, "ConvTranspose2d weight (in, out, 2, 2)")
    if weight.shape[2:] != (2, 2):
        raise ValueError(f"ConvTranspose2d weight must have a 2x2 kernel, got shape {weight.shape}")
    return np.array(weight, copy=True)


def identity(tensor: np.ndarray) -> np.ndarray:
    """Tensors whose layout is the same on both sides (biases, norm scales, running statistics,
    embeddings)."""
    return np.array(tensor, copy=True)


# kind -> (to_ours, to_torch). The mapping (mapping.py) names a kind for every reference tensor.
LAYOUTS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "conv2d": (conv2d_kernel, conv2d_weight),
    "linear": (linear_kernel, linear_weight),
    "conv1d_pointwise": (conv1d_pointwise_kernel, conv1d_pointwise_weight),
    "conv_transpose2x2": (conv_transpose2x2_kernel, identity),
    "copy": (identity, identity),
}


def to_ours(kind: str, tensor: np.ndarray) -> np.ndarray:
    """Converts one reference tensor with the layout ``kind`` (a key of :data:`LAYOUTS`)."""
    if kind not in LAYOUTS:
        raise ValueError(f"unknown layout kind {kind!r}; expected one of {sorted(LAYOUTS)}")
    return LAYOUTS[kind][0](np.asarray(tensor))


def to_torch_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch shape whose conversion with ``kind`` has our ``shape`` (for error messages)."""
    if kind not in LAYOUTS:
        raise ValueError(f"unknown layout kind {kind!r}; expected one of {sorted(LAYOUTS)}")
    return tuple(LAYOUTS[kind][1](np.empty(shape, np.float32)).shape)


def to_ours_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Our shape for a PyTorch tensor of ``shape`` converted with ``kind``."""
    return tuple(to_ours(kind, np.empty(shape, np.float32)).shape)


def _require_ndim(array: np.ndarray, ndim: int, what: str) -> None:
    if np.ndim(array) != ndim:
        raise ValueError(f"expected a {what}, got an array of shape {np.shape(array)}")
