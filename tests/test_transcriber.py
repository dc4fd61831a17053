"""The FiLM onsets-and-frames transcriber (docs/reference.md §2.1, §8, §11.1; docs/deviations.md 3, 20).

Full-size models are only built abstractly (``nnx.eval_shape``); everything that runs uses tiny
widths so each test takes seconds on CPU.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jointist_jax.convert import mapping
from jointist_jax.models import transcriber as tr
from jointist_jax.models.transcriber import Transcriber

TINY = dict(variant=(4, 4, 4, 4), acoustic_dim=16, gru_hidden=8)


def tiny(seed=0, **overrides):
    return Transcriber(**{**TINY, **overrides}, rngs=nnx.Rngs(seed))


def param_count(module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def logmel(batch=2, frames=20, seed=0):
    # Log-mel-like values: a large negative offset per bin plus variation.
    key = jax.random.key(seed)
    return jax.random.normal(key, (batch, frames, 229)) * 3.0 - 10.0


# The shared input shapes (2 clips x 20 frames, K = 3) let tests reuse compiled functions.
CONDS = [[1, 7, 39], [2, 2, 20]]


def one_hot(indices):
    return jax.nn.one_hot(jnp.asarray(indices), 40)


# Compiled calls: eager op-by-op execution of the model is several times slower on CPU.
apply = nnx.jit(lambda model, x, c: model(x, c))
apply_with_rngs = nnx.jit(lambda model, x, c, rngs: model(x, c, rngs=rngs))


# ------------------------------------------------------------------------------------------------
# Parameter counts (docs/reference.md §11.1) and state-dict layout.
# ------------------------------------------------------------------------------------------------


def test_parameter_counts_narrow_exact():
    model = nnx.eval_shape(lambda: Transcriber("narrow", rngs=nnx.Rngs(0)))
    assert param_count(model) == 10_097_138
    assert param_count(model.bn0) == 458
    for backend in (model.frame_model, model.reg_onset_model):
        assert param_count(backend) == 4_692_456
        assert param_count(backend.acoustic) == 510_864
        assert param_count(backend.language) == 2_758_656
        assert param_count(backend.fc5) == 1_376_256
        assert param_count(backend.bn5) == 1_536
        assert param_count(backend.fc) == 45_144
    assert param_count(model.frame_gru) == 666_624
    assert param_count(model.frame_fc) == 45_144


def test_parameter_counts_wide_exact():
    model = nnx.eval_shape(lambda: Transcriber("wide", rngs=nnx.Rngs(0)))
    assert param_count(model) == 26_862_674
    assert param_count(model.frame_model) == 13_075_224
    assert param_count(model.frame_model.acoustic) == 4_764_864
    assert param_count(model.frame_model.fc5) == 5_505_024


@pytest.mark.parametrize("module, variant", [("transcription_CNN8Dropout", "narrow"),
                                             ("transcription_CNN8Dropout_Wide", "wide")])
def test_every_reference_state_dict_entry_has_a_readable_home(module, variant):
    model = nnx.eval_shape(lambda: Transcriber(variant, rngs=nnx.Rngs(0)))
    ours = {path: leaf.shape for path, leaf in nnx.to_flat_state(nnx.state(model, (nnx.Param, nnx.BatchStat)))}
    mapped = set()
    for key, shape in mapping.reference_keys(module).items():
        if mapping.is_front_end_buffer(key) or mapping.is_ignored(key):
            continue  # the front end lives in jointist_jax.audio; the counter has no Flax analogue
        path, expected = mapping.our_path_and_shape(module, key, shape)
        assert path in ours, f"{key} -> {path} missing"
        assert tuple(ours[path]) == expected, f"{key}: ours {ours[path]} vs {expected}"
        mapped.add(path)
    # GRU tensors of the two directions share one stacked array, so compare sets, not counts.
    assert mapped == set(ours), f"unmapped: {set(ours) - mapped}"


# ------------------------------------------------------------------------------------------------
# Shapes, values and conditioning.
# ------------------------------------------------------------------------------------------------


def test_output_shapes_for_a_ten_second_clip():
    model = tiny()
    model.eval()
    out = apply(model, logmel(1, 1001), one_hot([[3, 39]]))
    assert set(out) == {"reg_onset_output", "frame_output"}
    for value in out.values():
        assert value.shape == (1, 2, 1001, 88)
        assert value.dtype == jnp.float32
        assert np.all((value >= 0) & (value <= 1))


@pytest.mark.parametrize("frames, k", [(1, 1), (37, 3)])
def test_output_shapes_for_other_lengths_and_k(frames, k):
    model = tiny()
    model.eval()
    out = apply(model, logmel(2, frames), one_hot([list(range(k)), list(range(10, 10 + k))]))
    for value in out.values():
        assert value.shape == (2, k, frames, 88)


def test_conditioning_changes_outputs():
    model = tiny()
    model.eval()
    x = logmel()
    a = apply(model, x, one_hot(CONDS))
    b = apply(model, x, one_hot([[0, 7, 39], [2, 2, 21]]))  # first and last rows changed
    for key in a:
        changed = np.max(np.abs(a[key] - b[key]), axis=(2, 3))  # per (clip, condition)
        assert changed[0, 0] > 1e-3 and changed[1, 2] > 1e-3, key
        # same condition -> same output (and the other rows are unaffected by the change)
        np.testing.assert_array_equal(changed[0, 1:], 0.0)
        np.testing.assert_array_equal(changed[1, :2], 0.0)
        # the repeated condition of clip 1 gives identical rows
        np.testing.assert_array_equal(a[key][1, 0], a[key][1, 1])


def test_batched_conditions_equal_single_calls():
    model = tiny()
    model.eval()
    x = logmel()
    conds = CONDS
    batched = apply(model, x, one_hot(conds))
    for k in range(3):
        single = apply(model, x, one_hot([[conds[0][k]], [conds[1][k]]]))
        for key in batched:
            np.testing.assert_allclose(batched[key][:, k], single[key][:, 0], atol=1e-6, rtol=1e-5)


def test_bn0_normalises_each_mel_bin_over_clips_and_frames():
    # One train step from the initial running stats (0, 1) with PyTorch momentum 0.01: the
    # running mean/var move 1 % towards the per-bin batch mean/variance over clips and frames
    # (with K conditions per clip each clip is counted once, like the reference's K-fold repeat).
    model = tiny()
    model.train()
    x = np.asarray(logmel())
    apply(model, x, one_hot(CONDS))
    np.testing.assert_allclose(model.bn0.mean[...], 0.01 * x.mean(axis=(0, 1)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.bn0.var[...], 0.99 + 0.01 * x.var(axis=(0, 1)), rtol=1e-4)


def test_flatten_is_channel_major_then_frequency():
    n, t, f, c = 2, 3, 14, 5
    # feature value encodes (c, f): x[..., f, c] = 100 c + f
    x = jnp.broadcast_to(100 * jnp.arange(c)[None, :] + jnp.arange(f)[:, None], (n, t, f, c))
    flat = tr.flatten_channels_major(x)
    assert flat.shape == (n, t, c * f)
    for ci in range(c):
        for fi in range(f):
            assert int(flat[1, 2, ci * 14 + fi]) == 100 * ci + fi


def test_backends_flatten_the_acoustic_output_channel_major(monkeypatch):
    # Both BackEnds must route the (N, T, 14, C) conv output through the torch-order flatten.
    seen = []
    original = tr.flatten_channels_major

    def spy(x):
        seen.append(x.shape)
        return original(x)

    monkeypatch.setattr(tr, "flatten_channels_major", spy)
    model = tiny()
    model.eval()
    out = nnx.eval_shape(lambda m: m(logmel(), one_hot(CONDS)), model)  # traces, no compile
    assert out["frame_output"].shape == (2, 3, 20, 88)
    assert seen == [(6, 20, 14, 4), (6, 20, 14, 4)]


def test_frequency_pooling_floors_229_to_14_and_keeps_time():
    assert tr.pooled_frequency_bins(229) == 14
    x = jnp.arange(2 * 3 * 5 * 1, dtype=jnp.float32).reshape(2, 3, 5, 1)
    pooled = tr._avg_pool_frequency(x)
    assert pooled.shape == (2, 3, 2, 1)
    np.testing.assert_allclose(pooled[0, 0, :, 0], [0.5, 2.5])  # bin 4 (odd) dropped
    model = nnx.eval_shape(lambda: Transcriber("narrow", rngs=nnx.Rngs(0)))
    assert model.frame_model.fc5.in_features == 128 * 14


# ------------------------------------------------------------------------------------------------
# Training behaviour: modes, dropout, gradients.
# ------------------------------------------------------------------------------------------------


def test_batch_stats_update_only_in_train_mode():
    model = tiny()
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))
    model.eval()
    apply(model, logmel(), one_hot(CONDS))
    after_eval = nnx.state(model, nnx.BatchStat)
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, after_eval))
    model.train()
    apply(model, logmel(), one_hot(CONDS))
    after_train = jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))
    flat_before = dict(nnx.to_flat_state(before))
    for path, value in nnx.to_flat_state(after_train):
        assert not np.array_equal(value, flat_before[path]), path


def test_dropout_only_in_train_mode_and_driven_by_rngs():
    model = tiny()
    x, c = logmel(), one_hot(CONDS)
    model.eval()
    e1, e2 = apply(model, x, c), apply(model, x, c)
    np.testing.assert_array_equal(e1["frame_output"], e2["frame_output"])
    model.train()
    # Same per-step key -> same dropout masks; different keys -> different outputs. (Train-mode
    # BatchNorm normalises with the batch's own statistics, so the running-stat updates between
    # the calls do not change the outputs.)
    t1 = apply_with_rngs(model, x, c, nnx.Rngs(dropout=jax.random.fold_in(jax.random.key(0), 1)))
    t1_again = apply_with_rngs(model, x, c, nnx.Rngs(dropout=jax.random.fold_in(jax.random.key(0), 1)))
    t2 = apply_with_rngs(model, x, c, nnx.Rngs(dropout=jax.random.fold_in(jax.random.key(0), 2)))
    np.testing.assert_array_equal(t1["frame_output"], t1_again["frame_output"])
    assert np.max(np.abs(t1["frame_output"] - t2["frame_output"])) > 1e-4
    assert np.max(np.abs(t1["reg_onset_output"] - t2["reg_onset_output"])) > 1e-4


def _grads_of(model, loss_fn, x, c):
    """Loss value, outputs and parameter gradients from a pure jitted split/merge step."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def step(params, rest):
        def loss(p):
            # copy=True: merged Variables must belong to this trace (flax 0.12.8 otherwise raises
            # TraceContextError when merge or BatchNorm writes them under jax.grad).
            out = nnx.merge(graphdef, p, rest, copy=True)(x, c)
            return loss_fn(out), out

        return jax.value_and_grad(loss, has_aux=True)(params)

    (value, out), grads = step(params, rest)
    return value, out, grads


def test_onset_branch_gets_no_gradient_from_the_frame_output():
    model = tiny()
    model.eval()  # the detach does not depend on the mode; eval mode compiles faster
    _, _, grads = _grads_of(model, lambda out: jnp.mean(out["frame_output"] ** 2), logmel(), one_hot(CONDS))
    onset = jax.tree.leaves(grads["reg_onset_model"])
    frame = jax.tree.leaves(grads["frame_model"])
    assert all(np.all(g == 0) for g in onset)
    assert all(np.any(g != 0) for g in frame)
    assert np.any(grads["frame_gru"]["layers"][0]["w_ih"][...] != 0)


def test_jit_of_pure_split_merge_forward_matches_nnx_jit():
    model = tiny()
    model.eval()
    x, c = logmel(), one_hot(CONDS)
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, x, c):
        return nnx.merge(graphdef, state)(x, c)

    jitted = forward(state, x, c)  # pure jax.jit over split/merge
    eager = apply(model, x, c)
    for key in eager:
        np.testing.assert_allclose(jitted[key], eager[key], atol=1e-5)


def test_bfloat16_compute_stays_close_to_float32():
    x, c = logmel(), one_hot(CONDS)
    f32 = tiny(seed=1)
    b16 = tiny(seed=1, dtype=jnp.bfloat16)
    # Same seed -> same float32 parameters: bfloat16 only changes the compute dtype.
    jax.tree.map(np.testing.assert_array_equal, nnx.state(f32, nnx.Param), nnx.state(b16, nnx.Param))
    for m in (f32, b16):
        m.eval()
    ref, low = apply(f32, x, c), apply(b16, x, c)
    for key in ref:
        assert low[key].dtype == jnp.float32
        # bfloat16 keeps 8 significant bits (unit roundoff 2^-9 ~ 2e-3). Through eight convs,
        # fc5 and the GRU recurrences the posteriorgrams moved by at most 1.4e-3 (mean 2.5e-4)
        # over three seeds; 1e-2 / 2e-3 leave ~7x headroom, while a wrong dtype path (e.g. a
        # FiLM bias lost in a cast) moves outputs by O(0.1).
        np.testing.assert_allclose(low[key], ref[key], atol=1e-2)
        assert np.mean(np.abs(low[key] - ref[key])) < 2e-3
    # ... and the convolutions and matmuls really run in bfloat16.
    graphdef, state = nnx.split(b16)
    jaxpr = str(jax.make_jaxpr(lambda s: nnx.merge(graphdef, s, copy=True)(x, c))(state))
    conv_lines = [line for line in jaxpr.splitlines() if "conv_general_dilated" in line]
    assert conv_lines and all("bf16" in line for line in conv_lines)


def test_remat_conv_block_gives_the_same_values_gradients_and_stats():
    # Train mode, so BatchNorm updates and dropout (driven by an explicit key) run under remat.
    x = jax.random.normal(jax.random.key(0), (3, 12, 20, 2))
    cond = one_hot([1, 5, 39])
    results = []
    for remat in (False, True):
        block = tr.ConvBlock(2, 4, remat=remat, rngs=nnx.Rngs(4))
        block.train()

        @nnx.jit
        def step(block, x, cond):
            def loss(block, x):
                return jnp.sum(block(x, cond, rngs=nnx.Rngs(dropout=7)) ** 2)

            return nnx.value_and_grad(loss, argnums=(0, 1))(block, x)

        value, (grads, x_grad) = step(block, x, cond)
        results.append((value, grads, x_grad, nnx.state(block, nnx.BatchStat)))
    (v0, g0, xg0, s0), (v1, g1, xg1, s1) = results
    # Recomputation may reorder float32 sums: agreement to ~1e-5 of each gradient's scale.
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.max(np.abs(b)))
    np.testing.assert_allclose(v0, v1, rtol=1e-6)
    close(xg1, xg0)
    jax.tree.map(close, g1, g0)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), s0, s1)
    assert np.any(np.asarray(s1["bn1"]["mean"][...]) != 0)


def test_remat_flag_reaches_conv_blocks_and_grus():
    model = nnx.eval_shape(lambda: Transcriber(**TINY, remat=True, rngs=nnx.Rngs(0)))
    assert model.frame_model.acoustic.conv_block3.remat
    assert model.reg_onset_model.language.remat and model.frame_gru.remat


def test_remat_rematerialises_conv_blocks_in_the_backward_pass():
    # With remat the conv blocks' forward appears again inside the gradient computation, so the
    # jaxpr of the gradient holds a checkpoint (remat) primitive.
    x, c = logmel(1, 8), one_hot([[1]])
    for remat, expected in ((False, False), (True, True)):
        model = tiny(remat=remat)
        model.eval()
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        loss = lambda p: jnp.sum(nnx.merge(graphdef, p, rest, copy=True)(x, c)["reg_onset_output"])
        text = str(jax.make_jaxpr(jax.grad(loss))(params))
        assert ("checkpoint" in text or "remat" in text) == expected


# ------------------------------------------------------------------------------------------------
# Initialisation (docs/reference.md §2.1).
# ------------------------------------------------------------------------------------------------


def test_initialisers_follow_the_reference():
    model = tiny()  # channels 4, gru_hidden 8
    block = model.frame_model.acoustic.conv_block2
    beta = np.asarray(block.beta1.kernel[...])
    assert beta.shape == (40, 4)
    assert np.all(np.abs(beta) <= 1.0) and np.max(np.abs(beta)) > 0.8  # U(-1, 1)
    np.testing.assert_array_equal(block.beta1.bias[...], 0.0)
    conv = np.asarray(block.conv1.kernel[...])  # xavier: U(±sqrt(6 / (9 (in + out))))
    bound = np.sqrt(6.0 / (9 * (4 + 4)))
    assert np.all(np.abs(conv) <= bound) and np.max(np.abs(conv)) > 0.8 * bound
    assert block.conv1.bias is None and model.frame_model.fc5.bias is None
    np.testing.assert_array_equal(block.bn1.scale[...], 1.0)
    np.testing.assert_array_equal(model.frame_model.bn5.bias[...], 0.0)
    np.testing.assert_array_equal(model.frame_model.fc.bias[...], 0.0)
    frame_fc = np.asarray(model.frame_fc.kernel[...])  # torch default: U(±1/sqrt(fan_in = 16))
    assert np.all(np.abs(frame_fc) <= 0.25) and np.max(np.abs(frame_fc)) > 0.2
    frame_fc_bias = np.asarray(model.frame_fc.bias[...])
    assert np.all(np.abs(frame_fc_bias) <= 0.25) and np.max(np.abs(frame_fc_bias)) > 0.2
    # language GRU: jointist init (zero biases); frame_gru: pytorch default (non-zero biases).
    np.testing.assert_array_equal(model.frame_model.language.layers[0].b_ih[...], 0.0)
    assert np.any(model.frame_gru.layers[0].b_ih[...] != 0)


# ------------------------------------------------------------------------------------------------
# Input validation.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["medium", (4, 4, 4), (4, 0, 4, 4)])
def test_bad_variant_is_rejected(variant):
    with pytest.raises(ValueError, match="variant"):
        Transcriber(variant, rngs=nnx.Rngs(0))


def test_tuple_variant_sets_channels():
    model = nnx.eval_shape(lambda: Transcriber((8, 16, 24, 32), rngs=nnx.Rngs(0)))
    assert model.frame_model.acoustic.conv_block4.conv2.out_features == 32
    assert model.frame_model.fc5.in_features == 32 * 14


def test_bad_inputs_raise_clear_errors():
    model = tiny()
    model.eval()
    with pytest.raises(ValueError, match="logmel"):
        model(jnp.zeros((1, 10, 128)), one_hot([[1]]))
    with pytest.raises(ValueError, match="logmel"):
        model(jnp.zeros((10, 229)), one_hot([[1]]))
    with pytest.raises(ValueError, match="conditions"):
        model(jnp.zeros((1, 10, 229)), jnp.zeros((1, 39)))
    with pytest.raises(ValueError, match="conditions batch"):
        model(jnp.zeros((2, 10, 229)), one_hot([[1]]))
    with pytest.raises(ValueError, match="n_mels"):
        Transcriber(n_mels=8, rngs=nnx.Rngs(0))
