"""Numerical parity of the PyTorch -> JAX weight conversions (jointist_jax.convert).

Layer tests build a torch layer with random weights, convert its tensors with our layout functions
into the JAX layer jointist-jax uses, and compare outputs on random inputs (max abs error <= 1e-5).
Module tests do the same for whole tiny-width transcriber / recognizer / separator-mask networks
written in torch from docs/reference.md §2 with the reference's state-dict names, loaded through the
converter's strict per-module loader. Needs the ``convert`` extra (torch 2.13.0 CPU).
"""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jointist_jax import audio, stages
from jointist_jax.convert import assign, convert, layers, mapping
from jointist_jax.models import gru as gru_lib
from jointist_jax.models.recognizer import Attention, Recognizer
from jointist_jax.models.separator import ConvTranspose2x2, Separator
from jointist_jax.models.transcriber import Transcriber

torch = pytest.importorskip("torch", reason="the converter's tests need the 'convert' extra (torch)")
F = torch.nn.functional


TOL = 1e-5


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _np(t):
    return t.detach().numpy()


def _randomise(module, std=0.5, var_floor=0.1):
    """Random values (normal, ``std``) for every parameter and buffer of a torch module; BN running
    variances are made at least ``var_floor``."""
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.dtype.is_floating_point:
                tensor.copy_(torch.randn_like(tensor) * std)
                if name.endswith("running_var"):
                    tensor.abs_().add_(var_floor)
    return module


def _assert_close(ours, theirs):
    ours, theirs = np.asarray(ours), _np(theirs)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)


@pytest.mark.parametrize("bias, kernel, padding", [(False, 3, 1), (True, 1, 0)])
def test_conv2d_oihw_to_hwio(bias, kernel, padding):
    ref = _randomise(torch.nn.Conv2d(3, 5, kernel, padding=padding, bias=bias))
    ours = nnx.Conv(3, 5, kernel_size=(kernel, kernel), padding=padding, use_bias=bias, rngs=nnx.Rngs(0))
    ours.kernel[...] = layers.to_ours("conv2d", _np(ref.weight))
    if bias:
        ours.bias[...] = layers.to_ours("copy", _np(ref.bias))
    x = torch.randn(2, 3, 7, 9)
    y = ours(jnp.asarray(_np(x).transpose(0, 2, 3, 1)))
    _assert_close(np.asarray(y).transpose(0, 3, 1, 2), ref(x))


def test_conv_transpose_2x2_kernel_orientation():
    ref = _randomise(torch.nn.ConvTranspose2d(4, 3, kernel_size=2, stride=2, padding=0, bias=False))
    ours = ConvTranspose2x2(4, 3, rngs=nnx.Rngs(0))
    ours.kernel[...] = layers.to_ours("conv_transpose2x2", _np(ref.weight))
    x = torch.randn(2, 4, 5, 6)
    y = np.asarray(ours(jnp.asarray(_np(x).transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)
    _assert_close(y, ref(x))
    # The check is sensitive to orientation: a spatially flipped kernel gives different outputs.
    ours.kernel[...] = layers.to_ours("conv_transpose2x2", _np(ref.weight)[:, :, ::-1, ::-1].copy())
    flipped = np.asarray(ours(jnp.asarray(_np(x).transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)
    assert np.abs(flipped - _np(ref(x))).max() > 1e-2


def test_bidirectional_two_layer_gru():
    ref = _randomise(torch.nn.GRU(6, 5, num_layers=2, bidirectional=True, batch_first=True))
    ours = gru_lib.BiGRU(6, 5, 2, rngs=nnx.Rngs(0))
    gru_lib.load_pytorch_weights(ours, {k: _np(v) for k, v in ref.state_dict().items()})
    x = torch.randn(3, 11, 6)
    _assert_close(ours(jnp.asarray(_np(x))), ref(x)[0])


@pytest.mark.parametrize("dims", [2, 4])
def test_batch_norm_eval_mode(dims):
    channels = 7
    ref = _randomise(torch.nn.BatchNorm1d(channels) if dims == 2 else torch.nn.BatchNorm2d(channels)).eval()
    ours = nnx.BatchNorm(channels, momentum=0.99, epsilon=layers.TORCH_NORM_EPSILON, use_fast_variance=False,
                         rngs=nnx.Rngs(0))
    for torch_name, our_name in (("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"),
                                 ("running_var", "var")):
        getattr(ours, our_name)[...] = layers.to_ours("copy", _np(getattr(ref, torch_name)))
    ours.eval()
    x = torch.randn(4, channels) if dims == 2 else torch.randn(2, channels, 5, 3)
    if dims == 2:
        _assert_close(ours(jnp.asarray(_np(x))), ref(x))
    else:
        y = np.asarray(ours(jnp.asarray(_np(x).transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)
        _assert_close(y, ref(x))


def test_linear_out_in_to_in_out():
    ref = _randomise(torch.nn.Linear(7, 4))
    ours = nnx.Linear(7, 4, rngs=nnx.Rngs(0))
    ours.kernel[...] = layers.to_ours("linear", _np(ref.weight))
    ours.bias[...] = layers.to_ours("copy", _np(ref.bias))
    x = torch.randn(3, 2, 7)
    _assert_close(ours(jnp.asarray(_np(x))), ref(x))


def test_pointwise_conv1d_becomes_a_dense_per_time_step():
    ref = _randomise(torch.nn.Conv1d(12, 4, kernel_size=1))
    ours = nnx.Linear(12, 4, rngs=nnx.Rngs(0))
    ours.kernel[...] = layers.to_ours("conv1d_pointwise", _np(ref.weight))
    ours.bias[...] = layers.to_ours("copy", _np(ref.bias))
    x = torch.randn(2, 12, 5)  # (B, C, T) -> ours (B, T, C)
    y = np.asarray(ours(jnp.asarray(_np(x).transpose(0, 2, 1)))).transpose(0, 2, 1)
    _assert_close(y, ref(x))


def test_layer_norm():
    ref = _randomise(torch.nn.LayerNorm(16))
    ours = nnx.LayerNorm(16, epsilon=layers.TORCH_NORM_EPSILON, use_fast_variance=False, rngs=nnx.Rngs(0))
    ours.scale[...] = layers.to_ours("copy", _np(ref.weight))
    ours.bias[...] = layers.to_ours("copy", _np(ref.bias))
    x = torch.randn(2, 3, 16) * 3 + 1
    _assert_close(ours(jnp.asarray(_np(x))), ref(x))


def _torch_attention(x, to_qkv, to_out, heads):
    """The reference's Attention (docs/reference.md §2.2), written from its description: to_qkv, chunk into
    q | k | v, head-major split of each, softmax(q k^T * d^-0.5), merge heads, to_out."""
    b, n, dim = x.shape
    d = dim // heads
    q, k, v = (t.reshape(b, n, heads, d).transpose(1, 2) for t in to_qkv(x).chunk(3, dim=-1))
    weights = torch.softmax(q @ k.transpose(-1, -2) * d ** -0.5, dim=-1)
    return to_out((weights @ v).transpose(1, 2).reshape(b, n, dim))


def test_multi_head_attention():
    dim, heads = 256, 8  # head_dim 32: the reference's softmax scale 32^-0.5
    to_qkv = _randomise(torch.nn.Linear(dim, 3 * dim, bias=False))
    to_out = _randomise(torch.nn.Linear(dim, dim))
    with torch.no_grad():  # keep the logits in a range where the softmax is not saturated
        to_qkv.weight.mul_(0.1)
    ours = Attention(dim, heads=heads, dropout=0.1, rngs=nnx.Rngs(0))
    ours.to_qkv.kernel[...] = layers.to_ours("linear", _np(to_qkv.weight))
    ours.to_out.kernel[...] = layers.to_ours("linear", _np(to_out.weight))
    ours.to_out.bias[...] = layers.to_ours("copy", _np(to_out.bias))
    ours.eval()
    x = torch.randn(2, 16, dim)
    _assert_close(ours(jnp.asarray(_np(x))), _torch_attention(x, to_qkv, to_out, heads))


@pytest.mark.parametrize("kind, shape", [("conv2d", (5, 3, 3, 2)), ("linear", (4, 7)),
                                         ("conv1d_pointwise", (4, 7, 1)), ("conv_transpose2x2", (3, 4, 2, 2)),
                                         ("copy", (6,))])
def test_layouts_invert_exactly(kind, shape):
    tensor = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    to_ours, to_torch = layers.LAYOUTS[kind]
    np.testing.assert_array_equal(to_torch(to_ours(tensor)), tensor)
    assert layers.to_torch_shape(kind, to_ours(tensor).shape) == shape


def test_bad_layout_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="kernel size 1"):
        layers.to_ours("conv1d_pointwise", np.zeros((4, 7, 3), np.float32))
    with pytest.raises(ValueError, match="Conv2d weight"):
        layers.to_ours("conv2d", np.zeros((4, 7), np.float32))
    with pytest.raises(ValueError, match="2x2 kernel"):
        layers.to_ours("conv_transpose2x2", np.zeros((4, 7, 3, 3), np.float32))
    with pytest.raises(ValueError, match="unknown layout kind 'dense'"):
        layers.to_ours("dense", np.zeros((4, 7), np.float32))


# ------------------------------------------------------------------------------------------------
# Whole modules at tiny widths: a torch model written from docs/reference.md §2 with the reference's
# state-dict names, converted by the converter's strict per-module loader, must give our
# module's outputs. This covers what layer tests cannot: flatten orders, name mapping, GRU wiring.
# ------------------------------------------------------------------------------------------------

N_MELS = 229
# Whole-module tests: moderate random weights and BN variances, so that float32 rounding (which
# the deep random networks otherwise amplify to ~1e-5 in torch itself) stays far below the tolerance.
MODULE_RANDOM = dict(std=0.3, var_floor=0.5)


def _mel_bn(bn, x):
    """BatchNorm2d over the last axis of x (B, 1, T, F), as the reference applies bn0."""
    return bn(x.transpose(1, 3)).transpose(1, 3)


class _TorchFiLMBlock(torch.nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.conv2 = torch.nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn1, self.bn2 = torch.nn.BatchNorm2d(c_out), torch.nn.BatchNorm2d(c_out)
        self.beta1, self.beta2 = torch.nn.Linear(40, c_out), torch.nn.Linear(40, c_out)

    def forward(self, x, c):
        x = F.relu(self.bn1(self.conv1(x)) + self.beta1(c)[:, :, None, None])
        x = F.relu(self.bn2(self.conv2(x)) + self.beta2(c)[:, :, None, None])
        return F.avg_pool2d(x, kernel_size=(1, 2))


class _TorchBackEnd(torch.nn.Module):
    def __init__(self, channels, dim, hidden):
        super().__init__()
        widths = [1, *channels]
        self.acoustic = torch.nn.Module()
        for i in range(4):
            setattr(self.acoustic, f"conv_block{i + 1}", _TorchFiLMBlock(widths[i], widths[i + 1]))
        self.fc5 = torch.nn.Linear(channels[-1] * (N_MELS // 16), dim, bias=False)
        self.bn5 = torch.nn.BatchNorm1d(dim)
        self.language = torch.nn.GRU(dim, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = torch.nn.Linear(2 * hidden, 88)

    def forward(self, x, c):
        for i in range(4):
            x = getattr(self.acoustic, f"conv_block{i + 1}")(x, c)
        x = x.transpose(1, 2).flatten(2)  # (B, C, T, F) -> (B, T, C*F), channel-major
        x = F.relu(self.bn5(self.fc5(x).transpose(1, 2)).transpose(1, 2))
        return torch.sigmoid(self.fc(self.language(x)[0]))


class _TorchTranscriber(torch.nn.Module):
    """docs/reference.md §2.1 ``Original`` from the log-mel on (eval mode: dropouts are identities)."""

    def __init__(self, channels, dim, hidden):
        super().__init__()
        self.bn0 = torch.nn.BatchNorm2d(N_MELS)
        self.frame_model = _TorchBackEnd(channels, dim, hidden)
        self.reg_onset_model = _TorchBackEnd(channels, dim, hidden)
        self.frame_gru = torch.nn.GRU(176, hidden, num_layers=1, bidirectional=True, batch_first=True)
        self.frame_fc = torch.nn.Linear(2 * hidden, 88)

    def forward(self, logmel, c):
        x = _mel_bn(self.bn0, logmel[:, None])
        frame, onset = self.frame_model(x, c), self.reg_onset_model(x, c)
        y = self.frame_gru(torch.cat([frame, onset], dim=-1))[0]
        return {"reg_onset_output": onset, "frame_output": torch.sigmoid(self.frame_fc(y))}


def _with_front_end_buffers(state):
    state = {k: _np(v) for k, v in state.items()}
    state["spec_layer.spectrogram.window"] = _np(torch.hann_window(2048))
    state["spec_layer.mel_scale.fb"] = np.array(audio.mel_filterbank())
    return state


def test_tiny_transcriber_matches_a_torch_reference_after_conversion():
    channels, dim, hidden = (4, 6, 6, 8), 16, 8
    ref = _randomise(_TorchTranscriber(channels, dim, hidden), **MODULE_RANDOM).eval()
    # empty_module: the converter's zero-filled build (a random init of the GRUs is slow on CPU).
    ours = stages.empty_module(lambda: Transcriber(channels, acoustic_dim=dim, gru_hidden=hidden, rngs=nnx.Rngs(0)))
    assign.assign_reference_weights(ours, mapping.TRANSCRIPTION_MODULES["narrow"],
                                    _with_front_end_buffers(ref.state_dict()), source="tiny")
    ours.eval()
    logmel = torch.randn(2, 9, N_MELS) * 2 - 5
    classes = [3, 39]
    conditions = torch.nn.functional.one_hot(torch.tensor(classes), 40).float()
    expected = ref(logmel, conditions)
    apply = nnx.jit(lambda model, x, c: model(x, c))
    got = apply(ours, jnp.asarray(_np(logmel)), jnp.asarray(_np(conditions))[:, None])
    for name in ("reg_onset_output", "frame_output"):
        _assert_close(got[name][:, 0], expected[name])


class _Residual(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return x + self.fn(x)


class _PreNorm(torch.nn.Module):
    def __init__(self, dim, fn):
        super().__init__()
        self.norm, self.fn = torch.nn.LayerNorm(dim), fn

    def forward(self, x):
        return self.fn(self.norm(x))


class _TorchAttention(torch.nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.to_qkv = torch.nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.Dropout(0.1))

    def forward(self, x):
        return _torch_attention(x, self.to_qkv, self.to_out, self.heads)


class _TorchFeedForward(torch.nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(), torch.nn.Dropout(0.1),
                                       torch.nn.Linear(hidden, dim), torch.nn.Dropout(0.1))

    def forward(self, x):
        return self.net(x)


class _TorchCNN14Block(torch.nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.conv2 = torch.nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn1, self.bn2 = torch.nn.BatchNorm2d(c_out), torch.nn.BatchNorm2d(c_out)

    def forward(self, x):
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return F.avg_pool2d(x, kernel_size=(2, 2))


class _TorchRecognizer(torch.nn.Module):
    """docs/reference.md §2.2 ``CombinedModel_NewCLSv2`` from the log-mel on, with its module nesting."""

    def __init__(self, channels, dim, heads, ff, layers_, max_len=512):
        super().__init__()
        self.backbone = torch.nn.Module()
        self.backbone.bn0 = torch.nn.BatchNorm2d(N_MELS)
        widths, blocks = [1, *channels], []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            blocks += [_TorchCNN14Block(c_in, c_out), torch.nn.Dropout(0.2)]
        self.backbone.feature_extractor = torch.nn.Sequential(*blocks)
        self.conv = torch.nn.Conv1d(channels[-1] * (N_MELS // 2 ** len(channels)), dim, kernel_size=1)
        self.encoder = torch.nn.Module()
        self.encoder.cls_token = torch.nn.Parameter(torch.randn(dim))
        self.encoder.pos_embedding = torch.nn.Parameter(torch.randn(1, max_len + 1, dim))
        self.encoder.transformer = torch.nn.Module()
        self.encoder.transformer.layers = torch.nn.ModuleList([
            torch.nn.ModuleList([_Residual(_PreNorm(dim, _TorchAttention(dim, heads))),
                                 _Residual(_PreNorm(dim, _TorchFeedForward(dim, ff)))])
            for _ in range(layers_)])
        self.linear_class = torch.nn.Linear(dim, 39)

    def forward(self, logmel):
        x = self.backbone.feature_extractor(_mel_bn(self.backbone.bn0, logmel[:, None]))
        x = self.conv(x.transpose(-1, -2).flatten(1, 2)).transpose(1, 2)  # (B, T', dim)
        x = torch.cat([self.encoder.cls_token.expand(x.shape[0], 1, -1), x], dim=1)
        x = x + self.encoder.pos_embedding[:, : x.shape[1]]
        for attention, feed_forward in self.encoder.transformer.layers:
            x = feed_forward(attention(x))
        return self.linear_class(x[:, 0])


def test_tiny_recognizer_matches_a_torch_reference_after_conversion():
    channels, dim, heads, ff = (4, 4, 6, 6, 8, 8), 32, 8, 48
    ref = _randomise(_TorchRecognizer(channels, dim, heads, ff, 4), **MODULE_RANDOM).eval()
    ours = stages.empty_module(lambda: Recognizer(channels=channels, d_model=dim, num_heads=heads, num_layers=4,
                                                   ff_dim=ff, rngs=nnx.Rngs(0)))
    assign.assign_reference_weights(ours, mapping.IR_MODULE, _with_front_end_buffers(ref.state_dict()),
                                    source="tiny")
    ours.eval()
    logmel = torch.randn(2, 130, N_MELS) * 2 - 5  # 130 frames -> 2 time tokens
    got = nnx.jit(lambda model, x: model(x))(ours, jnp.asarray(_np(logmel)))
    _assert_close(got, ref(logmel))


class _TorchSepConvBlock(torch.nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.conv2 = torch.nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn1, self.bn2 = torch.nn.BatchNorm2d(c_out), torch.nn.BatchNorm2d(c_out)

    def forward(self, x, beta1, beta2):
        x = F.leaky_relu(self.bn1(self.conv1(x)) + beta1[:, :, None, None], 0.01)
        return F.leaky_relu(self.bn2(self.conv2(x)) + beta2[:, :, None, None], 0.01)


class _TorchEncoderBlock(torch.nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv_block = _TorchSepConvBlock(c_in, c_out)

    def forward(self, x, beta1, beta2):
        skip = self.conv_block(x, beta1, beta2)
        return F.avg_pool2d(skip, kernel_size=(2, 2)), skip


class _TorchDecoderBlock(torch.nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv1 = torch.nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(c_out)
        self.conv_block2 = _TorchSepConvBlock(2 * c_out, c_out)

    def forward(self, x, skip, beta1, beta2):
        x = F.leaky_relu(self.bn1(self.conv1(x)), 0.01)
        return self.conv_block2(torch.cat([x, skip], dim=1), beta1, beta2)


class _TorchTCondUNet(torch.nn.Module):
    """docs/reference.md §2.3 ``TCondUNet(mode='sum')`` up to the mask (``unet_base`` + ``unet_film``)."""

    def __init__(self, channels, bins):
        super().__init__()
        self.depth = len(channels)
        base = self.unet_base = torch.nn.Module()
        base.roll2nfft = torch.nn.Linear(88, bins)
        base.bn0 = torch.nn.BatchNorm2d(bins)
        widths = [1, *channels]
        for i in range(self.depth):
            setattr(base, f"encoder_block{i + 1}", _TorchEncoderBlock(widths[i], widths[i + 1]))
        base.conv_block7 = _TorchSepConvBlock(channels[-1], channels[-1])
        c_in = channels[-1]
        for i, c_out in enumerate(reversed(channels)):
            setattr(base, f"decoder_block{i + 1}", _TorchDecoderBlock(c_in, c_out))
            c_in = c_out
        base.after_conv_block1 = _TorchSepConvBlock(channels[0], channels[0])
        base.after_conv2 = torch.nn.Conv2d(channels[0], 1, kernel_size=1)
        film = self.unet_film = torch.nn.Module()
        self.block_widths = {**{f"encoder_block{i + 1}": c for i, c in enumerate(channels)},
                             "conv_block7": channels[-1],
                             **{f"decoder_block{i + 1}": c for i, c in enumerate(reversed(channels))},
                             "after_conv_block1": channels[0]}
        for name, width in self.block_widths.items():
            for j in (1, 2):
                setattr(film, f"{name}_beta{j}", torch.nn.Linear(40, width))

    def forward(self, magnitude, condition, roll):
        """magnitude (B, 1, T, bins), condition (B, 40), roll (B, T, 88) -> mask (B, 1, T, bins)."""
        base, frames = self.unet_base, magnitude.shape[2]
        betas = {name: (getattr(self.unet_film, f"{name}_beta1")(condition),
                        getattr(self.unet_film, f"{name}_beta2")(condition)) for name in self.block_widths}
        x = base.roll2nfft(roll)[:, None] + magnitude
        x = _mel_bn(base.bn0, x)
        multiple = 2 ** self.depth
        x = F.pad(x, (0, 0, 0, -(-frames // multiple) * multiple - frames))[..., :-1]
        skips = []
        for i in range(self.depth):
            x, skip = getattr(base, f"encoder_block{i + 1}")(x, *betas[f"encoder_block{i + 1}"])
            skips.append(skip)
        x = base.conv_block7(x, *betas["conv_block7"])
        for i, skip in enumerate(reversed(skips)):
            x = getattr(base, f"decoder_block{i + 1}")(x, skip, *betas[f"decoder_block{i + 1}"])
        x = base.after_conv2(base.after_conv_block1(x, *betas["after_conv_block1"]))
        return torch.sigmoid(F.pad(x, (0, 1))[:, :, :frames])


def test_tiny_separator_mask_matches_a_torch_reference_after_conversion():
    channels, n_fft = (2, 3, 3, 4, 4, 4), 128  # 64 U-Net bins: divisible by 2**6
    bins = n_fft // 2 + 1
    ref = _randomise(_TorchTCondUNet(channels, bins), **MODULE_RANDOM).eval()
    ours = stages.empty_module(lambda: Separator("sum", n_fft=n_fft, channels=channels, rngs=nnx.Rngs(0)))
    state = {k: _np(v) for k, v in ref.state_dict().items()}
    state["unet_base.stft.window"] = state["unet_base.istft.window"] = _np(torch.hann_window(n_fft))
    assign.assign_reference_weights(ours, mapping.SEPARATION_MODULE, state, source="tiny")
    ours.eval()
    frames = 70  # padded to 128 inside, then cropped back
    magnitude = torch.rand(2, frames, bins) * 3
    roll = torch.rand(2, frames, 88)
    conditions = torch.nn.functional.one_hot(torch.tensor([5, 0]), 40).float()
    expected = ref(magnitude[:, None], conditions, roll)[:, 0]
    got = nnx.jit(lambda model, m, c, r: model.mask(m, c, r))(
        ours, jnp.asarray(_np(magnitude)), jnp.asarray(_np(conditions))[:, None], jnp.asarray(_np(roll))[:, None])
    _assert_close(got[:, 0], expected)
