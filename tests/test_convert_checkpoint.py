"""Whole-checkpoint conversion (jointist_jax.convert): synthetic Lightning checkpoints with every key
and shape of reference_state_dict_keys.tsv, random values, converted and checked tensor by tensor;
the CLI, the orbax output and the error cases. Needs the ``convert`` extra (torch 2.13.0 CPU).

The full-size synthetic checkpoints are built once per module (module-scoped fixtures).
"""

import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from jointist_jax import audio, run_dir, runs
from jointist_jax.convert import ConversionError, assign, cli, convert, layers, mapping
from jointist_jax.convert.torch_checkpoint import load_state_dict
from jointist_jax.models import gru as gru_lib
from jointist_jax.models.jointist import Jointist
from jointist_jax.models.recognizer import Recognizer
from jointist_jax.models.transcriber import Transcriber
from jointist_jax.optimizer import make_optimizer

torch = pytest.importorskip("torch", reason="the converter's tests need the 'convert' extra (torch)")


ROOT = Path(__file__).resolve().parents[1]


def torch_mel_filterbank(n_freqs=1025, n_mels=229, sample_rate=16000, f_min=0.0, f_max=8000.0,
                         scale="htk", area_norm=False) -> np.ndarray:
    """The mel filterbank as the reference module builds it when constructed: torch float32
    arithmetic throughout, torchaudio's recipe (linearly spaced bin frequencies, ``n_mels + 2`` edges
    equally spaced in mel, triangles of peak 1), independent of jointist_jax.audio.

    ``scale="slaney"`` uses the Slaney mel scale (linear below 1 kHz, logarithmic above) and
    ``area_norm`` divides each triangle by half its width in Hz (Slaney normalisation): variants a
    checkpoint could carry and that the converter must refuse.
    """
    if scale == "htk":
        to_mel = lambda hz: 2595.0 * math.log10(1.0 + hz / 700.0)  # noqa: E731
        to_hz = lambda mel: 700.0 * (10.0 ** (mel / 2595.0) - 1.0)  # noqa: E731
    else:
        linear, knee = 200.0 / 3.0, 1000.0
        log_step = math.log(6.4) / 27.0

        def to_mel(hz):
            return hz / linear if hz < knee else knee / linear + math.log(hz / knee) / log_step

        def to_hz(mel):
            return torch.where(mel < knee / linear, mel * linear, knee * torch.exp(log_step * (mel - knee / linear)))
    bins = torch.linspace(0.0, sample_rate // 2, n_freqs, dtype=torch.float32)
    edges = to_hz(torch.linspace(to_mel(f_min), to_mel(f_max), n_mels + 2, dtype=torch.float32))
    width = edges[1:] - edges[:-1]
    offset = edges[None, :] - bins[:, None]  # (n_freqs, n_mels + 2)
    rising = -offset[:, :-2] / width[:-1]
    falling = offset[:, 2:] / width[1:]
    fb = torch.clamp(torch.minimum(rising, falling), min=0.0)
    if area_norm:
        fb = fb * (2.0 / (edges[2:] - edges[:-2]))[None, :]
    assert fb.dtype == torch.float32
    return fb.numpy()


def _buffer(key: str) -> np.ndarray:
    """What the reference's front-end buffers hold: torch's float32 builds, as a checkpoint has them."""
    if key.endswith("spec_layer.spectrogram.window"):
        return torch.hann_window(2048).numpy()
    if key.endswith("spec_layer.mel_scale.fb"):
        return torch_mel_filterbank()
    return torch.hann_window(1024).numpy()  # unet_base.{stft,istft}.window


def synthetic_state_dict(module, variant=None, seed=0) -> dict:
    """A Lightning state dict with every key and shape the reference module(s) have, random values."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in convert.expected_keys(module, variant).items():
        bare = key.split("network.", 1)[1]
        if mapping.is_front_end_buffer(bare):
            state[key] = torch.from_numpy(np.array(_buffer(bare)))
        elif mapping.is_ignored(bare):
            state[key] = torch.tensor(1234, dtype=torch.int64)
        else:
            value = rng.standard_normal(shape, dtype=np.float32) * 0.05
            if bare.endswith("running_var"):
                value = np.abs(value) + 0.5
            state[key] = torch.from_numpy(value)
    return state


def save_ckpt(path, state_dict, **extra):
    """A file laid out like a PyTorch Lightning checkpoint."""
    torch.save({"state_dict": state_dict, "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3)}},
                                                                "param_groups": [{"lr": 1e-3}]}],
                "lr_schedulers": [{"last_epoch": 0}], "epoch": 0, "global_step": 0, **extra}, path)
    return path


def _make_case(tmp_path_factory, module, variant):
    path = save_ckpt(tmp_path_factory.mktemp(f"{module}_{variant}") / "model.ckpt",
                     synthetic_state_dict(module, variant))
    state_dict = load_state_dict(path)
    config, model = convert.convert_state_dict(state_dict, module, variant, source=str(path))
    return dict(path=path, state_dict=state_dict, config=config, model=model, module=module, variant=variant)


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    return _make_case(tmp_path_factory, "transcription", "narrow")


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    return _make_case(tmp_path_factory, "transcription", "wide")


@pytest.fixture(scope="module")
def ir(tmp_path_factory):
    return _make_case(tmp_path_factory, "ir", None)


@pytest.fixture(scope="module")
def joint(tmp_path_factory):
    return _make_case(tmp_path_factory, "joint", "narrow")


# ------------------------------------------------------------------------------------------------
# Every tensor reaches its parameter, with the right layout.
# ------------------------------------------------------------------------------------------------


def _resolve(model, path):
    for part in path:
        model = model[part] if isinstance(part, int) else getattr(model, part)
    return model


def assert_every_tensor_landed(case):
    """Each converted leaf equals its source tensor after the inverse layout conversion, and every
    parameter/statistic of ours was reached by some reference tensor."""
    model = case["model"]
    for part in convert.parts(case["module"], case["variant"]):
        ours = model if part.attribute is None else getattr(model, part.attribute)
        leaves = {p for p, _ in nnx.to_flat_state(nnx.state(ours, (nnx.Param, nnx.BatchStat)))}
        reached, gru_checked = set(), set()
        for key, shape in mapping.reference_keys(part.reference_module).items():
            if mapping.is_ignored(key) or mapping.is_front_end_buffer(key):
                continue
            source = case["state_dict"][part.prefix + key]
            target = mapping.target(part.reference_module, key, shape)
            if target.kind == "gru":
                if target.path not in gru_checked:  # compare all tensors of this GRU at once
                    back = gru_lib.to_pytorch_weights(_resolve(ours, target.path))
                    for name, value in back.items():
                        full = part.prefix + ".".join(map(str, target.path)) + "." + name
                        np.testing.assert_array_equal(value, case["state_dict"][full], err_msg=full)
                    gru_checked.add(target.path)
                reached.add(mapping.gru_variable(target, shape)[0])
                continue
            leaf = np.asarray(_resolve(ours, target.path)[...])
            back = layers.LAYOUTS[target.kind][1](leaf)
            np.testing.assert_array_equal(back, source, err_msg=key)
            reached.add(target.path)
        assert reached == leaves, f"not reached: {leaves - reached}"


@pytest.mark.parametrize("case_name, model_type, params", [
    ("narrow", Transcriber, 10_097_138),
    ("wide", Transcriber, 26_862_674),
    ("ir", Recognizer, 80_348_465),
    ("joint", Jointist, 10_097_138 + 21_066_652),
])
def test_synthetic_checkpoint_converts_every_tensor(request, case_name, model_type, params):
    case = request.getfixturevalue(case_name)
    assert isinstance(case["model"], model_type)
    assert sum(x.size for x in jax.tree.leaves(nnx.state(case["model"], nnx.Param))) == params
    assert_every_tensor_landed(case)


def test_joint_checkpoint_fills_both_modules_and_has_no_recognizer(joint):
    model = joint["model"]
    assert model.recognizer is None
    assert model.separator.mode == "sum"
    kernel = np.asarray(model.separator.decoder_block1.conv1.kernel[...])
    source = joint["state_dict"]["separation_model.network.unet_base.decoder_block1.conv1.weight"]
    np.testing.assert_array_equal(kernel, source)  # (in, out, 2, 2) copied unchanged
    film = np.asarray(model.separator.film.conv_block7_beta2.kernel[...])
    source = joint["state_dict"]["separation_model.network.unet_film.conv_block7_beta2.weight"]
    np.testing.assert_array_equal(film, source.T)


def test_converted_model_is_in_eval_mode(narrow):
    model = narrow["model"]
    assert model.frame_model.bn5.use_running_average
    assert model.frame_model.acoustic_dropout.deterministic
    assert model.bn0.use_running_average


# ------------------------------------------------------------------------------------------------
# The CLI writes a checkpoint that load_model reads back.
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_writes_an_orbax_workdir_that_load_model_reads(narrow, tmp_path, capsys):
    out = tmp_path / "weights" / "transcription"
    code = cli.main(["--ckpt", str(narrow["path"]), "--module", "transcription", "--variant", "narrow",
                     "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert (out / "config.json").is_file() and (out / "checkpoints" / "0").is_dir()
    assert sorted(p.name for p in out.parent.iterdir()) == ["transcription"]  # no temp dir left
    trained = runs.open(out)
    model, config, step = runs.load_model(trained), trained.config, trained.step
    assert step == 0 and config.stage == "transcription"
    assert config.model.transcriber.variant == "narrow"
    for (path, ours), (_, converted) in zip(nnx.to_flat_state(nnx.state(model, (nnx.Param, nnx.BatchStat))),
                                            nnx.to_flat_state(nnx.state(narrow["model"], (nnx.Param, nnx.BatchStat)))):
        np.testing.assert_array_equal(np.asarray(ours[...]), np.asarray(converted[...]), err_msg=str(path))


@pytest.mark.slow
def test_cli_reads_and_writes_a_bucket(narrow, gcs, capsys):
    """--ckpt and --out in a bucket (GCS emulator on 127.0.0.1): the weights load back from there."""
    from jointist_jax import storage

    bucket = gcs.new_bucket()
    storage.copy_file(narrow["path"], f"gs://{bucket}/released/transcription1000.ckpt")
    out = f"gs://{bucket}/weights/transcription"
    code = cli.main(["--ckpt", f"gs://{bucket}/released/transcription1000.ckpt", "--module", "transcription",
                     "--out", out])
    assert code == 0, capsys.readouterr().err
    trained = runs.open(out)
    model, config, step = runs.load_model(trained), trained.config, trained.step
    assert step == 0 and config.stage == "transcription"
    for (path, ours), (_, converted) in zip(nnx.to_flat_state(nnx.state(model, (nnx.Param, nnx.BatchStat))),
                                            nnx.to_flat_state(nnx.state(narrow["model"], (nnx.Param, nnx.BatchStat)))):
        np.testing.assert_array_equal(np.asarray(ours[...]), np.asarray(converted[...]), err_msg=str(path))
    assert cli.main(["--ckpt", f"gs://{bucket}/missing.ckpt", "--module", "transcription",
                     "--out", f"gs://{bucket}/w2"]) == 2
    assert f"gs://{bucket}/missing.ckpt" in capsys.readouterr().err
    assert cli.main(["--ckpt", str(narrow["path"]), "--module", "transcription",
                     "--out", "gs://no-such-bucket-z/w"]) == 2
    assert "gs://no-such-bucket-z does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_joint_checkpoint_round_trips_through_orbax(joint, tmp_path):
    out = convert.convert_checkpoint(joint["path"], tmp_path / "joint", "joint")
    config = run_dir.RunDir.at(out).read_config()
    assert config.stage == "joint" and config.model.separator.mode == "sum"
    _, params, stats, _ = nnx.split(joint["model"], nnx.Param, nnx.BatchStat, ...)
    tx, _ = make_optimizer(config.optimizer)  # save_model stores a fresh optimiser state too
    items = jax.eval_shape(lambda: dict(step=jnp.zeros((), jnp.int32), params=params, batch_stats=stats,
                                        opt_state=tx.init(params)))
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), items)
    mngr = ocp.CheckpointManager(run_dir.RunDir.at(out).checkpoints, options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        restored = mngr.restore(0, args=ocp.args.StandardRestore(target))
    finally:
        mngr.close()
    for name, tree in (("params", params), ("batch_stats", stats)):
        for (path, ours), (_, back) in zip(nnx.to_flat_state(tree), nnx.to_flat_state(restored[name])):
            np.testing.assert_array_equal(np.asarray(back[...]), np.asarray(ours[...]), err_msg=str(path))


def test_launch_script_runs_the_cli(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "launch" / "convert_torch_checkpoint.py"), "--ckpt",
                             str(tmp_path / "absent.ckpt"), "--module", "ir", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "absent.ckpt" in result.stderr and "does not exist" in result.stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------
# Errors: wrong module, wrong variant, truncated file, missing/unexpected/mis-shaped keys, ...
# ------------------------------------------------------------------------------------------------


def _cli_error(capsys, *argv):
    code = cli.main(list(argv))
    assert code == 2
    return capsys.readouterr().err


def test_wrong_module_names_what_the_checkpoint_is(narrow, tmp_path, capsys):
    err = _cli_error(capsys, "--ckpt", str(narrow["path"]), "--module", "ir", "--out", str(tmp_path / "o"))
    assert "does not match --module ir" in err
    assert "it is a --module transcription --variant narrow checkpoint" in err
    assert "'network.backbone.bn0.weight'" in err  # lists what was expected
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConversionError, match="does not match --module joint"):
        convert.check_state_dict(narrow["state_dict"], "joint", "narrow", source="x.ckpt")


def test_wrong_variant_names_the_mis_shaped_keys(narrow, capsys, tmp_path):
    err = _cli_error(capsys, "--ckpt", str(narrow["path"]), "--module", "transcription", "--variant", "wide",
                     "--out", str(tmp_path / "o"))
    assert "it is a --module transcription --variant narrow checkpoint" in err
    assert "'network.frame_model.acoustic.conv_block1.beta1.weight' (48, 40) (expected (64, 40))" in err


def test_bad_module_and_variant_arguments():
    with pytest.raises(ConversionError, match="--variant applies to transcription and joint only"):
        convert.check_module_and_variant("ir", "narrow")
    with pytest.raises(ConversionError, match="module must be one of"):
        convert.check_module_and_variant("separation", None)
    with pytest.raises(ConversionError, match="variant must be one of"):
        convert.check_module_and_variant("transcription", "medium")
    assert convert.check_module_and_variant("joint", None) == "narrow"


def test_truncated_file(narrow, tmp_path):
    data = Path(narrow["path"]).read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match=r"truncated\.ckpt.*not a readable PyTorch checkpoint"):
        load_state_dict(truncated)


def test_missing_file_and_non_lightning_file(tmp_path):
    with pytest.raises(ConversionError, match=r"absent\.ckpt.*does not exist"):
        load_state_dict(tmp_path / "absent.ckpt")
    bare = tmp_path / "bare.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, bare)
    with pytest.raises(ConversionError, match=r"bare\.pt.*not a PyTorch Lightning checkpoint.*'state_dict'"):
        load_state_dict(bare)
    odd = tmp_path / "odd.ckpt"
    torch.save({"state_dict": {"network.x": 3}}, odd)
    with pytest.raises(ConversionError, match=r"state_dict\['network.x'\] is a int, expected a tensor"):
        load_state_dict(odd)


def _narrow_state(narrow):
    return dict(narrow["state_dict"])


def test_missing_key_is_named(narrow, tmp_path, capsys):
    state = {k: torch.from_numpy(v) for k, v in narrow["state_dict"].items()
             if k != "network.frame_gru.bias_hh_l0_reverse"}
    path = save_ckpt(tmp_path / "missing.ckpt", state)
    err = _cli_error(capsys, "--ckpt", str(path), "--module", "transcription", "--out", str(tmp_path / "o"))
    assert "missing.ckpt" in err and "missing key(s) 'network.frame_gru.bias_hh_l0_reverse'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["missing.ckpt"]  # nothing written


def test_unexpected_and_mis_shaped_keys_are_named(narrow):
    state = _narrow_state(narrow)
    state["network.extra_head.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(ConversionError, match="unexpected key.*'network.extra_head.weight'"):
        convert.convert_state_dict(state, "transcription", "narrow")
    state = _narrow_state(narrow)
    state["network.frame_fc.weight"] = np.zeros((88, 511), np.float32)
    with pytest.raises(ConversionError, match=r"'network.frame_fc.weight' \(88, 511\) \(expected \(88, 512\)\)"):
        convert.convert_state_dict(state, "transcription", "narrow")


def test_front_end_buffers_are_checked_against_ours(narrow):
    state = _narrow_state(narrow)
    state["network.spec_layer.spectrogram.window"] = np.hanning(2048).astype(np.float32)  # symmetric Hann
    with pytest.raises(ConversionError, match="front-end buffer 'spec_layer.spectrogram.window' differs"):
        convert.convert_state_dict(state, "transcription", "narrow")


def test_float32_built_filterbank_differs_from_ours_by_rounding_only():
    """The checkpoints' filterbank is torchaudio's float32 build: it is not bit-equal to ours (so
    the synthetic checkpoints above, which carry it, exercise the tolerance), and its difference is
    the rounding the tolerance is sized for."""
    error = np.max(np.abs(torch_mel_filterbank().astype(np.float64) - audio.mel_filterbank()))
    assert 1e-5 < error < assign.MEL_FILTERBANK_ATOL / 4, error
    window_error = np.max(np.abs(torch.hann_window(2048).numpy() - audio.hann_window(2048)))
    assert window_error < assign.WINDOW_ATOL / 4, window_error


@pytest.mark.parametrize("what, fb", [
    ("slaney mel scale", lambda: torch_mel_filterbank(scale="slaney")),
    ("slaney area norm", lambda: torch_mel_filterbank(area_norm=True)),
    ("f_max 7999.9 Hz", lambda: torch_mel_filterbank(f_max=7999.9)),
    ("f_max 7999 Hz", lambda: torch_mel_filterbank(f_max=7999.0)),
    ("f_min 1 Hz", lambda: torch_mel_filterbank(f_min=1.0)),
    ("f_min 0.1 Hz", lambda: torch_mel_filterbank(f_min=0.1)),
    ("sample rate 22050 Hz", lambda: torch_mel_filterbank(sample_rate=22050)),
])
def test_another_filterbank_is_rejected(what, fb):
    with pytest.raises(ConversionError, match="front-end buffer 'spec_layer.mel_scale.fb' differs"):
        assign.check_front_end_buffer("spec_layer.mel_scale.fb", fb(), audio.mel_filterbank(), "x.ckpt")


@pytest.mark.parametrize("what, fb", [
    ("228 mel bins", lambda: torch_mel_filterbank(n_mels=228)),
    ("n_fft 1024", lambda: torch_mel_filterbank(n_freqs=513)),
])
def test_filterbank_of_another_size_is_rejected(what, fb):
    with pytest.raises(ConversionError, match=r"'spec_layer.mel_scale.fb' has shape \((1025, 228|513, 229)\)"):
        assign.check_front_end_buffer("spec_layer.mel_scale.fb", fb(), audio.mel_filterbank(), "x.ckpt")


def test_window_other_than_periodic_hann_is_rejected():
    for window in (torch.hann_window(2048, periodic=False), torch.hamming_window(2048)):
        with pytest.raises(ConversionError, match="'spec_layer.spectrogram.window' differs"):
            assign.check_front_end_buffer("spec_layer.spectrogram.window", window.numpy(),
                                          audio.hann_window(2048), "x.ckpt")


WINDOWS = [("spec_layer.spectrogram.window", 2048), ("unet_base.stft.window", 1024),
           ("unet_base.istft.window", 1024)]


@pytest.mark.parametrize("key, n_fft", WINDOWS)
def test_each_window_is_held_to_float32_rounding_not_to_the_filterbanks_tolerance(key, n_fft):
    """A window's tolerance sits between torch's float32 rounding (2.1e-7) and 1e-5: torch's own
    window passes, one nudged by 1e-5 (ten times below the filterbank's tolerance) is refused."""
    ours = audio.hann_window(n_fft)
    window = torch.hann_window(n_fft).numpy()
    assign.check_front_end_buffer(key, window, ours, "x.ckpt")
    rounded = window.copy()
    rounded[n_fft // 3] = np.float32(ours[n_fft // 3] + 5e-7)  # within rounding: accepted
    assign.check_front_end_buffer(key, rounded, ours, "x.ckpt")
    nudged = window.copy()
    nudged[n_fft // 3] = np.float32(ours[n_fft // 3] + 1e-5)
    with pytest.raises(ConversionError, match=rf"'{key}' differs from ours by up to 1e-05 \(more than float32 "
                                              rf"rounding, 1e-06"):
        assign.check_front_end_buffer(key, nudged, ours, "x.ckpt")


def test_the_filterbank_is_held_to_its_own_tolerance():
    """torchaudio's float32 filterbank (2.2e-5 off) and one entry moved by 5e-5 more pass; an entry
    moved by 2e-4 is refused."""
    ours = audio.mel_filterbank()
    fb = torch_mel_filterbank()
    assign.check_front_end_buffer("spec_layer.mel_scale.fb", fb, ours, "x.ckpt")
    row, col = np.unravel_index(np.argmax(ours), ours.shape)
    for delta, accepted in ((5e-5, True), (-5e-5, True), (2e-4, False)):
        moved = fb.copy()
        moved[row, col] = np.float32(ours[row, col] + delta)
        if accepted:
            assign.check_front_end_buffer("spec_layer.mel_scale.fb", moved, ours, "x.ckpt")
        else:
            with pytest.raises(ConversionError, match=r"'spec_layer.mel_scale.fb' differs from ours by up to "
                                                      r"0.0002 \(more than float32 rounding, 1e-04"):
                assign.check_front_end_buffer("spec_layer.mel_scale.fb", moved, ours, "x.ckpt")


def test_a_checkpoint_with_a_nudged_separator_window_is_refused(joint):
    """The whole conversion path picks the window tolerance for the separator's STFT windows too."""
    state = dict(joint["state_dict"])
    key = next(k for k in state if k.endswith("unet_base.istft.window"))
    nudged = np.array(state[key], np.float32)
    nudged[100] += np.float32(1e-5)
    state[key] = nudged
    with pytest.raises(ConversionError, match="front-end buffer 'unet_base.istft.window' differs"):
        convert.convert_state_dict(state, "joint", "narrow")


def test_non_finite_buffer_is_rejected():
    fb = torch_mel_filterbank()
    fb[3, 4] = np.nan
    with pytest.raises(ConversionError, match="differs from ours by up to nan"):
        assign.check_front_end_buffer("spec_layer.mel_scale.fb", fb, audio.mel_filterbank(), "x.ckpt")


def test_negative_running_variance_is_rejected(narrow):
    state = _narrow_state(narrow)
    state["network.bn0.running_var"] = -np.ones(229, np.float32)
    with pytest.raises(ConversionError, match="'bn0.running_var'.*negative"):
        convert.convert_state_dict(state, "transcription", "narrow")


def test_norm_epsilon_other_than_torchs_is_rejected():
    class Tiny(nnx.Module):
        def __init__(self):
            self.ok = nnx.BatchNorm(3, epsilon=1e-5, rngs=nnx.Rngs(0))
            self.bad = nnx.LayerNorm(3, epsilon=1e-6, rngs=nnx.Rngs(0))

    with pytest.raises(ConversionError, match="LayerNorm at bad has epsilon 1e-06, the reference uses 1e-05"):
        assign.check_norm_epsilons(Tiny(), what="x.ckpt")


def test_existing_output_is_refused_and_failures_leave_nothing(narrow, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ConversionError, match="already exists"):
        convert.convert_checkpoint(narrow["path"], out, "transcription")

    def failing_save(workdir, config, model):
        (Path(workdir) / "partial").write_text("half")
        raise OSError("disk full")

    monkeypatch.setattr(runs, "save_model", failing_save)
    with pytest.raises(OSError, match="disk full"):
        convert.convert_checkpoint(narrow["path"], out, "transcription", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the temp dir is gone, out untouched
    assert list(out.iterdir()) == []


class HydraLikeConfig:
    """Stands for a class of another library pickled in a checkpoint's ``hyper_parameters``."""

    def __init__(self, value):
        self.value = value


def test_foreign_objects_in_hyper_parameters_are_stubbed_not_executed(tmp_path):
    path = save_ckpt(tmp_path / "hp.ckpt", {"network.w": torch.ones(2)},
                     hyper_parameters={"cfg": HydraLikeConfig(3)})
    with pytest.raises(pickle.UnpicklingError):  # what plain weights-only loading does
        torch.load(path, weights_only=True)
    state = load_state_dict(path)
    assert list(state) == ["network.w"] and state["network.w"].tolist() == [1.0, 1.0]


def test_package_imports_without_torch():
    code = ("import sys; import jointist_jax.convert, jointist_jax.convert.convert, jointist_jax.convert.cli; "
            "import jointist_jax.models.jointist; assert 'torch' not in sys.modules, 'torch was imported'")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
