"""The instrument-conditioned onsets-and-frames transcriber f_T (docs/reference.md §2.1, docs/deviations.md 3, 20).

Structure, as the reference code has it (module names follow its state-dict keys so a converter
can map ``frame_model.acoustic.conv_block1.conv1.weight`` to ``frame_model.acoustic.conv_block1.conv1``):

* ``bn0``: BatchNorm over the 229 mel bins, applied once per clip;
* ``frame_model`` and ``reg_onset_model``: two independent :class:`BackEnd` s, each an acoustic CNN of
  four FiLM :class:`ConvBlock` s (beta-only, pooling along frequency only) -> ``fc5`` -> ``bn5`` ->
  ReLU -> 2-layer ``language`` biGRU -> ``fc`` -> sigmoid;
* ``frame_gru`` over [frame posteriorgram, stop_gradient(onset posteriorgram)] -> ``frame_fc`` ->
  sigmoid: the final frame posteriorgram.

Tensors are channels-last: log-mel (B, T, F), conv activations (N, T, F, C).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jointist_jax import instruments
from jointist_jax.models.gru import BiGRU

# Channel widths of the reference's two acoustic CNNs (docs/reference.md §2.1, §0 surprise 13).
VARIANTS = {
    "narrow": (48, 64, 96, 128),  # CNN8Dropout: the shipped configs / released checkpoint
    "wide": (64, 128, 256, 512),  # CNN8Dropout_Wide: the README training command
}

# PyTorch momentum 0.01 (every BatchNorm of f_T) in Flax's convention.
_BN_MOMENTUM = 0.99
_BN_EPSILON = 1e-5
_CONV_DROPOUT = 0.2
_DROPOUT = 0.5

_xavier_uniform = jax.nn.initializers.xavier_uniform()


def _uniform(low: float, high: float):
    """Initialiser drawing U(low, high) (jax's ``uniform`` only offers U(0, scale))."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, minval=low, maxval=high)

    return init


def _torch_linear_default(fan_in: int) -> dict:
    """kernel_init/bias_init of an ``nn.Linear`` left at PyTorch's defaults: both U(±1/sqrt(fan_in))."""
    bound = 1.0 / fan_in**0.5
    return dict(kernel_init=_uniform(-bound, bound), bias_init=_uniform(-bound, bound))


def resolve_channels(variant: str | Sequence[int]) -> tuple[int, ...]:
    """The four acoustic-CNN widths for ``variant`` ("narrow", "wide" or an explicit 4-tuple)."""
    if isinstance(variant, str):
        if variant not in VARIANTS:
            raise ValueError(f"Transcriber variant must be one of {sorted(VARIANTS)} or 4 channel "
                             f"widths, got {variant!r}")
        return VARIANTS[variant]
    channels = tuple(int(c) for c in variant)
    if len(channels) != 4 or any(c < 1 for c in channels):
        raise ValueError(f"Transcriber variant as channels must be 4 positive widths, got {variant!r}")
    return channels


def pooled_frequency_bins(n_mels: int, num_blocks: int = 4) -> int:
    """Mel bins left after ``num_blocks`` (1, 2) average poolings with floor division: 229 -> 14."""
    freq = n_mels
    for _ in range(num_blocks):
        freq //= 2
    return freq


def flatten_channels_major(x: jax.Array) -> jax.Array:
    """(N, T, F, C) -> (N, T, C*F) with index c*F + f, the order of PyTorch's (N, T, C, F) flatten.

    ``fc5``'s converted weights expect this order; a plain NHWC reshape would give f*C + c.
    """
    n, t, f, c = x.shape
    return jnp.swapaxes(x, -1, -2).reshape(n, t, c * f)


def _avg_pool_frequency(x: jax.Array) -> jax.Array:
    """avg_pool2d(kernel=(1, 2)) on (N, T, F, C): pairs of frequency bins, an odd last bin dropped."""
    n, t, f, c = x.shape
    half = f // 2
    return x[:, :, : 2 * half, :].reshape(n, t, half, 2, c).mean(axis=3)


class ConvBlock(nnx.Module):
    """conv3x3 -> BN -> +beta1(cond) -> ReLU -> conv3x3 -> BN -> +beta2(cond) -> ReLU -> pool(1,2) -> dropout.

    The FiLM is beta-only (docs/reference.md §0 surprise 5): an additive per-channel bias from the
    condition, broadcast over time and frequency. Its Linear weights start U(-1, 1), bias 0.
    """

    def __init__(self, in_channels: int, out_channels: int, *, condition_size: int = instruments.CONDITION_SIZE,
                 dtype=jnp.float32, param_dtype=jnp.float32, remat: bool = False,
                 bn_momentum: float = _BN_MOMENTUM, rngs: nnx.Rngs):
        conv = functools.partial(nnx.Conv, kernel_size=(3, 3), strides=1, padding=1, use_bias=False,
                                 kernel_init=_xavier_uniform, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        bn = functools.partial(nnx.BatchNorm, out_channels, momentum=bn_momentum, epsilon=_BN_EPSILON,
                               use_fast_variance=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        beta = functools.partial(nnx.Linear, condition_size, out_channels, kernel_init=_uniform(-1.0, 1.0),
                                 bias_init=jax.nn.initializers.zeros, dtype=dtype, param_dtype=param_dtype,
                                 rngs=rngs)
        self.conv1 = conv(in_channels, out_channels)
        self.conv2 = conv(out_channels, out_channels)
        self.bn1 = bn()
        self.bn2 = bn()
        self.beta1 = beta()
        self.beta2 = beta()
        self.dropout = nnx.Dropout(_CONV_DROPOUT, rngs=rngs)
        self.remat = remat

    def __call__(self, x: jax.Array, condition: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x (N, T, F, C_in), condition (N, 40) -> (N, T, F // 2, C_out)."""
        if self.remat:
            # Keep only the block's input for the backward pass and recompute its (N, T, F, C)
            # activations, the largest tensors of the model at 1001 frames x 229 bins.
            return nnx.remat(ConvBlock._forward)(self, x, condition, rngs)
        return self._forward(x, condition, rngs)

    def _forward(self, x, condition, rngs):
        # beta: (N, C) -> (N, 1, 1, C), one bias per (row, channel) over all time-frequency bins.
        x = self.bn1(self.conv1(x)) + self.beta1(condition)[:, None, None, :]
        x = jax.nn.relu(x)
        x = self.bn2(self.conv2(x)) + self.beta2(condition)[:, None, None, :]
        x = jax.nn.relu(x)
        return self.dropout(_avg_pool_frequency(x), rngs=rngs)


class AcousticCNN(nnx.Module):
    """The reference's ``CNN8Dropout`` / ``CNN8Dropout_Wide``: four FiLM :class:`ConvBlock` s."""

    def __init__(self, channels: Sequence[int], *, condition_size: int = instruments.CONDITION_SIZE,
                 dtype=jnp.float32, param_dtype=jnp.float32, remat: bool = False,
                 bn_momentum: float = _BN_MOMENTUM, rngs: nnx.Rngs):
        c1, c2, c3, c4 = channels
        block = functools.partial(ConvBlock, condition_size=condition_size, dtype=dtype,
                                  param_dtype=param_dtype, remat=remat, bn_momentum=bn_momentum, rngs=rngs)
        self.conv_block1 = block(1, c1)
        self.conv_block2 = block(c1, c2)
        self.conv_block3 = block(c2, c3)
        self.conv_block4 = block(c3, c4)

    def __call__(self, x: jax.Array, condition: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x (N, T, F, 1), condition (N, 40) -> (N, T, F // 16, C4)."""
        for block in (self.conv_block1, self.conv_block2, self.conv_block3, self.conv_block4):
            x = block(x, condition, rngs=rngs)
        return x


class BackEnd(nnx.Module):
    """One posteriorgram head: acoustic CNN -> fc5 -> bn5 -> ReLU -> biGRU -> fc -> sigmoid."""

    def __init__(self, channels: Sequence[int], *, n_mels: int, condition_size: int, acoustic_dim: int,
                 gru_hidden: int, num_notes: int, dtype=jnp.float32, param_dtype=jnp.float32,
                 remat: bool = False, bn_momentum: float = _BN_MOMENTUM, rngs: nnx.Rngs):
        flat_dim = channels[-1] * pooled_frequency_bins(n_mels)
        self.acoustic = AcousticCNN(channels, condition_size=condition_size, dtype=dtype,
                                    param_dtype=param_dtype, remat=remat, bn_momentum=bn_momentum, rngs=rngs)
        self.fc5 = nnx.Linear(flat_dim, acoustic_dim, use_bias=False, kernel_init=_xavier_uniform,
                              dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.bn5 = nnx.BatchNorm(acoustic_dim, momentum=bn_momentum, epsilon=_BN_EPSILON,
                                 use_fast_variance=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.language = BiGRU(acoustic_dim, gru_hidden, 2, init="jointist", dtype=dtype,
                              param_dtype=param_dtype, remat=remat, rngs=rngs)
        self.fc = nnx.Linear(2 * gru_hidden, num_notes, kernel_init=_xavier_uniform,
                             bias_init=jax.nn.initializers.zeros, dtype=dtype, param_dtype=param_dtype,
                             rngs=rngs)
        self.acoustic_dropout = nnx.Dropout(_DROPOUT, rngs=rngs)
        self.language_dropout = nnx.Dropout(_DROPOUT, rngs=rngs)

    def __call__(self, x: jax.Array, condition: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x (N, T, F, 1) normalised log-mel, condition (N, 40) -> posteriorgram (N, T, notes), float32."""
        x = flatten_channels_major(self.acoustic(x, condition, rngs=rngs))
        # bn5 is BatchNorm1d over the acoustic_dim features; statistics over rows and frames.
        x = jax.nn.relu(self.bn5(self.fc5(x)))
        x = self.acoustic_dropout(x, rngs=rngs)
        x = self.language_dropout(self.language(x), rngs=rngs)
        return jax.nn.sigmoid(self.fc(x).astype(jnp.float32))


class Transcriber(nnx.Module):
    """FiLM onsets-and-frames transcriber: log-mel + instrument conditions -> onset/frame posteriorgrams.

    Args:
      variant: "narrow" (48-64-96-128, 10,097,138 parameters, the default), "wide"
        (64-128-256-512, 26,862,674) or 4 explicit acoustic-CNN channel widths.
      n_mels: log-mel bins of the input (the first BatchNorm has one channel per bin).
      condition_size: length of the one-hot condition (40: 39 classes + Empty).
      acoustic_dim: width of ``fc5`` and the language GRU input.
      gru_hidden: hidden size per direction of every GRU.
      num_notes: piano keys of the output (88: A0..C8).
      dtype: compute dtype; parameters stay ``param_dtype`` and outputs are float32.
      remat: rematerialise the conv blocks and the GRUs in the backward pass.
      output_prior: 0 (the reference) leaves the sigmoid output layers' biases at their default
        initialisation, so every posteriorgram starts near 0.5. A value in (0, 1) starts the
        biases of ``frame_model.fc``, ``reg_onset_model.fc`` and ``frame_fc`` at
        ``logit(output_prior)``: the posteriorgrams start near the notes' base rate, which avoids
        the large first gradients that otherwise stall a small model (README, "Learning").
      bn_momentum: every BatchNorm's running-statistics decay, Flax convention (0.99 = PyTorch
        momentum 0.01, the reference). Lower values let the running statistics used at inference
        follow weights that change quickly, in short runs.
      rngs: parameter initialisation and default dropout randomness.
    """

    def __init__(self, variant: str | Sequence[int] = "narrow", *, n_mels: int = 229,
                 condition_size: int = instruments.CONDITION_SIZE, acoustic_dim: int = 768,
                 gru_hidden: int = 256, num_notes: int = 88, dtype=jnp.float32, param_dtype=jnp.float32,
                 remat: bool = False, output_prior: float = 0.0, bn_momentum: float = _BN_MOMENTUM,
                 rngs: nnx.Rngs):
        channels = resolve_channels(variant)
        if not 0.0 <= bn_momentum < 1.0:
            raise ValueError(f"Transcriber bn_momentum must be in [0, 1), got {bn_momentum}")
        if not 0.0 <= output_prior < 1.0:
            raise ValueError(f"Transcriber output_prior must be 0 (off) or a probability in (0, 1), "
                             f"got {output_prior}")
        if pooled_frequency_bins(n_mels) < 1:
            raise ValueError(f"Transcriber n_mels must be >= 16 (four halvings of the frequency axis), got {n_mels}")
        self.channels = channels
        self.n_mels = n_mels
        self.condition_size = condition_size
        self.num_notes = num_notes
        self.dtype = dtype
        # bn0 normalises the raw log-mel (values around -20..5): run it in float32 so bfloat16
        # compute does not lose the small deviations from a large per-bin mean.
        self.bn0 = nnx.BatchNorm(n_mels, momentum=bn_momentum, epsilon=_BN_EPSILON, use_fast_variance=False,
                                 dtype=jnp.float32, param_dtype=param_dtype, rngs=rngs)
        backend = functools.partial(BackEnd, channels, n_mels=n_mels, condition_size=condition_size,
                                    acoustic_dim=acoustic_dim, gru_hidden=gru_hidden, num_notes=num_notes,
                                    dtype=dtype, param_dtype=param_dtype, remat=remat, bn_momentum=bn_momentum,
                                    rngs=rngs)
        self.frame_model = backend()
        self.reg_onset_model = backend()
        self.frame_gru = BiGRU(2 * num_notes, gru_hidden, 1, init="pytorch", dtype=dtype,
                               param_dtype=param_dtype, remat=remat, rngs=rngs)
        self.frame_fc = nnx.Linear(2 * gru_hidden, num_notes, dtype=dtype, param_dtype=param_dtype,
                                   rngs=rngs, **_torch_linear_default(2 * gru_hidden))
        self.frame_dropout = nnx.Dropout(_DROPOUT, rngs=rngs)
        if output_prior > 0.0:
            logit = math.log(output_prior / (1.0 - output_prior))
            for layer in (self.frame_model.fc, self.reg_onset_model.fc, self.frame_fc):
                layer.bias[...] = jnp.full_like(layer.bias[...], logit)

    def __call__(self, logmel: jax.Array, conditions: jax.Array, *,
                 rngs: nnx.Rngs | None = None) -> dict[str, jax.Array]:
        """Onset and frame posteriorgrams for every (clip, condition) pair.

        Args:
          logmel: (B, T, n_mels) log-mel features (``jointist_jax.audio.log_mel``).
          conditions: (B, K, condition_size) one-hot instrument conditions, K >= 1.
          rngs: per-call dropout randomness (train mode); None uses the modules' own streams.

        Returns:
          ``reg_onset_output`` and ``frame_output``, each (B, K, T, num_notes) float32 in [0, 1].
        """
        self._check_inputs(logmel, conditions)
        b, t, f = logmel.shape
        k = conditions.shape[1]
        # bn0 once per clip: each clip appears K times in the reference's batch, which leaves the
        # batch mean and variance unchanged, so normalising before broadcasting is equivalent.
        x = self.bn0(logmel.astype(jnp.float32)).astype(self.dtype)
        x = jnp.broadcast_to(x[:, None], (b, k, t, f)).reshape(b * k, t, f, 1)
        cond = conditions.reshape(b * k, -1).astype(self.dtype)

        frame_output_1 = self.frame_model(x, cond, rngs=rngs)
        reg_onset_output = self.reg_onset_model(x, cond, rngs=rngs)
        # The onset stream is detached: the frame stack must not train the onset model (§2.1 step 5).
        stacked = jnp.concatenate([frame_output_1, jax.lax.stop_gradient(reg_onset_output)], axis=-1)
        y = self.frame_dropout(self.frame_gru(stacked.astype(self.dtype)), rngs=rngs)
        frame_output = jax.nn.sigmoid(self.frame_fc(y).astype(jnp.float32))
        return {
            "reg_onset_output": reg_onset_output.reshape(b, k, t, self.num_notes),
            "frame_output": frame_output.reshape(b, k, t, self.num_notes),
        }

    def _check_inputs(self, logmel: jax.Array, conditions: jax.Array) -> None:
        if logmel.ndim != 3 or logmel.shape[-1] != self.n_mels or logmel.shape[1] < 1:
            raise ValueError(f"Transcriber logmel must be (batch, frames >= 1, {self.n_mels}), "
                             f"got shape {tuple(logmel.shape)}")
        if conditions.ndim != 3 or conditions.shape[-1] != self.condition_size or conditions.shape[1] < 1:
            raise ValueError(f"Transcriber conditions must be (batch, K >= 1, {self.condition_size}), "
                             f"got shape {tuple(conditions.shape)}")
        if conditions.shape[0] != logmel.shape[0]:
            raise ValueError(f"Transcriber conditions batch {conditions.shape[0]} != logmel batch "
                             f"{logmel.shape[0]}")
