"""Tests of the PyTorch-equivalent bidirectional GRU (jointist_jax/models/gru.py)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jointist_jax.models.gru import (
    BiGRU,
    bigru_layer,
    gru_param_count,
    load_pytorch_weights,
    to_pytorch_weights,
)

N, T, IN, H, LAYERS = 3, 17, 5, 4, 2


@nnx.jit
def _apply(model, x):
    """One compiled call instead of many eager ops: keeps the tests fast."""
    return model(x)


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _numpy_bigru(x, tw, num_layers):
    """float64 NumPy implementation of PyTorch's bidirectional nn.GRU, from PyTorch-named weights."""
    x = np.asarray(x, np.float64)
    for layer in range(num_layers):
        outs = []
        for sfx in ("", "_reverse"):
            w_ih = np.asarray(tw[f"weight_ih_l{layer}{sfx}"], np.float64)
            w_hh = np.asarray(tw[f"weight_hh_l{layer}{sfx}"], np.float64)
            b_ih = np.asarray(tw[f"bias_ih_l{layer}{sfx}"], np.float64)
            b_hh = np.asarray(tw[f"bias_hh_l{layer}{sfx}"], np.float64)
            hidden = w_hh.shape[1]
            seq = x if sfx == "" else x[:, ::-1]
            h = np.zeros((x.shape[0], hidden))
            hs = []
            for t in range(seq.shape[1]):
                gi = seq[:, t] @ w_ih.T + b_ih
                gh = h @ w_hh.T + b_hh
                r = _sigmoid(gi[:, :hidden] + gh[:, :hidden])
                z = _sigmoid(gi[:, hidden : 2 * hidden] + gh[:, hidden : 2 * hidden])
                n = np.tanh(gi[:, 2 * hidden :] + r * gh[:, 2 * hidden :])
                h = (1 - z) * n + z * h
                hs.append(h)
            hs = np.stack(hs, axis=1)
            outs.append(hs if sfx == "" else hs[:, ::-1])
        x = np.concatenate(outs, axis=-1)
    return x


def _autodiff_bigru(x, tw, num_layers):
    """Plain autodiff JAX reference (one lax.scan per direction), from PyTorch-named weights."""
    for layer in range(num_layers):
        outs = []
        for sfx in ("", "_reverse"):
            w_ih, w_hh = tw[f"weight_ih_l{layer}{sfx}"], tw[f"weight_hh_l{layer}{sfx}"]
            b_ih, b_hh = tw[f"bias_ih_l{layer}{sfx}"], tw[f"bias_hh_l{layer}{sfx}"]
            hidden = w_hh.shape[1]
            seq = x if sfx == "" else x[:, ::-1]

            def step(h, x_t, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, hidden=hidden):
                gi = x_t @ w_ih.T + b_ih
                gh = h @ w_hh.T + b_hh
                r = jax.nn.sigmoid(gi[:, :hidden] + gh[:, :hidden])
                z = jax.nn.sigmoid(gi[:, hidden : 2 * hidden] + gh[:, hidden : 2 * hidden])
                n = jnp.tanh(gi[:, 2 * hidden :] + r * gh[:, 2 * hidden :])
                h = (1 - z) * n + z * h
                return h, h

            _, hs = jax.lax.scan(step, jnp.zeros((x.shape[0], hidden)), jnp.swapaxes(seq, 0, 1))
            hs = jnp.swapaxes(hs, 0, 1)
            outs.append(hs if sfx == "" else hs[:, ::-1])
        x = jnp.concatenate(outs, axis=-1)
    return x


def _random_torch_weights(rng, in_features, hidden, num_layers, scale=0.5):
    tw = {}
    for layer in range(num_layers):
        in_l = in_features if layer == 0 else 2 * hidden
        for sfx in ("", "_reverse"):
            tw[f"weight_ih_l{layer}{sfx}"] = rng.uniform(-scale, scale, (3 * hidden, in_l)).astype(np.float32)
            tw[f"weight_hh_l{layer}{sfx}"] = rng.uniform(-scale, scale, (3 * hidden, hidden)).astype(np.float32)
            tw[f"bias_ih_l{layer}{sfx}"] = rng.uniform(-scale, scale, (3 * hidden,)).astype(np.float32)
            tw[f"bias_hh_l{layer}{sfx}"] = rng.uniform(-scale, scale, (3 * hidden,)).astype(np.float32)
    return tw


def _inputs(n=N, t=T, c=IN, seed=1):
    return np.random.default_rng(seed).normal(size=(n, t, c)).astype(np.float32)


def _rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


@pytest.mark.parametrize("num_layers,t", [(1, 1), (2, T)])
def test_forward_matches_numpy_pytorch_equations(num_layers, t):
    model = BiGRU(IN, H, num_layers, rngs=nnx.Rngs(0))
    tw = _random_torch_weights(np.random.default_rng(0), IN, H, num_layers)
    load_pytorch_weights(model, tw)
    x = _inputs(t=t)
    out = _apply(model, jnp.asarray(x))
    assert out.shape == (N, t, 2 * H) and out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), _numpy_bigru(x, tw, num_layers), rtol=0, atol=1e-5)


@pytest.mark.parametrize("unroll", [1, 4])
def test_gradients_match_autodiff_reference(unroll):
    model = BiGRU(IN, H, LAYERS, unroll=unroll, rngs=nnx.Rngs(0))
    tw = _random_torch_weights(np.random.default_rng(2), IN, H, LAYERS)
    load_pytorch_weights(model, tw)
    x = jnp.asarray(_inputs())
    cot = jnp.asarray(np.random.default_rng(3).normal(size=(N, T, 2 * H)).astype(np.float32))
    graphdef, params = nnx.split(model)

    def loss(params, x):
        return jnp.sum(nnx.merge(graphdef, params)(x) * cot)

    def loss_ref(tw, x):
        return jnp.sum(_autodiff_bigru(x, tw, LAYERS) * cot)

    g_params, g_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    ref_tw, ref_x = jax.jit(jax.grad(loss_ref, argnums=(0, 1)))(
        {k: jnp.asarray(v) for k, v in tw.items()}, x
    )
    assert _rel_err(g_x, ref_x) <= 1e-5
    got_tw = to_pytorch_weights(nnx.merge(graphdef, g_params))
    assert set(got_tw) == set(tw)
    for key in tw:
        assert _rel_err(got_tw[key], ref_tw[key]) <= 1e-5, key


def test_gradient_matches_finite_differences():
    """Independent of any JAX autodiff: central differences of the float64 NumPy reference."""
    model = BiGRU(IN, H, LAYERS, rngs=nnx.Rngs(0))
    tw = _random_torch_weights(np.random.default_rng(4), IN, H, LAYERS)
    load_pytorch_weights(model, tw)
    x = _inputs(t=6)
    cot = np.random.default_rng(5).normal(size=(N, 6, 2 * H))
    graphdef, params = nnx.split(model)
    g = jax.jit(jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(jnp.asarray(x)) * cot)))(params)
    got = to_pytorch_weights(nnx.merge(graphdef, g))
    eps = 1e-6
    for key, index in [("weight_hh_l0_reverse", (9, 1)), ("bias_hh_l1", (10,)), ("weight_ih_l1", (2, 7))]:
        plus = {k: v.astype(np.float64) for k, v in tw.items()}
        minus = {k: v.astype(np.float64) for k, v in tw.items()}
        plus[key][index] += eps
        minus[key][index] -= eps
        fd = (np.sum(_numpy_bigru(x, plus, LAYERS) * cot) - np.sum(_numpy_bigru(x, minus, LAYERS) * cot)) / (2 * eps)
        assert abs(got[key][index] - fd) <= 1e-4 * max(1.0, abs(fd)), key


def test_reverse_direction_sees_the_future_and_forward_does_not():
    model = BiGRU(IN, H, 1, rngs=nnx.Rngs(0))
    x = _inputs()
    x2 = x.copy()
    x2[:, -1] += 1.0  # change only the last frame
    a, b = np.asarray(_apply(model, jnp.asarray(x))), np.asarray(_apply(model, jnp.asarray(x2)))
    np.testing.assert_array_equal(a[:, :-1, :H], b[:, :-1, :H])  # forward: past only
    assert np.all(np.abs(a[:, 0, H:] - b[:, 0, H:]).max(axis=-1) > 1e-6)  # reverse: sees the end


def test_parameter_counts_at_full_size():
    for args, expected in [((768, 256, 2), 2_758_656), ((176, 256, 1), 666_624)]:
        abstract = nnx.eval_shape(lambda args=args: BiGRU(*args, rngs=nnx.Rngs(0)))
        count = sum(v.size for v in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
        assert count == expected == gru_param_count(*args)
    abstract = nnx.eval_shape(lambda: BiGRU(768, 256, 2, rngs=nnx.Rngs(0)))
    assert abstract.layers[1].w_ih.shape == (2, 512, 768)
    assert abstract.layers[0].w_hh.shape == (2, 256, 768)


def test_pytorch_init_bounds():
    in_f, hid = 32, 64
    model = BiGRU(in_f, hid, 2, init="pytorch", rngs=nnx.Rngs(0))
    bound = 1 / math.sqrt(hid)
    for layer in model.layers:
        for p in (layer.w_ih, layer.w_hh, layer.b_ih, layer.b_hh):
            v = np.asarray(p[...])
            assert np.abs(v).max() <= bound and np.abs(v).max() > 0.9 * bound
            assert abs(v.mean()) < 0.1 * bound
        assert not np.allclose(layer.w_hh[0], layer.w_hh[1])


def test_jointist_init_both_directions():
    in_f, hid = 32, 64
    model = BiGRU(in_f, hid, 2, init="jointist", rngs=nnx.Rngs(0))
    for layer_index, layer in enumerate(model.layers):
        in_l = in_f if layer_index == 0 else 2 * hid
        w_ih, w_hh = np.asarray(layer.w_ih[...]), np.asarray(layer.w_hh[...])
        for d in range(2):  # both directions alike (docs/deviations.md 20)
            ih_bound = math.sqrt(3 / in_l)
            assert ih_bound * 0.9 < np.abs(w_ih[d]).max() <= ih_bound
            rz = w_hh[d][:, : 2 * hid]
            assert math.sqrt(3 / hid) * 0.9 < np.abs(rz).max() <= math.sqrt(3 / hid)
            wn = w_hh[d][:, 2 * hid :]
            np.testing.assert_allclose(wn.T @ wn, np.eye(hid), atol=1e-5)
        assert not np.allclose(w_hh[0], w_hh[1])
        np.testing.assert_array_equal(layer.b_ih[...], 0)
        np.testing.assert_array_equal(layer.b_hh[...], 0)


def test_load_round_trip_and_errors():
    model = BiGRU(IN, H, LAYERS, rngs=nnx.Rngs(0))
    tw = _random_torch_weights(np.random.default_rng(6), IN, H, LAYERS)
    load_pytorch_weights(model, tw)
    back = to_pytorch_weights(model)
    assert set(back) == set(tw) and len(tw) == 16
    for key in tw:
        np.testing.assert_array_equal(back[key], tw[key])
    # Different weights load into a second model and give the same function as the first.
    other = BiGRU(IN, H, LAYERS, rngs=nnx.Rngs(1))
    load_pytorch_weights(other, back)
    x = jnp.asarray(_inputs())
    np.testing.assert_array_equal(np.asarray(_apply(model, x)), np.asarray(_apply(other, x)))

    missing = dict(tw)
    del missing["bias_hh_l1_reverse"]
    with pytest.raises(KeyError, match="bias_hh_l1_reverse"):
        load_pytorch_weights(model, missing)
    bad = dict(tw)
    bad["weight_ih_l1"] = np.zeros((3 * H, IN), np.float32)  # layer 1 expects 2H inputs
    with pytest.raises(ValueError, match=r"weight_ih_l1.*\(12, 8\)"):
        load_pytorch_weights(model, bad)
    extra = dict(tw)
    extra["frame_gru.weight_ih_l0"] = tw["weight_ih_l0"]
    with pytest.raises(ValueError, match="frame_gru.weight_ih_l0"):
        load_pytorch_weights(model, extra)
    np.testing.assert_array_equal(to_pytorch_weights(model)["weight_ih_l1"], tw["weight_ih_l1"])


def test_bfloat16_runs_and_is_close():
    tw = _random_torch_weights(np.random.default_rng(7), IN, H, LAYERS)
    f32 = BiGRU(IN, H, LAYERS, rngs=nnx.Rngs(0))
    bf16 = BiGRU(IN, H, LAYERS, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    load_pytorch_weights(f32, tw)
    load_pytorch_weights(bf16, tw)
    assert bf16.layers[0].w_hh[...].dtype == jnp.float32
    x = jnp.asarray(_inputs())
    out = _apply(bf16, x)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(_apply(f32, x)), atol=3e-2)
    grad = nnx.jit(nnx.grad(lambda m: jnp.sum(m(x).astype(jnp.float32) ** 2)))
    g, g32 = grad(bf16), grad(f32)
    for a, b in zip(jax.tree.leaves(nnx.state(g)), jax.tree.leaves(nnx.state(g32))):
        assert a.dtype == jnp.float32
        assert _rel_err(a, b) < 5e-2


def test_jit_and_remat_match_plain():
    tw = _random_torch_weights(np.random.default_rng(8), IN, H, LAYERS)
    plain = BiGRU(IN, H, LAYERS, rngs=nnx.Rngs(0))
    remat = BiGRU(IN, H, LAYERS, remat=True, rngs=nnx.Rngs(0))
    load_pytorch_weights(plain, tw)
    load_pytorch_weights(remat, tw)
    x = jnp.asarray(_inputs())

    @nnx.jit
    def value_and_grad(model, x):
        return nnx.value_and_grad(lambda m, x: jnp.mean(jnp.sin(m(x))), argnums=(0, 1))(model, x)

    (v1, (g1, gx1)), (v2, (g2, gx2)) = value_and_grad(plain, x), value_and_grad(remat, x)
    np.testing.assert_allclose(v1, v2, rtol=1e-6)
    np.testing.assert_allclose(gx1, gx2, rtol=1e-5, atol=1e-7)
    for a, b in zip(jax.tree.leaves(nnx.state(g1)), jax.tree.leaves(nnx.state(g2))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # remat really rematerialises: the jaxpr of the gradient contains a checkpoint.
    graphdef, params = nnx.split(remat)
    jaxpr = jax.make_jaxpr(jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(x))))(params)
    assert "checkpoint" in str(jaxpr) or "remat" in str(jaxpr)


def test_bigru_layer_pure_function_and_vmap():
    model = BiGRU(IN, H, 1, rngs=nnx.Rngs(0))
    layer = model.layers[0]
    args = (layer.w_ih[...], layer.w_hh[...], layer.b_ih[...], layer.b_hh[...])
    x = jnp.asarray(_inputs())
    out = jax.jit(lambda x, *a: bigru_layer(x, *a, unroll=3))(x, *args)
    np.testing.assert_allclose(out, _apply(model, x), atol=1e-6)
    # vmapped over a leading axis (e.g. per-condition stacks) gives the per-slice results.
    stacked = jax.jit(jax.vmap(lambda xi: bigru_layer(xi, *args)))(jnp.stack([x, 2 * x]))
    np.testing.assert_allclose(stacked[1], _apply(model, 2 * x), atol=1e-6)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="init"):
        BiGRU(IN, H, init="xavier", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_layers"):
        BiGRU(IN, H, 0, rngs=nnx.Rngs(0))
    model = BiGRU(IN, H, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(N, T, 5\)"):
        model(jnp.zeros((2, 7, 6)))
    with pytest.raises(ValueError, match=r"\(N, T, 5\)"):
        model(jnp.zeros((7, 5)))
