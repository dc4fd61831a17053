"""The instrument recognizer: exact size, shapes, modes, jit, bfloat16, attention layout, init."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jointist_jax.models import recognizer as rec
from jointist_jax.models.recognizer import Attention, Recognizer

TINY = dict(channels=(4, 4, 4, 4, 4, 8), d_model=16, num_heads=4, num_layers=2, ff_dim=32)
# Fewer mel bins where the test does not need 229: six (2, 2) poolings leave one bin.
SMALL = dict(TINY, n_mels=64)


@nnx.jit(static_argnames=("return_features",))
def _apply(model, x, rngs=None, return_features=False):
    """One compiled forward per (config, shape): eager op-by-op dispatch is slow on a busy CPU."""
    return model(x, rngs=rngs, return_features=return_features)


def _params(module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def _tiny(**kw) -> Recognizer:
    return Recognizer(**{**TINY, **kw}, rngs=nnx.Rngs(0))


def _small(**kw) -> Recognizer:
    return Recognizer(**{**SMALL, **kw}, rngs=nnx.Rngs(0))


def _logmel(b=2, t=1001, seed=0, mels=229):
    # Log-mel-like values: around the log floor -23 up to a few units above 0.
    return jnp.asarray(np.random.default_rng(seed).uniform(-20.0, 3.0, (b, t, mels)).astype(np.float32))


@pytest.fixture(scope="module")
def full_abstract():
    return nnx.eval_shape(lambda: Recognizer(rngs=nnx.Rngs(0)))


def test_full_size_parameter_count_and_split(full_abstract):
    m = full_abstract
    assert _params(m) == 80_348_465
    assert _params(m.backbone) == 75_477_770
    assert _params(m.backbone.bn0) == 458
    assert _params(m.encoder) == 3_287_552
    assert _params(m.encoder.layers) == 3_155_968
    assert _params(m.conv) == 1_573_120
    assert _params(m.linear_class) == 10_023
    # BN running statistics: the reference's 253,372 buffers minus 13 num_batches_tracked,
    # the 2048-sample window and the (1025, 229) filterbank.
    stats = sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.BatchStat)))
    assert stats == 253_372 - 13 - 2048 - 1025 * 229


def test_full_size_shapes_match_reference_state_dict(full_abstract):
    m = full_abstract
    assert m.encoder.pos_embedding.shape == (1, 513, 256)
    assert m.encoder.cls_token.shape == (256,)
    layer = m.encoder.layers[0]
    assert layer.attention.to_qkv.kernel.shape == (256, 768)  # torch (768, 256) transposed
    assert layer.attention.to_qkv.bias is None
    assert layer.feed_forward.net0.kernel.shape == (256, 1024)
    assert layer.feed_forward.net3.kernel.shape == (1024, 256)
    assert m.conv.kernel.shape == (6144, 256)  # Conv1d (256, 6144, 1)
    assert m.linear_class.kernel.shape == (256, 39)
    assert [b.conv2.kernel.shape[-1] for b in m.backbone.blocks] == [64, 128, 256, 512, 1024, 2048]
    assert m.backbone.blocks[0].conv1.kernel.shape == (3, 3, 1, 64)
    assert m.backbone.blocks[0].conv1.bias is None
    assert m.num_tokens(1001) == 15 and m.freq_bins == 3


def test_ten_second_output_shape_and_features():
    model = _tiny()
    model.eval()
    logits, features = _apply(model, _logmel(), return_features=True)
    assert logits.shape == (2, 39) and logits.dtype == jnp.float32
    assert features.shape == (2, 15, 3, 8) and features.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(logits)))


@pytest.mark.parametrize("frames,tokens", [(500, 7), (64, 1), (1500, 23)])
def test_other_lengths(frames, tokens):
    model = _small()
    model.eval()
    logits, features = _apply(model, _logmel(1, frames, mels=64), return_features=True)
    assert logits.shape == (1, 39)
    assert features.shape[1] == tokens == model.num_tokens(frames)


def test_bad_inputs_raise():
    model = _small()
    with pytest.raises(ValueError, match=r"\(batch, frames, 64\)"):
        model(jnp.zeros((1, 100, 229)))
    with pytest.raises(ValueError, match="at least 64"):
        model(jnp.zeros((1, 63, 64)))
    with pytest.raises(ValueError, match="exceed the 4 learned positions"):
        _apply(_small(max_len=4), jnp.zeros((1, 1001, 64)))
    with pytest.raises(ValueError, match="divisible"):
        Recognizer(**{**TINY, "num_heads": 3}, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="vanish"):
        Recognizer(**{**TINY, "n_mels": 32}, rngs=nnx.Rngs(0))


def test_tokens_are_flattened_channel_major():
    # Rebuild the head by hand from the backbone features: (T, F, C) -> index c * F + f.
    model = _small(n_mels=229)
    model.eval()
    x = _logmel(2, 128)
    logits, features = _apply(model, x, return_features=True)
    f = np.asarray(features)
    b, t, fr, c = f.shape
    assert fr == 3 and c == 8  # the order only matters with several bins and channels
    tokens = np.stack([f[:, :, fi, ci] for ci in range(c) for fi in range(fr)], axis=-1)
    manual = model.linear_class(model.encoder(model.conv(jnp.asarray(tokens))))
    np.testing.assert_allclose(np.asarray(logits), np.asarray(manual), rtol=1e-5, atol=1e-5)


def _batch_stats(model):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.BatchStat))]


def test_eval_is_deterministic_and_keeps_batch_stats():
    model = _small()
    model.eval()
    before = _batch_stats(model)
    x = _logmel(2, 128, mels=64)
    a = _apply(model, x, nnx.Rngs(dropout=1))
    b = _apply(model, x, nnx.Rngs(dropout=2))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for s0, s1 in zip(before, _batch_stats(model)):
        np.testing.assert_array_equal(s0, s1)


def test_train_updates_batch_stats_and_dropout_uses_rngs():
    model = _small()
    model.train()
    x = _logmel(2, 128, mels=64)
    before = _batch_stats(model)
    a = _apply(model, x, nnx.Rngs(dropout=1))
    after = _batch_stats(model)
    assert all(not np.array_equal(s0, s1) for s0, s1 in zip(before, after))
    b = _apply(model, x, nnx.Rngs(dropout=2))
    c = _apply(model, x, nnx.Rngs(dropout=1))
    assert not np.allclose(np.asarray(a), np.asarray(b))
    # Same dropout key; train-mode BN normalises with batch statistics: same output.
    np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-5, atol=1e-5)


def test_jit_over_split_merge_matches_eager():
    model = _small()
    model.eval()
    x = _logmel(2, 128, mels=64)
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, x):
        return nnx.merge(graphdef, state)(x)

    np.testing.assert_allclose(np.asarray(forward(state, x)), np.asarray(model(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # two gradient compilations: ~10 s of CPU
def test_remat_gives_the_same_gradients():
    # Two blocks and one layer keep the two gradient compilations short.
    micro = dict(channels=(4, 8), n_mels=16, d_model=8, num_heads=2, num_layers=1, ff_dim=16)
    x = _logmel(2, 32, mels=16)

    def grads(remat):
        model = Recognizer(**micro, remat=remat, rngs=nnx.Rngs(0))
        model.train()

        def loss(m):
            return jnp.mean(m(x, rngs=nnx.Rngs(dropout=3)) ** 2)

        return jax.tree.leaves(nnx.jit(nnx.grad(loss))(model))

    g_plain, g_remat = grads(False), grads(True)
    assert any(np.abs(np.asarray(g)).max() > 0 for g in g_plain)
    for g0, g1 in zip(g_plain, g_remat):
        np.testing.assert_allclose(np.asarray(g0), np.asarray(g1), rtol=1e-4, atol=1e-6)


def test_bfloat16_runs_and_stays_close_to_float32():
    x = _logmel(2, 256, mels=64)
    ref = _small()
    low = _small(dtype=jnp.bfloat16)
    ref.eval()
    low.eval()
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(low, nnx.Param)))
    a = np.asarray(_apply(ref, x))
    b = _apply(low, x)
    assert b.dtype == jnp.float32
    b = np.asarray(b)
    assert np.all(np.isfinite(b))
    assert np.abs(a - b).max() <= 0.05 * np.abs(a).max() + 1e-2
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99


def _numpy_attention(x, w_qkv, w_out, b_out, heads):
    """The reference's attention written out: q|k|v chunks, each split head-major into (h d)."""
    b, n, dim = x.shape
    d = dim // heads
    qkv = x @ w_qkv.T  # torch weight layout (3*dim, dim)
    q, k, v = qkv[..., :dim], qkv[..., dim : 2 * dim], qkv[..., 2 * dim :]
    out = np.zeros_like(x)
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        logits = q[..., cols] @ np.swapaxes(k[..., cols], -1, -2) * d**-0.5
        logits = logits - logits.max(-1, keepdims=True)
        weights = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        out[..., cols] = weights @ v[..., cols]
    return out @ w_out.T + b_out


def test_attention_head_layout_matches_numpy_reference():
    attn = Attention(16, heads=4, dropout=0.1, rngs=nnx.Rngs(0))
    attn.eval()
    x = np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float32)
    ours = np.asarray(attn(jnp.asarray(x)))
    w_qkv = np.asarray(attn.to_qkv.kernel[...]).T.astype(np.float64)
    w_out = np.asarray(attn.to_out.kernel[...]).T.astype(np.float64)
    b_out = np.asarray(attn.to_out.bias[...]).astype(np.float64)
    ref = _numpy_attention(x.astype(np.float64), w_qkv, w_out, b_out, 4)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    # A different head split (e.g. interleaved d-major) would give another answer.
    assert not np.allclose(ref, _numpy_attention(x.astype(np.float64), w_qkv, w_out, b_out, 2), atol=1e-3)


def test_initialisation_follows_the_reference():
    model = Recognizer(**{**TINY, "d_model": 64, "ff_dim": 128, "max_len": 512}, rngs=nnx.Rngs(1))
    pos = np.asarray(model.encoder.pos_embedding[...])
    assert abs(pos.std() - 1.0) < 0.02 and abs(pos.mean()) < 0.02  # N(0, 1)
    # PyTorch default Linear / Conv1d: U(±1/sqrt(fan_in)) for weight and bias.
    for layer, fan_in in [(model.conv, 8 * 3), (model.linear_class, 64),
                          (model.encoder.layers[0].feed_forward.net3, 128)]:
        bound = fan_in**-0.5
        for p in (layer.kernel[...], layer.bias[...]):
            p = np.asarray(p)
            assert np.abs(p).max() <= bound and np.abs(p).max() > 0.7 * bound
    # Backbone convs: xavier uniform, bound sqrt(6 / (fan_in + fan_out)) with the 3x3 field.
    k = np.asarray(model.backbone.blocks[1].conv1.kernel[...])
    bound = np.sqrt(6.0 / (9 * 4 + 9 * 4))
    assert np.abs(k).max() <= bound and np.abs(k).max() > 0.8 * bound
    norm = model.encoder.layers[0].attention_norm
    assert np.all(np.asarray(norm.scale[...]) == 1) and np.all(np.asarray(norm.bias[...]) == 0)


def test_pool_and_size_helpers():
    assert rec.pooled_size(1001, 6) == 15 and rec.pooled_size(229, 6) == 3
    x = jnp.arange(2 * 5 * 3 * 1, dtype=jnp.float32).reshape(1, 5, 3, 2)
    pooled = np.asarray(rec._avg_pool_2x2(x))
    assert pooled.shape == (1, 2, 1, 2)
    xn = np.asarray(x)
    np.testing.assert_allclose(pooled[0, 1, 0], xn[0, 2:4, 0:2].mean(axis=(0, 1)))
