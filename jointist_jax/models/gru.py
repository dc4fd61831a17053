"""A bidirectional, multi-layer GRU with PyTorch's ``nn.GRU`` math, fast on CPU.

The transcriber's cost is dominated by its bidirectional GRUs over 1001 frames (docs/reference.md §11.3),
so this module is written for speed while keeping PyTorch's exact equations (gate order r, z, n;
``b_hn`` inside the reset product; ``h0 = 0``)::

    r  = σ(W_ir x + b_ir + W_hr h + b_hr)
    z  = σ(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
    h' = (1 − z) ⊙ n + z ⊙ h

How it is made cheap:

* the input projections ``x @ W_ih + b_ih`` for every time step and both directions are one
  einsum before the recurrence (and so is their gradient, by autodiff, after it);
* one ``lax.scan`` advances both directions at once, carrying their hidden states stacked as
  ``(2, N, H)``; the reverse direction is fed the time-reversed projections;
* the recurrence has a hand-written VJP (``jax.custom_vjp``): the forward scan saves the gate
  activations, the backward pass is one reverse scan that only propagates ``dh`` (one small
  matmul per step), and the ``W_hh``/``b_hh`` gradients are ONE matmul / sum over all steps
  outside the scan;
* two XLA-CPU details measured with ``benchmarks/gru.py``: the three gates' input projections
  enter the scan as three arrays (slicing them inside the loop slowed the gate fusion ~1.4x),
  and the backward step multiplies by a pre-transposed ``W_hh`` (contracting ``W_hh``'s last
  axis inside the loop made the per-step dot ~2.2x slower).

Parameter layout (per layer ``l``, direction ``d``: 0 = forward, 1 = reverse, gates r|z|n along
the last axis) and the mapping to PyTorch's ``nn.GRU`` state-dict keys (``sfx`` is ``""`` for
d = 0 and ``"_reverse"`` for d = 1)::

    layers[l].w_ih  (2, in_l, 3H)   w_ih[d] = weight_ih_l{l}{sfx}.T   (torch: (3H, in_l))
    layers[l].w_hh  (2, H, 3H)      w_hh[d] = weight_hh_l{l}{sfx}.T   (torch: (3H, H))
    layers[l].b_ih  (2, 3H)         b_ih[d] = bias_ih_l{l}{sfx}
    layers[l].b_hh  (2, 3H)         b_hh[d] = bias_hh_l{l}{sfx}

with ``in_0 = in_features`` and ``in_l = 2H`` for l ≥ 1 (layer l consumes the [fwd, bwd] concat).
Both bias vectors are kept (not folded) so parameter counts equal PyTorch's.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = [
    "BiGRU",
    "BiGRULayer",
    "DEFAULT_UNROLL",
    "INITS",
    "bigru_layer",
    "gru_param_count",
    "load_pytorch_weights",
    "to_pytorch_weights",
]

#: Scan unroll factor used by default (chosen with ``benchmarks/gru.py`` on the 2-core CPU).
DEFAULT_UNROLL = 1

#: Accepted values of ``BiGRU(init=...)``.
INITS = ("pytorch", "jointist")

_DIRECTION_SUFFIXES = ("", "_reverse")


def gru_param_count(in_features: int, hidden_size: int, num_layers: int = 1) -> int:
    """Number of trainable parameters of a bidirectional PyTorch ``nn.GRU`` of these sizes."""
    total = 0
    for layer in range(num_layers):
        layer_in = in_features if layer == 0 else 2 * hidden_size
        per_direction = 3 * hidden_size * layer_in + 3 * hidden_size * hidden_size + 6 * hidden_size
        total += 2 * per_direction
    return total


# --------------------------------------------------------------------------------------------
# The recurrence with a hand-written VJP.
# --------------------------------------------------------------------------------------------


def _split_gates(a: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Splits the last axis (3H) into the r, z, n blocks."""
    return tuple(jnp.split(a, 3, axis=-1))


def _cell(h, x_t, w_hh, b_hh, compute_dtype):
    """One PyTorch GRU step for both directions; returns (h_new, r, z, n, hn).

    ``x_t`` = (xr, xz, xn), each (2, N, H): the input projections of this step.
    """
    xr, xz, xn = x_t
    hh = jnp.einsum("dnh,dhg->dng", h.astype(compute_dtype), w_hh, preferred_element_type=jnp.float32)
    hr, hz, hn = _split_gates(hh + b_hh[:, None, :])
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    # (1 - z) * n + z * h, written with one fewer multiply.
    h_new = n + z * (h - n)
    return h_new, r, z, n, hn


def _forward_scan(xs, w_hh, b_hh, compute_dtype, unroll, save_gates):
    """Runs the recurrence over the leading time axis of ``xs`` = (xr, xz, xn), each (T, 2, N, H)."""
    h0 = jnp.zeros(xs[0].shape[1:], jnp.float32)
    w_c = w_hh.astype(compute_dtype)
    b_f = b_hh.astype(jnp.float32)

    def step(h, x_t):
        h_new, r, z, n, hn = _cell(h, x_t, w_c, b_f, compute_dtype)
        return h_new, ((h_new, r, z, n, hn) if save_gates else h_new)

    _, ys = jax.lax.scan(step, h0, xs, unroll=unroll)
    return ys


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _recurrence(xr, xz, xn, w_hh, b_hh, compute_dtype, unroll):
    """Hidden states (T, 2, N, H) float32 of the GRU recurrence.

    ``xr``, ``xz``, ``xn`` (T, 2, N, H) float32 are the input projections of the three gates
    *including* ``b_ih``, the reverse direction's already time-reversed. They come as three
    arrays, not one (T, 2, N, 3H): slicing the gates out of one array inside the loop made XLA's
    CPU gate fusion 1.4x (N=2) to 1.5x (N=39) slower per step. ``w_hh`` (2, H, 3H), ``b_hh`` (2, 3H).
    """
    return _forward_scan((xr, xz, xn), w_hh, b_hh, compute_dtype, unroll, save_gates=False)


def _recurrence_fwd(xr, xz, xn, w_hh, b_hh, compute_dtype, unroll):
    hs, r, z, n, hn = _forward_scan((xr, xz, xn), w_hh, b_hh, compute_dtype, unroll, save_gates=True)
    return hs, (hs, r, z, n, hn, w_hh, b_hh)


def _recurrence_bwd(compute_dtype, unroll, residuals, g):
    hs, r, z, n, hn, w_hh, b_hh = residuals
    # dh_prev needs dgh @ W_hh^T. Contracting over W_hh's last axis inside the loop made XLA's CPU
    # dot 2.2x slower per step than a row-major (3H, H) operand, so transpose once, outside.
    w_t = jnp.swapaxes(w_hh, 1, 2).astype(compute_dtype)
    h_prev = jnp.concatenate([jnp.zeros_like(hs[:1]), hs[:-1]], axis=0)

    def step(dh_next, inputs):
        h_prev_t, r_t, z_t, n_t, hn_t, g_t = inputs
        dh = dh_next + g_t
        dz = dh * (h_prev_t - n_t)
        da_n = dh * (1.0 - z_t) * (1.0 - n_t * n_t)
        da_r = da_n * hn_t * r_t * (1.0 - r_t)
        da_z = dz * z_t * (1.0 - z_t)
        # Gradient w.r.t. the pre-activations fed by the hidden projection: identical to the
        # input-projection one except the n block, which is scaled by r.
        dgh = jnp.concatenate([da_r, da_z, da_n * r_t], axis=-1)
        dh_prev = dh * z_t + jnp.einsum(
            "dng,dgh->dnh", dgh.astype(compute_dtype), w_t, preferred_element_type=jnp.float32
        )
        # dgh is materialised for the dot anyway; the input-gate gradients equal it except in
        # the n block, so only da_n is emitted besides it.
        return dh_prev, (dgh, da_n)

    dh0 = jnp.zeros_like(hs[0])
    _, (dgh_all, da_n) = jax.lax.scan(
        step, dh0, (h_prev, r, z, n, hn, g.astype(jnp.float32)), reverse=True, unroll=unroll
    )
    da_r, da_z, _ = _split_gates(dgh_all)
    # The W_hh / b_hh gradients are one matmul / reduction over all steps, outside the scan.
    dw_hh = jnp.einsum(
        "tdnh,tdng->dhg",
        h_prev.astype(compute_dtype),
        dgh_all.astype(compute_dtype),
        preferred_element_type=jnp.float32,
    )
    db_hh = jnp.sum(dgh_all, axis=(0, 2))
    return da_r, da_z, da_n, dw_hh.astype(w_hh.dtype), db_hh.astype(b_hh.dtype)


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def bigru_layer(
    x: jax.Array,
    w_ih: jax.Array,
    w_hh: jax.Array,
    b_ih: jax.Array,
    b_hh: jax.Array,
    *,
    compute_dtype=jnp.float32,
    unroll: int = DEFAULT_UNROLL,
) -> jax.Array:
    """One bidirectional GRU layer as a pure function.

    Args:
      x: (N, T, in) inputs.
      w_ih: (2, in, 3H); w_hh: (2, H, 3H); b_ih, b_hh: (2, 3H) — layout in the module docstring.
      compute_dtype: dtype of the matmuls (gate math and the carried state stay float32).
      unroll: ``lax.scan`` unroll factor of the forward and backward recurrences.

    Returns:
      (N, T, 2H) = concat[forward, reverse] hidden states, in ``compute_dtype``.
    """
    # Both directions' input projections in one matmul; the reverse direction sees time reversed.
    xp = jnp.einsum(
        "ntc,dcg->tdng",
        x.astype(compute_dtype),
        w_ih.astype(compute_dtype),
        preferred_element_type=jnp.float32,
    ) + b_ih.astype(jnp.float32)[None, :, None, :]
    xp = jnp.stack([xp[:, 0], xp[::-1, 1]], axis=1)
    hs = _recurrence(*_split_gates(xp), w_hh, b_hh, compute_dtype, unroll)  # (T, 2, N, H)
    out = jnp.concatenate([hs[:, 0], hs[::-1, 1]], axis=-1)  # (T, N, 2H)
    return jnp.swapaxes(out, 0, 1).astype(compute_dtype)


# --------------------------------------------------------------------------------------------
# Initialisation.
# --------------------------------------------------------------------------------------------


def _uniform(key, shape, bound, dtype):
    return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)


def _init_pytorch(key, in_l, hidden, dtype):
    """PyTorch ``nn.GRU`` defaults: every tensor U(±1/√H)."""
    bound = 1.0 / math.sqrt(hidden)
    k = jax.random.split(key, 4)
    return (
        _uniform(k[0], (2, in_l, 3 * hidden), bound, dtype),
        _uniform(k[1], (2, hidden, 3 * hidden), bound, dtype),
        _uniform(k[2], (2, 3 * hidden), bound, dtype),
        _uniform(k[3], (2, 3 * hidden), bound, dtype),
    )


def _init_jointist(key, in_l, hidden, dtype):
    """Jointist's ``init_gru`` (docs/reference.md §2.1), applied to both directions (docs/deviations.md 20).

    Each gate block of ``weight_ih`` (H, in) gets U(±√(3/in)) — torch's fan_in of a (H, in)
    block is ``in`` — the r and z blocks of ``weight_hh`` get U(±√(3/H)), its n block an
    orthogonal matrix, and both biases are 0.
    """
    k_ih, k_hr, k_hn = jax.random.split(key, 3)
    w_ih = _uniform(k_ih, (2, in_l, 3 * hidden), math.sqrt(3.0 / in_l), dtype)
    w_rz = _uniform(k_hr, (2, hidden, 2 * hidden), math.sqrt(3.0 / hidden), dtype)
    orthogonal = jax.nn.initializers.orthogonal()
    w_n = jnp.stack([orthogonal(k, (hidden, hidden), dtype) for k in jax.random.split(k_hn, 2)])
    w_hh = jnp.concatenate([w_rz, w_n], axis=-1)
    zeros = jnp.zeros((2, 3 * hidden), dtype)
    return w_ih, w_hh, zeros, zeros


class BiGRULayer(nnx.Module):
    """Parameters of one bidirectional layer (layout and PyTorch mapping: module docstring)."""

    def __init__(self, in_features: int, hidden_size: int, *, init: str, param_dtype, rngs: nnx.Rngs):
        init_fn = _init_pytorch if init == "pytorch" else _init_jointist
        w_ih, w_hh, b_ih, b_hh = init_fn(rngs.params(), in_features, hidden_size, param_dtype)
        self.w_ih = nnx.Param(w_ih)
        self.w_hh = nnx.Param(w_hh)
        self.b_ih = nnx.Param(b_ih)
        self.b_hh = nnx.Param(b_hh)


class BiGRU(nnx.Module):
    """Bidirectional multi-layer GRU equal to PyTorch ``nn.GRU(bidirectional=True, batch_first=True)``.

    Args:
      in_features: input feature size of the first layer.
      hidden_size: H; the output has 2H features (concat[forward, reverse]).
      num_layers: stacked layers; layer l ≥ 1 consumes the previous 2H concat (no dropout between).
      init: ``"pytorch"`` (torch defaults, U(±1/√H)) or ``"jointist"`` (``init_gru`` on both
        directions, docs/deviations.md 20).
      dtype: compute dtype of the matmuls; the output is returned in it.
      param_dtype: dtype of the parameters.
      remat: recompute each layer's forward in the backward pass instead of storing its gates.
      unroll: ``lax.scan`` unroll factor (speed only; results are identical).
      rngs: parameter initialisation randomness (``rngs.params``).
    """

    def __init__(
        self,
        in_features: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        init: str = "pytorch",
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        remat: bool = False,
        unroll: int = DEFAULT_UNROLL,
        rngs: nnx.Rngs,
    ):
        if init not in INITS:
            raise ValueError(f"BiGRU init must be one of {INITS}, got {init!r}")
        for name, value in (("in_features", in_features), ("hidden_size", hidden_size),
                            ("num_layers", num_layers), ("unroll", unroll)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"BiGRU {name} must be a positive int, got {value!r}")
        self.in_features = in_features
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.remat = remat
        self.unroll = unroll
        self.layers = nnx.List(
            [
                BiGRULayer(in_features if layer == 0 else 2 * hidden_size, hidden_size,
                           init=init, param_dtype=param_dtype, rngs=rngs)
                for layer in range(num_layers)
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, T, in_features) -> (N, T, 2·hidden_size) = concat[forward, reverse], in ``dtype``."""
        if x.ndim != 3 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"BiGRU expects input of shape (N, T, {self.in_features}), got {tuple(x.shape)}"
            )
        layer_fn = functools.partial(bigru_layer, compute_dtype=self.dtype, unroll=self.unroll)
        if self.remat:
            layer_fn = jax.checkpoint(layer_fn)
        for layer in self.layers:
            x = layer_fn(x, layer.w_ih[...], layer.w_hh[...], layer.b_ih[...], layer.b_hh[...])
        return x


# --------------------------------------------------------------------------------------------
# PyTorch weight conversion.
# --------------------------------------------------------------------------------------------


def _expected_torch_shapes(gru: BiGRU) -> dict[str, tuple[int, ...]]:
    shapes = {}
    h3 = 3 * gru.hidden_size
    for layer in range(gru.num_layers):
        in_l = gru.in_features if layer == 0 else 2 * gru.hidden_size
        for sfx in _DIRECTION_SUFFIXES:
            shapes[f"weight_ih_l{layer}{sfx}"] = (h3, in_l)
            shapes[f"weight_hh_l{layer}{sfx}"] = (h3, gru.hidden_size)
            shapes[f"bias_ih_l{layer}{sfx}"] = (h3,)
            shapes[f"bias_hh_l{layer}{sfx}"] = (h3,)
    return shapes


def load_pytorch_weights(gru: BiGRU, tensors: Mapping[str, np.ndarray]) -> None:
    """Sets ``gru``'s parameters from PyTorch ``nn.GRU`` state-dict arrays (in place).

    ``tensors`` maps the bare PyTorch names (``weight_ih_l0``, ``weight_ih_l0_reverse``,
    ``bias_hh_l1``, ...; strip any module prefix first) to arrays. Loading is strict, like
    ``load_state_dict(strict=True)``: a missing key raises ``KeyError`` and a key of the wrong
    shape or an unexpected key raises ``ValueError``, each naming the key. Values are cast to
    the module's ``param_dtype``.
    """
    expected = _expected_torch_shapes(gru)
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise KeyError(f"PyTorch GRU weights are missing key(s) {missing}")
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise ValueError(f"PyTorch GRU weights have unexpected key(s) {unexpected}")
    arrays = {}
    for key, shape in expected.items():
        value = np.asarray(tensors[key])
        if value.shape != shape:
            raise ValueError(
                f"PyTorch GRU weight {key!r} has shape {value.shape}, expected {shape}"
            )
        arrays[key] = value
    for layer_index, layer in enumerate(gru.layers):
        def stacked(kind, transpose, layer_index=layer_index):
            parts = [arrays[f"{kind}_l{layer_index}{sfx}"] for sfx in _DIRECTION_SUFFIXES]
            return jnp.asarray(np.stack([p.T if transpose else p for p in parts]), gru.param_dtype)

        layer.w_ih[...] = stacked("weight_ih", True)
        layer.w_hh[...] = stacked("weight_hh", True)
        layer.b_ih[...] = stacked("bias_ih", False)
        layer.b_hh[...] = stacked("bias_hh", False)


def to_pytorch_weights(gru: BiGRU) -> dict[str, np.ndarray]:
    """The inverse of :func:`load_pytorch_weights`: PyTorch-named NumPy arrays of ``gru``'s parameters."""
    out = {}
    for layer_index, layer in enumerate(gru.layers):
        for d, sfx in enumerate(_DIRECTION_SUFFIXES):
            out[f"weight_ih_l{layer_index}{sfx}"] = np.asarray(layer.w_ih[d]).T.copy()
            out[f"weight_hh_l{layer_index}{sfx}"] = np.asarray(layer.w_hh[d]).T.copy()
            out[f"bias_ih_l{layer_index}{sfx}"] = np.asarray(layer.b_ih[d]).copy()
            out[f"bias_hh_l{layer_index}{sfx}"] = np.asarray(layer.b_hh[d]).copy()
    return out
