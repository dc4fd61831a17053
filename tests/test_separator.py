"""Tests of the FiLM U-Net separator (jointist_jax/models/separator.py), docs/reference.md §2.3."""

from __future__ import annotations

import functools
import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jointist_jax import audio
from jointist_jax.models.separator import (
    ConvTranspose2x2,
    Separator,
    block_channels,
    conv_transpose_2x2,
)

TINY = (4, 4, 4, 4, 4, 4)
# Small STFT for speed: 128 U-Net bins are still divisible by 2**6.
N_FFT, HOP = 256, 64
# 4001 samples → 63 frames, padded to 64 in the U-Net (the time-padding path is exercised).
LENGTH = 4001


def _params(model) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@functools.lru_cache(maxsize=None)
def _built(mode, items) -> Separator:
    return Separator(mode, rngs=nnx.Rngs(0), **dict(items))


def _tiny(mode="sum", **kwargs) -> Separator:
    """A fresh tiny model; models of one config are initialised eagerly once, then cloned (fast)."""
    kwargs.setdefault("n_fft", N_FFT)
    kwargs.setdefault("hop", HOP)
    kwargs.setdefault("channels", TINY)
    return nnx.clone(_built(mode, tuple(sorted(kwargs.items()))))


@functools.partial(jax.jit, static_argnums=0)
def _jit_apply(graphdef, state, waveform, conditions, roll):
    model = nnx.merge(graphdef, state)
    out = model(waveform, conditions, roll)
    return out, nnx.state(model)


def _run(model, waveform, conditions, roll=None):
    """Jitted forward over split/merge; writes updated BatchNorm statistics back into ``model``."""
    graphdef, state = nnx.split(model)
    out, new_state = _jit_apply(graphdef, state, waveform, conditions, roll)
    nnx.update(model, new_state)
    return jax.tree.map(np.asarray, out)


def _inputs(batch=2, k=3, length=LENGTH, hop=HOP, seed=0, with_roll=True):
    rng = np.random.default_rng(seed)
    waveform = jnp.asarray(rng.normal(0.0, 0.1, (batch, length)), jnp.float32)
    classes = rng.integers(0, 40, (batch, k))
    conditions = jax.nn.one_hot(jnp.asarray(classes), 40)
    roll = None
    if with_roll:
        roll = jnp.asarray(rng.uniform(0.0, 1.0, (batch, k, length // hop + 1, 88)), jnp.float32)
    return waveform, conditions, roll


def _batch_stats(model):
    return jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))


# ----------------------------------------------------------------------------- parameter counts
REFERENCE_BLOCKS = {
    "film": 238_784, "bn0": 1_026, "encoder_block1": 9_632, "encoder_block2": 55_552,
    "encoder_block3": 221_696, "encoder_block4": 885_760, "encoder_block5": 2_213_376,
    "encoder_block6": 2_655_744, "conv_block7": 2_655_744, "decoder_block1": 4_573_440,
    "decoder_block2": 4_573_440, "decoder_block3": 2_164_224, "decoder_block4": 574_208,
    "decoder_block5": 143_744, "decoder_block6": 36_032, "after_conv_block1": 18_560,
    "after_conv2": 33, "roll2nfft": 45_657,
}


def test_parameter_counts_sum_match_reference_per_block():
    model = nnx.eval_shape(lambda: Separator("sum", rngs=nnx.Rngs(0)))
    state = nnx.state(model, nnx.Param)
    per_block = {name: sum(x.size for x in jax.tree.leaves(state[name])) for name in state.keys()}
    assert per_block == REFERENCE_BLOCKS
    assert _params(model) == 21_066_652


def test_parameter_count_standalone_matches_reference():
    model = nnx.eval_shape(lambda: Separator("standalone", rngs=nnx.Rngs(0)))
    assert model.roll2nfft is None
    assert _params(model) == 21_020_995
    assert model.hop == 320


def test_film_widths_follow_reference_blocks():
    widths = block_channels((32, 64, 128, 256, 384, 384))
    assert list(widths) == [f"encoder_block{i}" for i in range(1, 7)] + ["conv_block7"] + [
        f"decoder_block{i}" for i in range(1, 7)] + ["after_conv_block1"]
    assert [widths[f"decoder_block{i}"] for i in range(1, 7)] == [384, 384, 256, 128, 64, 32]
    model = nnx.eval_shape(lambda: Separator("sum", rngs=nnx.Rngs(0)))
    assert model.film.decoder_block3_beta2.kernel.shape == (40, 256)
    assert model.decoder_block1.conv1.kernel.shape == (384, 384, 2, 2)  # PyTorch (in, out, kH, kW)
    assert model.decoder_block1.conv_block2.conv1.kernel.shape == (3, 3, 768, 384)


# ----------------------------------------------------------------------------- transposed conv
def _conv_transpose_loop(x, w):
    """Direct evaluation of out[n, 2i+a, 2j+b, o] = Σ_c x[n, i, j, c] · w[c, o, a, b]."""
    n, h, wd, _ = x.shape
    out = np.zeros((n, 2 * h, 2 * wd, w.shape[1]), np.float64)
    for b_, i, j, a, b in itertools.product(range(n), range(h), range(wd), range(2), range(2)):
        out[b_, 2 * i + a, 2 * j + b] = x[b_, i, j] @ w[:, :, a, b]
    return out


def test_conv_transpose_matches_direct_loop():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 5, 4)).astype(np.float32)
    w = rng.normal(size=(4, 6, 2, 2)).astype(np.float32)
    got = np.asarray(conv_transpose_2x2(jnp.asarray(x), jnp.asarray(w)))
    np.testing.assert_allclose(got, _conv_transpose_loop(x, w), rtol=1e-5, atol=1e-5)


def test_conv_transpose_matches_lax_conv_transpose():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(2, 4, 3, 5)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(5, 7, 2, 2)), jnp.float32)
    # lax.conv_transpose without transpose_kernel correlates the zero-dilated input with the kernel,
    # so PyTorch's (in, out, a, b) kernel maps to HWIO with both spatial axes flipped.
    hwio = jnp.transpose(w, (2, 3, 0, 1))[::-1, ::-1]
    expected = jax.lax.conv_transpose(x, hwio, strides=(2, 2), padding="VALID",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(np.asarray(conv_transpose_2x2(x, w)), np.asarray(expected),
                               rtol=1e-5, atol=1e-5)


def test_conv_transpose_rejects_wrong_kernel():
    with pytest.raises(ValueError, match="kernel must have shape"):
        conv_transpose_2x2(jnp.ones((1, 2, 2, 3)), jnp.ones((4, 5, 2, 2)))


def test_initialisers_follow_reference():
    # PyTorch ConvTranspose2d default: fan_in = out·2·2 (dim 1 of the (in, out, 2, 2) weight).
    layer = ConvTranspose2x2(64, 32, rngs=nnx.Rngs(0))
    kernel = np.asarray(layer.kernel[...])
    bound = 1.0 / np.sqrt(32 * 4)
    assert kernel.max() <= bound and kernel.min() >= -bound
    assert kernel.max() > 0.98 * bound and kernel.min() < -0.98 * bound

    model = _tiny("sum")
    roll_bound = 1.0 / np.sqrt(88)  # PyTorch Linear default for weight and bias
    for leaf in (model.roll2nfft.kernel, model.roll2nfft.bias):
        values = np.asarray(leaf[...])
        assert np.abs(values).max() <= roll_bound and np.abs(values).max() > 0.95 * roll_bound
    film = model.film.encoder_block1_beta1
    xavier = np.sqrt(6.0 / (40 + 4))
    assert np.abs(np.asarray(film.kernel[...])).max() <= xavier
    assert np.all(np.asarray(film.bias[...]) == 0)
    assert np.all(np.asarray(model.after_conv2.bias[...]) == 0)
    conv = np.asarray(model.encoder_block2.conv_block.conv1.kernel[...])
    assert np.abs(conv).max() <= np.sqrt(6.0 / (4 * 9 + 4 * 9))
    assert np.all(np.asarray(model.bn0.scale[...]) == 1) and np.all(np.asarray(model.bn0.bias[...]) == 0)


# ----------------------------------------------------------------------------- shapes
def _output_shapes(model, length, batch=1, k=2):
    graphdef, state = nnx.split(model)
    frames = length // model.hop + 1
    roll = None if model.mode == "standalone" else jax.ShapeDtypeStruct((batch, k, frames, 88), jnp.float32)

    def apply(state, waveform, conditions, roll):
        return nnx.merge(graphdef, state)(waveform, conditions, roll)

    return jax.eval_shape(apply, state, jax.ShapeDtypeStruct((batch, length), jnp.float32),
                          jax.ShapeDtypeStruct((batch, k, 40), jnp.float32), roll)


@pytest.mark.parametrize("mode", ["sum", "standalone"])
@pytest.mark.parametrize("length", [2001, 4096, 4097, 8191, 10240])
def test_output_length_equals_input_length(mode, length):
    # The reference STFT (1024) and hops (160 / 320); shapes only, so the model stays abstract.
    model = nnx.eval_shape(lambda: Separator(mode, channels=TINY, rngs=nnx.Rngs(0)))
    out = _output_shapes(model, length)
    frames = length // model.hop + 1
    assert out["waveform"].shape == (1, 2, length)
    assert out["mask"].shape == (1, 2, frames, 513)
    assert out["waveform"].dtype == jnp.float32 and out["mask"].dtype == jnp.float32


@pytest.mark.parametrize("mode, frames", [("sum", 1001), ("standalone", 501)])
def test_full_size_ten_second_shapes(mode, frames):
    model = nnx.eval_shape(lambda: Separator(mode, rngs=nnx.Rngs(0)))
    out = _output_shapes(model, 160_000, batch=2, k=3)
    assert out["waveform"].shape == (2, 3, 160_000)
    assert out["mask"].shape == (2, 3, frames, 513)


def test_real_run_shapes_and_top_bin_mask():
    model = _tiny("sum")
    waveform, conditions, roll = _inputs()
    out = _run(model, waveform, conditions, roll)
    assert out["waveform"].shape == (2, 3, LENGTH)
    assert out["mask"].shape == (2, 3, LENGTH // HOP + 1, N_FFT // 2 + 1)
    assert np.all(np.isfinite(out["waveform"]))
    # The dropped top bin comes back as a zero logit: mask exactly 0.5 (docs/reference.md §10.11).
    np.testing.assert_array_equal(out["mask"][..., -1], 0.5)
    assert np.abs(out["mask"][..., :-1] - 0.5).max() > 1e-3


# ----------------------------------------------------------------------------- signal path
def _tonal_mixture(length, batch=2):
    t = np.arange(length) / 16_000.0
    rows = [0.3 * np.sin(2 * np.pi * 220.0 * t) + 0.2 * np.sin(2 * np.pi * 1250.0 * t + 0.5),
            0.25 * np.sin(2 * np.pi * 440.0 * t + 1.0) + 0.1 * np.sin(2 * np.pi * 3000.0 * t)]
    return jnp.asarray(np.stack(rows[:batch]), jnp.float32)


@pytest.mark.parametrize("mode", ["sum", "standalone"])
def test_unit_mask_reconstructs_mixture(mode):
    model = _tiny(mode)
    model.after_conv2.bias[...] = jnp.full((1,), 40.0)  # sigmoid(40) == 1 in float32
    waveform = _tonal_mixture(LENGTH)
    _, conditions, roll = _inputs(with_roll=mode == "sum")
    if roll is not None:
        roll = roll * 50.0  # a large roll must not leak into the output magnitude
    out = _run(model, waveform, conditions, roll)
    np.testing.assert_array_equal(out["mask"][..., :-1], 1.0)
    # Exact: the only change to the mixture spectrum is the top bin's fixed mask of 0.5.
    spec = audio.stft(waveform, n_fft=N_FFT, hop=HOP)
    expected = audio.istft(spec.at[..., -1].multiply(0.5), n_fft=N_FFT, hop=HOP, length=LENGTH)
    for k in range(3):
        np.testing.assert_allclose(out["waveform"][:, k], np.asarray(expected), atol=2e-6)
    # A tonal mixture has no energy at Nyquist, so away from the edges it comes back unchanged.
    inner = slice(N_FFT, LENGTH - N_FFT)
    assert np.abs(out["waveform"][:, :, inner] - np.asarray(waveform)[:, None, inner]).max() <= 1e-4


def test_zero_mask_gives_silence():
    model = _tiny("standalone")
    model.after_conv2.bias[...] = jnp.full((1,), -40.0)
    waveform, conditions, _ = _inputs(with_roll=False)
    out = _run(model, waveform, conditions)
    # Everything but the top bin is masked out; that bin alone carries very little of white noise.
    spec = audio.stft(waveform, n_fft=N_FFT, hop=HOP)
    nyquist_only = audio.istft(jnp.zeros_like(spec).at[..., -1].set(0.5 * spec[..., -1]),
                               n_fft=N_FFT, hop=HOP, length=LENGTH)
    np.testing.assert_allclose(out["waveform"][:, 0], np.asarray(nyquist_only), atol=1e-6)


# ----------------------------------------------------------------------------- reference parity
def _path_names(path) -> list[str]:
    return [str(getattr(p, "key", getattr(p, "name", p))) for p in path]


def _variables(model):
    """(path, nnx.Variable) pairs of every parameter and statistic of ``model``."""
    is_variable = lambda v: isinstance(v, nnx.Variable)  # noqa: E731
    return jax.tree_util.tree_flatten_with_path(nnx.state(model), is_leaf=is_variable)[0]


_BN_LEAF_NAMES = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def _torch_layout(model) -> dict[str, np.ndarray]:
    """The model's weights as PyTorch state-dict entries (float64), as a converter would map them."""
    out = {}
    for path, variable in _variables(model):
        names = _path_names(path)
        name, leaf, array = ".".join(names[:-1]), names[-1], np.asarray(variable[...], np.float64)
        if leaf == "kernel" and re.fullmatch(r"decoder_block\d+\.conv1", name):
            out[f"{name}.weight"] = array  # transposed conv: stored in PyTorch's (in, out, 2, 2)
        elif leaf == "kernel" and array.ndim == 4:
            out[f"{name}.weight"] = array.transpose(3, 2, 0, 1)  # HWIO → OIHW
        elif leaf == "kernel":
            out[f"{name}.weight"] = array.T  # (in, out) → (out, in)
        else:
            out[f"{name}.{_BN_LEAF_NAMES[leaf]}"] = array
    return out


def _np_conv3x3(x, w):
    """PyTorch Conv2d(k=3, padding=1, bias=False) on NCHW with an OIHW weight."""
    _, _, h, wd = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    return sum(np.einsum("nchw,oc->nohw", padded[:, :, dy:dy + h, dx:dx + wd], w[:, :, dy, dx])
               for dy in range(3) for dx in range(3))


def _np_bn(x, sd, name, axis=1):
    shape = [1] * x.ndim
    shape[axis] = -1
    mean, var = sd[f"{name}.running_mean"].reshape(shape), sd[f"{name}.running_var"].reshape(shape)
    scale, bias = sd[f"{name}.weight"].reshape(shape), sd[f"{name}.bias"].reshape(shape)
    return (x - mean) / np.sqrt(var + 1e-5) * scale + bias


def _np_leaky(x):
    return np.where(x >= 0, x, 0.01 * x)


def _np_conv_block(x, sd, name, cond, film):
    beta1 = cond @ sd[f"film.{film}_beta1.weight"].T + sd[f"film.{film}_beta1.bias"]
    beta2 = cond @ sd[f"film.{film}_beta2.weight"].T + sd[f"film.{film}_beta2.bias"]
    x = _np_bn(_np_conv3x3(x, sd[f"{name}.conv1.weight"]), sd, f"{name}.bn1")
    x = _np_leaky(x + beta1[:, :, None, None])
    x = _np_bn(_np_conv3x3(x, sd[f"{name}.conv2.weight"]), sd, f"{name}.bn2")
    return _np_leaky(x + beta2[:, :, None, None])


def _np_separator_mask(sd, magnitude, cond, roll, depth):
    """docs/reference.md §2.3 steps 2–11 in numpy, NCHW as the PyTorch code runs them (eval-mode BatchNorm)."""
    x = magnitude
    if roll is not None:
        x = x + roll @ sd["roll2nfft.weight"].T + sd["roll2nfft.bias"]
    x = _np_bn(x, sd, "bn0", axis=2)
    frames = x.shape[1]
    padded = -(-frames // 2**depth) * 2**depth
    x = np.pad(x, ((0, 0), (0, padded - frames), (0, 0)))[:, None, :, :-1]  # (N, 1, T', F - 1)
    skips = []
    for i in range(1, depth + 1):
        x = _np_conv_block(x, sd, f"encoder_block{i}.conv_block", cond, f"encoder_block{i}")
        skips.append(x)
        n, c, h, w = x.shape
        x = x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
    x = _np_conv_block(x, sd, "conv_block7", cond, "conv_block7")
    for i, skip in zip(range(1, depth + 1), reversed(skips)):
        w = sd[f"decoder_block{i}.conv1.weight"]
        n, _, h, wd = x.shape
        x = np.einsum("ncij,coab->noiajb", x, w).reshape(n, w.shape[1], 2 * h, 2 * wd)
        x = _np_leaky(_np_bn(x, sd, f"decoder_block{i}.bn1"))
        x = np.concatenate([x, skip], axis=1)
        x = _np_conv_block(x, sd, f"decoder_block{i}.conv_block2", cond, f"decoder_block{i}")
    x = _np_conv_block(x, sd, "after_conv_block1", cond, "after_conv_block1")
    x = np.einsum("nchw,oc->nohw", x, sd["after_conv2.weight"][:, :, 0, 0])
    x = x + sd["after_conv2.bias"][:, None, None]
    x = np.pad(x, ((0, 0), (0, 0), (0, 0), (0, 1)))[:, 0, :frames]
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize("mode", ["sum", "standalone"])
def test_matches_independent_numpy_reference(mode):
    model = _tiny(mode)
    # Random BatchNorm affine parameters and running statistics, so that every BN's wiring matters.
    rng = np.random.default_rng(5)
    for path, variable in _variables(model):
        names = _path_names(path)
        shape = variable[...].shape
        if names[-1] in ("scale", "var"):
            variable[...] = jnp.asarray(rng.uniform(0.5, 1.5, shape), jnp.float32)
        elif names[-1] == "mean" or (names[-1] == "bias" and names[-2].startswith("bn")):
            variable[...] = jnp.asarray(rng.normal(0.0, 0.3, shape), jnp.float32)
    model.eval()
    waveform, conditions, roll = _inputs(with_roll=mode == "sum")
    out = _run(model, waveform, conditions, roll)

    sd = _torch_layout(model)
    spec = np.asarray(audio.stft(waveform, n_fft=N_FFT, hop=HOP)).astype(np.complex128)
    batch, k = conditions.shape[:2]
    rows_mag = np.repeat(np.abs(spec), k, axis=0)
    rows_roll = None if roll is None else np.asarray(roll, np.float64).reshape(batch * k, -1, 88)
    mask = _np_separator_mask(sd, rows_mag, np.asarray(conditions, np.float64).reshape(batch * k, 40),
                              rows_roll, len(TINY)).reshape(batch, k, *spec.shape[1:])
    np.testing.assert_allclose(out["mask"], mask, atol=2e-5)
    phase = np.angle(spec)[:, None]
    expected = audio.istft(jnp.asarray(mask * np.abs(spec)[:, None] * np.exp(1j * phase), jnp.complex64),
                           n_fft=N_FFT, hop=HOP, length=LENGTH)
    np.testing.assert_allclose(out["waveform"], np.asarray(expected), atol=1e-5)


# ----------------------------------------------------------------------------- conditioning
def test_conditioning_changes_output_and_same_condition_repeats():
    model = _tiny("standalone")
    model.eval()
    waveform, _, _ = _inputs(with_roll=False)
    conditions = jax.nn.one_hot(jnp.asarray([[3, 17, 3], [39, 0, 0]]), 40)
    out = _run(model, waveform, conditions)
    mask, wav = out["mask"], out["waveform"]
    np.testing.assert_array_equal(mask[0, 0], mask[0, 2])
    np.testing.assert_array_equal(wav[1, 1], wav[1, 2])
    assert np.abs(mask[0, 0] - mask[0, 1]).max() > 1e-3
    assert np.abs(mask[1, 0] - mask[1, 1]).max() > 1e-3
    assert np.abs(wav[0, 0] - wav[0, 1]).max() > 1e-5


@pytest.mark.parametrize("mode", ["sum", "standalone"])
def test_batched_conditions_equal_single_calls(mode):
    model = _tiny(mode)
    model.eval()
    waveform, conditions, roll = _inputs(with_roll=mode == "sum")
    batched = _run(model, waveform, conditions, roll)
    for k in range(conditions.shape[1]):
        single = _run(model, waveform, conditions[:, k : k + 1],
                      None if roll is None else roll[:, k : k + 1])
        np.testing.assert_allclose(batched["mask"][:, k], single["mask"][:, 0], atol=1e-6)
        np.testing.assert_allclose(batched["waveform"][:, k], single["waveform"][:, 0], atol=1e-6)


def test_roll_influences_sum_output():
    model = _tiny("sum")
    model.eval()
    waveform, conditions, roll = _inputs()
    first = _run(model, waveform, conditions, roll)
    second = _run(model, waveform, conditions, 1.0 - roll)
    assert np.abs(first["mask"] - second["mask"]).max() > 1e-3


# ----------------------------------------------------------------------------- modes and variants
def test_train_updates_batch_stats_and_eval_does_not():
    model = _tiny("sum")
    waveform, conditions, roll = _inputs()
    before = _batch_stats(model)
    train_out = _run(model, waveform, conditions, roll)
    after_train = _batch_stats(model)
    for path in (("bn0", "mean"), ("decoder_block1", "bn1", "var"), ("after_conv_block1", "bn2", "mean")):
        old, new = before, after_train
        for key in path:
            old, new = old[key], new[key]
        assert np.abs(np.asarray(new) - np.asarray(old)).max() > 0
    model.eval()
    eval_out = _run(model, waveform, conditions, roll)
    after_eval = _batch_stats(model)
    jax.tree.map(np.testing.assert_array_equal, after_train, after_eval)
    assert np.abs(train_out["mask"] - eval_out["mask"]).max() > 1e-3


def test_bn0_normalises_frequency_bins_over_rows_and_time():
    model = _tiny("standalone")
    waveform, conditions, _ = _inputs(with_roll=False)
    _run(model, waveform, conditions)
    # One training step moves the running mean 1% of the way to the batch mean of each bin.
    magnitude = np.asarray(audio.magnitude(audio.stft(waveform, n_fft=N_FFT, hop=HOP)))
    expected = 0.01 * magnitude.mean(axis=(0, 1))
    np.testing.assert_allclose(np.asarray(model.bn0.mean[...]), expected, rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_bfloat16_close_to_float32():
    waveform, conditions, roll = _inputs()
    for train in (True, False):
        reference, model = _tiny("sum"), _tiny("sum", dtype=jnp.bfloat16)
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
        if not train:
            reference.eval()
            model.eval()
        ref = _run(reference, waveform, conditions, roll)
        out = _run(model, waveform, conditions, roll)
        assert out["mask"].dtype == np.float32 and out["waveform"].dtype == np.float32
        diff = np.abs(out["mask"] - ref["mask"])
        assert diff.max() > 0  # bfloat16 really was used
        wave_error = np.abs(out["waveform"] - ref["waveform"]).max() / np.abs(ref["waveform"]).max()
        if train:
            # Batch statistics of a 4-channel model over a few rows amplify rounding: looser bound.
            assert diff.mean() < 0.01 and wave_error < 0.03
        else:
            assert diff.max() < 0.01 and wave_error < 0.003
        # BatchNorm running statistics stay float32.
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(model, nnx.BatchStat)))


@functools.partial(jax.jit, static_argnums=0)
def _jit_loss(graphdef, params, rest, waveform, conditions, roll, target):
    merged = nnx.merge(graphdef, params, rest)
    out = merged(waveform, conditions, roll)
    return jnp.mean(jnp.abs(out["waveform"] - target)), nnx.state(merged, nnx.BatchStat)


def _loss_and_grads(model, waveform, conditions, roll, target):
    """((L1 waveform loss, updated BatchNorm statistics), gradients w.r.t. the parameters)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return jax.value_and_grad(_jit_loss, argnums=1, has_aux=True)(
        graphdef, params, rest, waveform, conditions, roll, target)


# A depth-2 U-Net has every kind of block and compiles its backward pass much faster than depth 6.
SHALLOW = (4, 4)


@pytest.mark.slow
def test_remat_matches_plain_and_is_applied():
    waveform, conditions, roll = _inputs()
    target = jnp.zeros((2, 3, LENGTH))
    plain, remat = _tiny("sum", channels=SHALLOW), _tiny("sum", channels=SHALLOW, remat=True)
    (loss_a, stats_a), grads_a = _loss_and_grads(plain, waveform, conditions, roll, target)
    (loss_b, stats_b), grads_b = _loss_and_grads(remat, waveform, conditions, roll, target)
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads_a, grads_b)
    # BatchNorm statistics updated inside the rematerialised blocks still come out.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), stats_a, stats_b)
    assert np.abs(np.asarray(stats_b["decoder_block1"]["conv_block2"]["bn2"]["mean"])).max() > 0
    graphdef, state = nnx.split(remat)
    jaxpr = str(jax.make_jaxpr(lambda s: nnx.merge(graphdef, s)(waveform, conditions, roll))(state))
    assert "remat" in jaxpr or "checkpoint" in jaxpr


def test_gradients_reach_every_parameter():
    model = _tiny("sum", channels=SHALLOW)
    waveform, conditions, roll = _inputs()
    _, grads = _loss_and_grads(model, waveform, conditions, roll, jnp.zeros((2, 3, LENGTH)))
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    dead = [jax.tree_util.keystr(path) for path, g in flat if not np.any(np.asarray(g) != 0)]
    assert not dead, f"parameters without gradient: {dead}"


# ----------------------------------------------------------------------------- bad input
def test_mode_and_size_validation():
    with pytest.raises(ValueError, match="mode must be one of"):
        Separator("concat", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="divisible by 2\\*\\*len\\(channels\\)"):
        Separator("sum", n_fft=1000, channels=TINY, rngs=nnx.Rngs(0))


def test_standalone_rejects_roll_and_sum_requires_it():
    waveform, conditions, roll = _inputs()
    with pytest.raises(ValueError, match="`roll` must be None"):
        _tiny("standalone")(waveform, conditions, roll)
    with pytest.raises(ValueError, match="`roll` is required"):
        _tiny("sum")(waveform, conditions)
    with pytest.raises(ValueError, match="`roll` must have shape \\(2, 3, 63, 88\\)"):
        _tiny("sum")(waveform, conditions, roll[:, :, :-1])


def test_bad_waveform_and_conditions_are_named():
    model = _tiny("standalone")
    waveform, conditions, _ = _inputs(with_roll=False)
    with pytest.raises(ValueError, match="waveform must have shape \\(B, L\\)"):
        model(waveform[0], conditions)
    with pytest.raises(ValueError, match="waveform length 100 must exceed"):
        model(waveform[:, :100], conditions)
    with pytest.raises(ValueError, match="conditions must have shape \\(B=2, K, 40\\)"):
        model(waveform, conditions[..., :39])
    with pytest.raises(ValueError, match="at least one condition"):
        model(waveform, conditions[:, :0])
    with pytest.raises(ValueError, match="mix_magnitude must have shape"):
        model.mask(jnp.ones((2, 10, 100)), conditions)
