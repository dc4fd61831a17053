"""Instrument-conditioned FiLM U-Net source separator (Jointist f_MSS), docs/reference.md §2.3.

Two variants, selected by ``mode``:

* ``"sum"`` is the reference ``TCondUNet(mode='sum')`` used in joint training: the transcriber's frame
  posteriorgram is projected to the STFT bins (``roll2nfft``) and added to the mixture magnitude
  *before* ``bn0``. STFT hop 160.
* ``"standalone"`` is the reference ``CondUNet`` (the "S" baseline): no roll input, STFT hop 320
  (hard-coded in the reference, docs/reference.md §1.5 / §10.25).

Data flow for a batch of B clips with K conditions each: the mixture STFT is computed once per clip and
broadcast to its K conditions; from there on the U-Net runs on B·K rows (NHWC: time × frequency ×
channels). The network predicts a sigmoid mask over the mixture magnitude; the separated waveform is
the inverse STFT of ``mask · |X|`` with the mixture phase.

Submodule names follow the reference state-dict keys (``unet_base.`` dropped, ``unet_film.`` → ``film.``)
so that a weight converter is a mechanical mapping:
``bn0``, ``roll2nfft``, ``encoder_block{i}.conv_block.{conv1,bn1,conv2,bn2}``, ``conv_block7.*``,
``decoder_block{i}.conv1`` (the transposed conv), ``decoder_block{i}.bn1``,
``decoder_block{i}.conv_block2.*``, ``after_conv_block1.*``, ``after_conv2``,
``film.{block}_beta{1,2}``. Layouts: 3×3/1×1 conv kernels are Flax HWIO (PyTorch OIHW → transpose
(2, 3, 1, 0)); the transposed-conv kernels keep PyTorch's (in, out, 2, 2) exactly; Linear kernels are
(in, out) (PyTorch weight transposed); BatchNorm ``scale/bias/mean/var`` = ``weight/bias/running_mean/
running_var``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jointist_jax import instruments
from jointist_jax.audio import istft, magnitude, stft
from jointist_jax.music import HOP_SAMPLES, NUM_PITCHES

MODES = ("sum", "standalone")
# The reference's full-size separator; configs/defaults.py's "full" preset reads these.
# STFT hop per mode, as the reference codes it (TCondUNet reads SS_STFT.yaml: the roll frame hop, so
# its STFT frames are the frame posteriorgram's; CondUNet hard-codes 320).
DEFAULT_HOPS = {"sum": HOP_SAMPLES, "standalone": 320}
DEFAULT_CHANNELS = (32, 64, 128, 256, 384, 384)
# PyTorch BatchNorm momentum 0.01 everywhere in the separator; Flax's momentum is 1 - PyTorch's.
_BN_MOMENTUM = 1.0 - 0.01
_BN_EPSILON = 1e-5
_LEAKY_SLOPE = 0.01

_xavier = nnx.initializers.xavier_uniform()
_zeros = nnx.initializers.zeros_init()
_ones = nnx.initializers.ones_init()


def _symmetric_uniform(bound: float) -> Callable[..., jax.Array]:
    """Initializer drawing from U(-bound, bound): PyTorch's default for Linear/Conv weights and biases."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

    return init


def _batch_norm(features: int, *, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.BatchNorm:
    # Statistics stay float32 under bfloat16 compute: Flax's BatchNorm reduces in at least float32 and
    # stores its running averages in float32.
    return nnx.BatchNorm(
        features,
        momentum=_BN_MOMENTUM,
        epsilon=_BN_EPSILON,
        use_fast_variance=False,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


def conv_transpose_2x2(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Transposed convolution with kernel 2×2, stride 2, no padding and no bias, channels-last.

    Args:
      x: (N, H, W, C_in).
      kernel: (C_in, C_out, 2, 2), PyTorch ``ConvTranspose2d`` weight layout.

    Returns:
      (N, 2H, 2W, C_out) with ``out[n, 2i + a, 2j + b, o] = Σ_c x[n, i, j, c] · kernel[c, o, a, b]``.

    With stride equal to the kernel size the output blocks do not overlap, so the op is one matmul
    per input pixel followed by a depth-to-space reshape. This is several times faster on CPU than
    ``lax.conv_transpose``, which runs it as a convolution over a zero-dilated input (see
    ``benchmarks/conv_transpose.py``).
    """
    n, h, w, c = x.shape
    if kernel.ndim != 4 or kernel.shape[0] != c or kernel.shape[2:] != (2, 2):
        raise ValueError(
            f"conv_transpose_2x2: kernel must have shape ({c}, C_out, 2, 2) for input channels {c}, "
            f"got {kernel.shape}"
        )
    c_out = kernel.shape[1]
    # One (N·H·W, C_in) × (C_in, 2·2·C_out) matmul, then depth-to-space. Written as an explicit matmul
    # plus transpose: XLA:CPU ran the equivalent single einsum ("nhwc,coab->nhawbo") about 1.7× slower.
    blocks = x.reshape(n * h * w, c) @ jnp.transpose(kernel, (0, 2, 3, 1)).reshape(c, 4 * c_out)
    blocks = blocks.reshape(n, h, w, 2, 2, c_out).transpose(0, 1, 3, 2, 4, 5)
    return blocks.reshape(n, 2 * h, 2 * w, c_out)


def _avg_pool_2x2(x: jax.Array) -> jax.Array:
    # Input sizes are always even here (time padded to a multiple of 2**depth, frequency checked).
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class ConvTranspose2x2(nnx.Module):
    """``ConvTranspose2d(in, out, kernel=2, stride=2, padding=0, bias=False)`` with PyTorch's default init.

    ``kernel`` keeps PyTorch's (in, out, 2, 2) layout so converted weights copy over unchanged.
    PyTorch's default (``kaiming_uniform(a=√5)``) computes fan_in from dimension 1 of the weight,
    which for a transposed conv is ``out · 2 · 2``; the bound is therefore 1/√(4·out).
    """

    def __init__(self, in_features: int, out_features: int, *, dtype=jnp.float32,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        bound = 1.0 / math.sqrt(out_features * 4)
        self.kernel = nnx.Param(
            _symmetric_uniform(bound)(rngs.params(), (in_features, out_features, 2, 2), param_dtype)
        )
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, H, W, in) → (N, 2H, 2W, out)."""
        return conv_transpose_2x2(x.astype(self.dtype), self.kernel[...].astype(self.dtype))


def _conv_block_forward(block: "FiLMConvBlock", x, beta1, beta2):
    # β-only FiLM (γ ≡ 1): the condition's bias is added after BN and before the activation.
    x = block.bn1(block.conv1(x)) + beta1[:, None, None, :]
    x = jax.nn.leaky_relu(x, _LEAKY_SLOPE)
    x = block.bn2(block.conv2(x)) + beta2[:, None, None, :]
    return jax.nn.leaky_relu(x, _LEAKY_SLOPE)


class FiLMConvBlock(nnx.Module):
    """[conv3×3 (no bias) → BN → + β → leaky_relu(0.01)] × 2: the reference separation ``ConvBlock``."""

    def __init__(self, in_features: int, out_features: int, *, dtype=jnp.float32,
                 param_dtype=jnp.float32, remat: bool = False, rngs: nnx.Rngs):
        conv = dict(kernel_size=(3, 3), padding="SAME", use_bias=False, kernel_init=_xavier,
                    dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = nnx.Conv(in_features, out_features, **conv)
        self.bn1 = _batch_norm(out_features, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv2 = nnx.Conv(out_features, out_features, **conv)
        self.bn2 = _batch_norm(out_features, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.remat = remat

    def __call__(self, x: jax.Array, beta1: jax.Array, beta2: jax.Array) -> jax.Array:
        """x: (N, H, W, in); beta1, beta2: (N, out) FiLM biases → (N, H, W, out)."""
        if self.remat:
            return nnx.remat(_conv_block_forward)(self, x, beta1, beta2)
        return _conv_block_forward(self, x, beta1, beta2)


class EncoderBlock(nnx.Module):
    """FiLM conv block then 2×2 average pooling; returns (pooled, pre-pool skip)."""

    def __init__(self, in_features: int, out_features: int, *, dtype=jnp.float32,
                 param_dtype=jnp.float32, remat: bool = False, rngs: nnx.Rngs):
        self.conv_block = FiLMConvBlock(in_features, out_features, dtype=dtype,
                                        param_dtype=param_dtype, remat=remat, rngs=rngs)

    def __call__(self, x, beta1, beta2) -> tuple[jax.Array, jax.Array]:
        """(N, H, W, in) → ((N, H/2, W/2, out), (N, H, W, out))."""
        skip = self.conv_block(x, beta1, beta2)
        return _avg_pool_2x2(skip), skip


class DecoderBlock(nnx.Module):
    """Transposed conv (k2, s2) → BN → leaky_relu (no FiLM), concat the skip, then a FiLM conv block."""

    def __init__(self, in_features: int, out_features: int, *, dtype=jnp.float32,
                 param_dtype=jnp.float32, remat: bool = False, rngs: nnx.Rngs):
        # Named conv1/bn1/conv_block2 like the reference keys; the reference never runs this block's
        # init_weights, so the transposed conv and bn1 keep PyTorch defaults.
        self.conv1 = ConvTranspose2x2(in_features, out_features, dtype=dtype,
                                      param_dtype=param_dtype, rngs=rngs)
        self.bn1 = _batch_norm(out_features, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv_block2 = FiLMConvBlock(2 * out_features, out_features, dtype=dtype,
                                         param_dtype=param_dtype, remat=remat, rngs=rngs)

    def __call__(self, x, skip, beta1, beta2) -> jax.Array:
        """x: (N, H, W, in), skip: (N, 2H, 2W, out) → (N, 2H, 2W, out)."""
        x = jax.nn.leaky_relu(self.bn1(self.conv1(x)), _LEAKY_SLOPE)
        # Upsampled features first, skip second: the channel order the reference's weights expect.
        x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
        return self.conv_block2(x, beta1, beta2)


def block_channels(channels: Sequence[int]) -> dict[str, int]:
    """Output width of every FiLM-conditioned block, in forward order, keyed by reference block name."""
    widths = {f"encoder_block{i + 1}": c for i, c in enumerate(channels)}
    widths["conv_block7"] = channels[-1]
    widths.update({f"decoder_block{i + 1}": c for i, c in enumerate(reversed(channels))})
    widths["after_conv_block1"] = channels[0]
    return widths


class SeparatorFiLM(nnx.Module):
    """β generator: ``{block}_beta{1,2} = Linear(condition_size → C_block)``, xavier init, zero bias."""

    def __init__(self, widths: dict[str, int], condition_size: int, *, dtype=jnp.float32,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.names = tuple(widths)
        for name, width in widths.items():
            for j in (1, 2):
                setattr(self, f"{name}_beta{j}", nnx.Linear(
                    condition_size, width, kernel_init=_xavier, bias_init=_zeros,
                    dtype=dtype, param_dtype=param_dtype, rngs=rngs))

    def __call__(self, conditions: jax.Array) -> dict[str, tuple[jax.Array, jax.Array]]:
        """conditions (N, condition_size) → {block: (β1 (N, C), β2 (N, C))}."""
        return {
            name: (getattr(self, f"{name}_beta1")(conditions), getattr(self, f"{name}_beta2")(conditions))
            for name in self.names
        }


class Separator(nnx.Module):
    """FiLM U-Net separator; see the module docstring. Defaults build the full reference model.

    Args:
      mode: ``"sum"`` (TCondUNet, roll input, 21,066,652 params) or ``"standalone"`` (CondUNet,
        21,020,995 params).
      hop: STFT hop; ``None`` → 160 for ``"sum"``, 320 for ``"standalone"``.
      n_fft: STFT size; the U-Net sees ``n_fft // 2`` bins (the top bin is dropped).
      channels: encoder widths; the decoder mirrors them. The U-Net depth is ``len(channels)``.
      condition_size: length of the one-hot condition (40: 39 classes + Empty).
      num_notes: piano-roll width of the ``"sum"`` roll input.
      dtype / param_dtype / remat / rngs: compute dtype (parameters stay ``param_dtype``, outputs
        float32), parameter dtype, rematerialise each conv block, parameter-init randomness.
    """

    def __init__(
        self,
        mode: str = "sum",
        *,
        hop: int | None = None,
        n_fft: int = 1024,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        condition_size: int = instruments.CONDITION_SIZE,
        num_notes: int = NUM_PITCHES,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        remat: bool = False,
        bn_momentum: float = _BN_MOMENTUM,
        rngs: nnx.Rngs,
    ):
        if mode not in MODES:
            raise ValueError(f"Separator: mode must be one of {MODES}, got {mode!r}")
        if not 0.0 <= bn_momentum < 1.0:
            raise ValueError(f"Separator: bn_momentum must be in [0, 1), got {bn_momentum}")
        channels = tuple(int(c) for c in channels)
        if not channels or min(channels) < 1:
            raise ValueError(f"Separator: channels must be a non-empty list of positive widths, "
                             f"got {channels}")
        depth = len(channels)
        if n_fft % (2 * 2**depth):
            raise ValueError(
                f"Separator: n_fft // 2 (the U-Net's frequency size) must be divisible by 2**len(channels) "
                f"= {2**depth}; got n_fft={n_fft}"
            )
        self.mode = mode
        self.hop = DEFAULT_HOPS[mode] if hop is None else int(hop)
        self.n_fft = n_fft
        self.channels = channels
        self.condition_size = condition_size
        self.num_notes = num_notes
        self.dtype = dtype
        bins = n_fft // 2 + 1
        common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)

        self.film = SeparatorFiLM(block_channels(channels), condition_size, **common)
        if mode == "sum":
            # PyTorch Linear default init: U(±1/√fan_in) for weight and bias.
            bound = 1.0 / math.sqrt(num_notes)
            self.roll2nfft = nnx.Linear(num_notes, bins, kernel_init=_symmetric_uniform(bound),
                                        bias_init=_symmetric_uniform(bound), **common)
        else:
            self.roll2nfft = None
        self.bn0 = _batch_norm(bins, **common)

        widths_in = (1,) + channels[:-1]
        for i, (c_in, c_out) in enumerate(zip(widths_in, channels)):
            setattr(self, f"encoder_block{i + 1}", EncoderBlock(c_in, c_out, remat=remat, **common))
        self.conv_block7 = FiLMConvBlock(channels[-1], channels[-1], remat=remat, **common)
        c_in = channels[-1]
        for i, c_out in enumerate(reversed(channels)):
            setattr(self, f"decoder_block{i + 1}", DecoderBlock(c_in, c_out, remat=remat, **common))
            c_in = c_out
        self.after_conv_block1 = FiLMConvBlock(channels[0], channels[0], remat=remat, **common)
        self.after_conv2 = nnx.Conv(channels[0], 1, kernel_size=(1, 1), use_bias=True,
                                    kernel_init=_xavier, bias_init=_zeros, **common)
        # Running-statistics decay of every BatchNorm (Flax convention; 0.99 is the reference's
        # PyTorch momentum 0.01). Short runs use less, so inference's statistics follow the weights.
        for _, module in nnx.iter_modules(self):
            if isinstance(module, nnx.BatchNorm):
                module.momentum = bn_momentum

    # ------------------------------------------------------------------ validation helpers
    def _check_conditions(self, conditions: jax.Array, batch: int) -> None:
        if conditions.ndim != 3 or conditions.shape[0] != batch or conditions.shape[2] != self.condition_size:
            raise ValueError(
                f"Separator: conditions must have shape (B={batch}, K, {self.condition_size}), "
                f"got {conditions.shape}"
            )
        if conditions.shape[1] < 1:
            raise ValueError("Separator: conditions must hold at least one condition per clip (K >= 1)")

    def _check_roll(self, roll: jax.Array | None, batch: int, k: int, frames: int) -> None:
        if self.mode == "standalone":
            if roll is not None:
                raise ValueError("Separator(mode='standalone'): argument `roll` must be None (this model "
                                 "has no roll input)")
            return
        if roll is None:
            raise ValueError("Separator(mode='sum'): argument `roll` is required, shape "
                             f"(B, K, T, {self.num_notes}) with the frame posteriorgram")
        expected = (batch, k, frames, self.num_notes)
        if tuple(roll.shape) != expected:
            raise ValueError(f"Separator(mode='sum'): `roll` must have shape {expected} (T = STFT frames = "
                             f"L // hop + 1), got {tuple(roll.shape)}")

    # ------------------------------------------------------------------ forward
    def mask(self, mix_magnitude: jax.Array, conditions: jax.Array,
             roll: jax.Array | None = None) -> jax.Array:
        """Predicts the separation mask from the mixture magnitude.

        Args:
          mix_magnitude: (B, T, n_fft//2 + 1) mixture STFT magnitude, one per clip.
          conditions: (B, K, condition_size) one-hot conditions.
          roll: (B, K, T, num_notes) frame posteriorgram for ``"sum"``; ``None`` for ``"standalone"``.

        Returns:
          (B, K, T, n_fft//2 + 1) float32 mask in (0, 1); the top bin is always exactly 0.5 (its logit
          is the reference's zero padding, docs/reference.md §10.11).
        """
        bins = self.n_fft // 2 + 1
        if mix_magnitude.ndim != 3 or mix_magnitude.shape[2] != bins:
            raise ValueError(f"Separator.mask: mix_magnitude must have shape (B, T, {bins}), "
                             f"got {mix_magnitude.shape}")
        batch, frames, _ = mix_magnitude.shape
        self._check_conditions(conditions, batch)
        k = conditions.shape[1]
        self._check_roll(roll, batch, k, frames)
        rows = batch * k

        # The mixture is shared by the clip's K conditions: broadcast it only now, to B·K rows.
        x = jnp.broadcast_to(mix_magnitude[:, None], (batch, k, frames, bins)).reshape(rows, frames, bins)
        if self.roll2nfft is not None:
            x = x + self.roll2nfft(roll.reshape(rows, frames, self.num_notes))
        x = self.bn0(x.astype(self.dtype))  # frequency bins are the BN channels

        # Pad time at the end to a multiple of 2**depth and drop the top bin, so every pooling is exact.
        multiple = 2 ** len(self.channels)
        padded = -(-frames // multiple) * multiple
        x = jnp.pad(x[:, :, : bins - 1], ((0, 0), (0, padded - frames), (0, 0)))[..., None]

        betas = self.film(conditions.reshape(rows, self.condition_size).astype(self.dtype))
        skips = []
        for i in range(len(self.channels)):
            name = f"encoder_block{i + 1}"
            x, skip = getattr(self, name)(x, *betas[name])
            skips.append(skip)
        x = self.conv_block7(x, *betas["conv_block7"])
        for i, skip in enumerate(reversed(skips)):
            name = f"decoder_block{i + 1}"
            x = getattr(self, name)(x, skip, *betas[name])
        x = self.after_conv_block1(x, *betas["after_conv_block1"])
        logits = self.after_conv2(x)[..., 0].astype(jnp.float32)

        logits = jnp.pad(logits[:, :frames], ((0, 0), (0, 0), (0, 1)))
        return jax.nn.sigmoid(logits).reshape(batch, k, frames, bins)

    def __call__(self, waveform: jax.Array, conditions: jax.Array, roll: jax.Array | None = None, *,
                 rngs: nnx.Rngs | None = None) -> dict[str, jax.Array]:
        """Separates the conditioned instruments from each mixture.

        Args:
          waveform: (B, L) float mixture audio at 16 kHz (L > n_fft // 2 for the reflect padding).
          conditions: (B, K, condition_size) one-hot conditions.
          roll: (B, K, T, num_notes) frame posteriorgram (T = L // hop + 1), required for ``"sum"``,
            must be ``None`` for ``"standalone"``.
          rngs: accepted for a uniform model interface; the separator has no dropout.

        Returns:
          ``{"waveform": (B, K, L) float32, "mask": (B, K, T, n_fft//2 + 1) float32}``.
        """
        del rngs  # no stochastic layers (docs/reference.md §2.3)
        if waveform.ndim != 2:
            raise ValueError(f"Separator: waveform must have shape (B, L), got {waveform.shape}")
        batch, length = waveform.shape
        if length <= self.n_fft // 2:
            raise ValueError(f"Separator: waveform length {length} must exceed n_fft // 2 = "
                             f"{self.n_fft // 2} "
                             "(reflect padding of the centred STFT)")
        # Validate everything before the STFT so that bad input fails fast and with a clear message.
        self._check_conditions(conditions, batch)
        self._check_roll(roll, batch, conditions.shape[1], length // self.hop + 1)
        spec = stft(waveform.astype(jnp.float32), n_fft=self.n_fft, hop=self.hop)  # (B, T, F), once per clip
        mix_magnitude = magnitude(spec)
        mask = self.mask(mix_magnitude, conditions, roll)
        # Mask × the ORIGINAL mixture magnitude (not the roll-added input), with the mixture phase.
        phase = jnp.angle(spec)[:, None]
        out_magnitude = mask * mix_magnitude[:, None]
        out_spec = jax.lax.complex(out_magnitude * jnp.cos(phase), out_magnitude * jnp.sin(phase))
        separated = istft(out_spec, n_fft=self.n_fft, hop=self.hop, length=length)
        return {"waveform": separated.astype(jnp.float32), "mask": mask}
