"""The instrument recognizer f_IR: CNN14 -> 1x1 conv -> pre-LN transformer with a CLS token.

Reference: ``CombinedModel_NewCLSv2`` + ``CNN14`` + ``MusicTaggingTransformer`` (docs/reference.md §1.3,
§2.2, docs/deviations.md 4). Log-mel (B, T, 229) -> ``backbone`` (bn0 over mel bins, six conv blocks with
(2, 2) average pooling, each followed by dropout 0.2) -> (B, 15, 3, 2048) for 1001 frames ->
channel-major flatten to 6144 per time step -> ``conv`` (the reference's Conv1d(6144, 256, 1), a
Dense) -> ``encoder`` (CLS + learned positions, dropout, 4 pre-LN layers, no final LayerNorm) ->
CLS token -> dropout 0.5 -> ``linear_class`` -> 39 logits. 80,348,465 parameters at full size.

Attribute names follow the reference's state-dict keys so a converter maps them one to one:
``backbone.bn0``, ``backbone.blocks[i]`` (= ``feature_extractor.{2i}``: the odd entries of the
reference's Sequential are its Dropouts), ``conv``, ``encoder.cls_token``,
``encoder.pos_embedding``, ``encoder.layers[i].attention_norm`` / ``.attention.to_qkv`` /
``.attention.to_out`` / ``.feed_forward_norm`` / ``.feed_forward.net0`` / ``.net3``, and
``linear_class``.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jointist_jax import instruments

# PyTorch BatchNorm2d default momentum 0.1 (every BN of CNN14) in Flax's convention.
_BN_MOMENTUM = 0.9
_EPSILON = 1e-5
_xavier_uniform = jax.nn.initializers.xavier_uniform()
_standard_normal = jax.nn.initializers.normal(stddev=1.0)


def _uniform(bound: float):
    """Initialiser drawing U(-bound, bound)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

    return init


def _torch_linear(in_features: int, out_features: int, *, use_bias: bool = True, dtype, param_dtype,
                  rngs: nnx.Rngs) -> nnx.Linear:
    """A Dense initialised like PyTorch's default ``nn.Linear``/``Conv1d``: weight and bias U(±1/sqrt(fan_in))."""
    bound = 1.0 / in_features**0.5
    return nnx.Linear(in_features, out_features, use_bias=use_bias, kernel_init=_uniform(bound),
                      bias_init=_uniform(bound), dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def pooled_size(size: int, num_blocks: int) -> int:
    """Length left after ``num_blocks`` floor-halvings: 1001 -> 15 and 229 -> 3 for six blocks."""
    for _ in range(num_blocks):
        size //= 2
    return size


def _avg_pool_2x2(x: jax.Array) -> jax.Array:
    """avg_pool2d(kernel=(2, 2)) on (N, T, F, C); an odd last row/column is dropped (floor)."""
    n, t, f, c = x.shape
    t2, f2 = t // 2, f // 2
    return x[:, : 2 * t2, : 2 * f2, :].reshape(n, t2, 2, f2, 2, c).mean(axis=(2, 4))


class ConvBlock(nnx.Module):
    """CNN14 block: conv3x3 -> BN -> ReLU -> conv3x3 -> BN -> ReLU -> avg-pool (2, 2) -> dropout.

    The dropout is the ``nn.Dropout(0.2)`` that follows each block in the reference's
    ``feature_extractor`` Sequential. Convs have no bias and start xavier-uniform; BN 1/0.
    """

    def __init__(self, in_channels: int, out_channels: int, *, dropout: float = 0.2, dtype=jnp.float32,
                 param_dtype=jnp.float32, remat: bool = False, rngs: nnx.Rngs):
        conv = functools.partial(nnx.Conv, kernel_size=(3, 3), strides=1, padding=1, use_bias=False,
                                 kernel_init=_xavier_uniform, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        bn = functools.partial(nnx.BatchNorm, out_channels, momentum=_BN_MOMENTUM, epsilon=_EPSILON,
                               use_fast_variance=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = conv(in_channels, out_channels)
        self.bn1 = bn()
        self.conv2 = conv(out_channels, out_channels)
        self.bn2 = bn()
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.remat = remat

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x (N, T, F, C_in) -> (N, T // 2, F // 2, C_out)."""
        if self.remat:
            return nnx.remat(ConvBlock._forward)(self, x, rngs)
        return self._forward(x, rngs)

    def _forward(self, x, rngs):
        x = jax.nn.relu(self.bn1(self.conv1(x)))
        x = jax.nn.relu(self.bn2(self.conv2(x)))
        return self.dropout(_avg_pool_2x2(x), rngs=rngs)


class CNN14(nnx.Module):
    """The recognizer's backbone: BatchNorm over mel bins, then one :class:`ConvBlock` per width."""

    def __init__(self, channels: Sequence[int], *, n_mels: int, dropout: float = 0.2, dtype=jnp.float32,
                 param_dtype=jnp.float32, remat: bool = False, rngs: nnx.Rngs):
        # bn0 sees the raw log-mel (about -23..5): kept in float32 even for bfloat16 compute.
        self.bn0 = nnx.BatchNorm(n_mels, momentum=_BN_MOMENTUM, epsilon=_EPSILON, use_fast_variance=False,
                                 dtype=jnp.float32, param_dtype=param_dtype, rngs=rngs)
        widths = [1, *channels]
        self.blocks = nnx.List([
            ConvBlock(c_in, c_out, dropout=dropout, dtype=dtype, param_dtype=param_dtype, remat=remat, rngs=rngs)
            for c_in, c_out in zip(widths[:-1], widths[1:])
        ])
        self.dtype = dtype

    def __call__(self, logmel: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """logmel (B, T, n_mels) -> feature map (B, T', F', C_last), T' and F' halved per block."""
        x = self.bn0(logmel.astype(jnp.float32)).astype(self.dtype)[..., None]
        for block in self.blocks:
            x = block(x, rngs=rngs)
        return x


class Attention(nnx.Module):
    """Multi-head self-attention as the reference's ``Attention``: no bias on qkv, no attention dropout.

    ``to_qkv`` output columns are q | k | v, each ``heads * head_dim`` wide and head-major
    (``rearrange('b n (h d) -> b h n d')``): head ``h`` of q is columns ``h*d:(h+1)*d``.
    """

    def __init__(self, dim: int, *, heads: int, dropout: float, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        if dim % heads:
            raise ValueError(f"Attention: d_model ({dim}) must be divisible by the number of heads ({heads})")
        self.heads = heads
        self.head_dim = dim // heads
        self.to_qkv = _torch_linear(dim, 3 * dim, use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.to_out = _torch_linear(dim, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x (B, N, dim) -> (B, N, dim)."""
        b, n, dim = x.shape
        qkv = self.to_qkv(x).reshape(b, n, 3, self.heads, self.head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each (B, N, H, D)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * (self.head_dim ** -0.5)
        # Softmax in float32: bfloat16 exponentials of logits lose too much.
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, n, dim)
        return self.dropout(self.to_out(out), rngs=rngs)


class FeedForward(nnx.Module):
    """Linear -> GELU (exact erf) -> dropout -> Linear -> dropout (the reference's ``net.0`` / ``net.3``)."""

    def __init__(self, dim: int, hidden: int, *, dropout: float, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.net0 = _torch_linear(dim, hidden, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.net3 = _torch_linear(hidden, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dropout1 = nnx.Dropout(dropout, rngs=rngs)
        self.dropout2 = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        x = self.dropout1(jax.nn.gelu(self.net0(x), approximate=False), rngs=rngs)
        return self.dropout2(self.net3(x), rngs=rngs)


class EncoderLayer(nnx.Module):
    """Pre-LN layer: ``x + Attn(LN(x))`` then ``x + FF(LN(x))``; LayerNorm eps 1e-5."""

    def __init__(self, dim: int, *, heads: int, ff_dim: int, dropout: float, dtype=jnp.float32,
                 param_dtype=jnp.float32, remat: bool = False, rngs: nnx.Rngs):
        norm = functools.partial(nnx.LayerNorm, dim, epsilon=_EPSILON, use_fast_variance=False, dtype=dtype,
                                 param_dtype=param_dtype, rngs=rngs)
        self.attention_norm = norm()
        self.attention = Attention(dim, heads=heads, dropout=dropout, dtype=dtype, param_dtype=param_dtype,
                                   rngs=rngs)
        self.feed_forward_norm = norm()
        self.feed_forward = FeedForward(dim, ff_dim, dropout=dropout, dtype=dtype, param_dtype=param_dtype,
                                        rngs=rngs)
        self.remat = remat

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        if self.remat:
            return nnx.remat(EncoderLayer._forward)(self, x, rngs)
        return self._forward(x, rngs)

    def _forward(self, x, rngs):
        x = x + self.attention(self.attention_norm(x), rngs=rngs)
        return x + self.feed_forward(self.feed_forward_norm(x), rngs=rngs)


class Encoder(nnx.Module):
    """The reference's ``MusicTaggingTransformer``: CLS + positions -> dropout -> pre-LN layers -> CLS.

    No final LayerNorm. Positions (1, max_len + 1, dim) are sliced to the token count + 1.
    """

    def __init__(self, dim: int, *, heads: int, num_layers: int, ff_dim: int, max_len: int, dropout: float,
                 dtype=jnp.float32, param_dtype=jnp.float32, remat: bool = False, rngs: nnx.Rngs):
        self.cls_token = nnx.Param(_standard_normal(rngs.params(), (dim,), param_dtype))
        self.pos_embedding = nnx.Param(_standard_normal(rngs.params(), (1, max_len + 1, dim), param_dtype))
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.layers = nnx.List([
            EncoderLayer(dim, heads=heads, ff_dim=ff_dim, dropout=dropout, dtype=dtype, param_dtype=param_dtype,
                         remat=remat, rngs=rngs)
            for _ in range(num_layers)
        ])
        self.max_len = max_len
        self.dtype = dtype

    def __call__(self, tokens: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """tokens (B, N, dim) -> CLS output (B, dim)."""
        b, n, dim = tokens.shape
        if n > self.max_len:
            raise ValueError(f"Recognizer: {n} time tokens exceed the {self.max_len} learned positions; "
                             f"feed shorter log-mel windows")
        cls = jnp.broadcast_to(self.cls_token[...].astype(self.dtype), (b, 1, dim))
        x = jnp.concatenate([cls, tokens.astype(self.dtype)], axis=1)
        x = x + self.pos_embedding[:, : n + 1].astype(self.dtype)
        x = self.dropout(x, rngs=rngs)
        for layer in self.layers:
            x = layer(x, rngs=rngs)
        return x[:, 0]


class Recognizer(nnx.Module):
    """Instrument recognizer f_IR: log-mel (B, T, n_mels) -> 39 instrument logits (B, 39) float32.

    Args:
      channels: CNN14 block widths (six blocks at full size).
      n_mels: mel bins of the input (229).
      d_model, num_heads, num_layers, ff_dim: transformer sizes (256, 8, 4, 1024).
      max_len: learned positions for time tokens (512; the table has max_len + 1 rows with CLS).
      num_classes: logits (39: the 40 conditions minus ``Empty``).
      backbone_dropout, dropout, head_dropout: 0.2 after each conv block, 0.1 in the transformer,
        0.5 before ``linear_class``.
      dtype: compute dtype; parameters stay ``param_dtype`` and logits are float32.
      remat: rematerialise conv blocks and transformer layers in the backward pass.
    """

    def __init__(self, *, channels: Sequence[int] = (64, 128, 256, 512, 1024, 2048), n_mels: int = 229,
                 d_model: int = 256, num_heads: int = 8, num_layers: int = 4, ff_dim: int = 1024,
                 max_len: int = 512, num_classes: int = instruments.NUM_CLASSES, backbone_dropout: float = 0.2,
                 dropout: float = 0.1, head_dropout: float = 0.5, dtype=jnp.float32, param_dtype=jnp.float32,
                 remat: bool = False, rngs: nnx.Rngs):
        channels = tuple(int(c) for c in channels)
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"Recognizer: channels must be positive widths, got {channels!r}")
        self.freq_bins = pooled_size(n_mels, len(channels))
        if self.freq_bins < 1:
            raise ValueError(f"Recognizer: {n_mels} mel bins vanish after {len(channels)} (2, 2) poolings")
        self.n_mels = n_mels
        self.num_blocks = len(channels)
        self.backbone = CNN14(channels, n_mels=n_mels, dropout=backbone_dropout, dtype=dtype,
                              param_dtype=param_dtype, remat=remat, rngs=rngs)
        self.conv = _torch_linear(channels[-1] * self.freq_bins, d_model, dtype=dtype, param_dtype=param_dtype,
                                  rngs=rngs)
        self.encoder = Encoder(d_model, heads=num_heads, num_layers=num_layers, ff_dim=ff_dim, max_len=max_len,
                               dropout=dropout, dtype=dtype, param_dtype=param_dtype, remat=remat, rngs=rngs)
        self.head_dropout = nnx.Dropout(head_dropout, rngs=rngs)
        self.linear_class = _torch_linear(d_model, num_classes, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def num_tokens(self, frames: int) -> int:
        """Time tokens the transformer sees for ``frames`` log-mel frames (15 for 1001)."""
        return pooled_size(frames, self.num_blocks)

    def __call__(self, logmel: jax.Array, *, rngs: nnx.Rngs | None = None,
                 return_features: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
        """Logits (B, num_classes) float32 from log-mel (B, T, n_mels).

        With ``return_features=True`` also returns the backbone feature map (B, T', F', C_last)
        float32 (the reference's ``backbone_feat``, channels-last).
        """
        if logmel.ndim != 3 or logmel.shape[-1] != self.n_mels:
            raise ValueError(f"Recognizer: log-mel must be (batch, frames, {self.n_mels}), got {logmel.shape}")
        if self.num_tokens(logmel.shape[1]) < 1:
            raise ValueError(f"Recognizer: {logmel.shape[1]} frames vanish after {self.num_blocks} (2, 2) "
                             f"poolings; need at least {2 ** self.num_blocks}")
        features = self.backbone(logmel, rngs=rngs)  # (B, T', F', C)
        b, t, f, c = features.shape
        # The reference flattens (C, F) per time step with channel-major order: index c * F + f.
        tokens = jnp.swapaxes(features, -1, -2).reshape(b, t, c * f)
        cls = self.encoder(self.conv(tokens), rngs=rngs)
        logits = self.linear_class(self.head_dropout(cls, rngs=rngs)).astype(jnp.float32)
        if return_features:
            return logits, features.astype(jnp.float32)
        return logits
