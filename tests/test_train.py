"""The real train_and_evaluate on tiny configs and tiny synthetic data, on 8 simulated CPU devices.

Covers every stage, init_from, exact resume (in-process and after SIGKILL), restoring on another
device count, SIGTERM handling, the non-finite-loss guard and a two-process run.
"""

from __future__ import annotations

import importlib
import signal
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow as tf

from launch_helpers import checkpoint_params, config_flags, run_train, wait_for_line

from jointist_jax import run_dir
from jointist_jax.data import pipeline
from jointist_jax.train import distributed, trainer


def tiny_config(name: str, data_dir, **overrides):
    """The stage's runlocal config on the tiny dataset, 8 clips per step (one per device)."""
    stage, _, arg = name.partition(":")
    config = importlib.import_module(f"configs.{stage}").get_config(arg or "runlocal")
    config.data.data_dir = str(data_dir)
    config.data.global_batch = 8
    config.data.eval_batches = 1
    config.total_steps = 2
    config.log_every = 1
    config.checkpoint_every = 2
    config.eval_every = 1000
    for key, value in overrides.items():
        target = config
        *path, leaf = key.split(".")
        for part in path:
            target = target[part]
        target[leaf] = value
    return config


def scalars(workdir: Path) -> dict[str, list[float]]:
    """Every scalar in a workdir's TensorBoard event files."""
    values: dict[str, list[float]] = {}
    for path in sorted((workdir / "tensorboard").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                values.setdefault(value.tag, []).append(number)
    return values


def saved_steps(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def flat_params(state) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(state.params)]


@pytest.fixture(scope="module")
def transcription_run(tiny_tfds_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("transcription")
    state = trainer.train_and_evaluate(tiny_config("transcription", tiny_tfds_dir), str(workdir))
    return workdir, state


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ir", "separation", "joint_scratch"])
def test_stage_trains_checkpoints_and_logs(name, tiny_tfds_dir, tmp_path):
    state = trainer.train_and_evaluate(tiny_config(name, tiny_tfds_dir), str(tmp_path))
    assert int(state.step) == 2
    assert saved_steps(tmp_path) == [2]
    logged = scalars(tmp_path)
    assert len(logged["train/loss"]) == 2 and np.all(np.isfinite(logged["train/loss"]))
    for key in ("train/learning_rate", "train/grad_norm", "train/param_norm", "train/steps_per_second",
                "train/examples_per_second", "train/wall_time_seconds", "valid/loss"):
        assert key in logged, key
    assert len(logged["valid/loss"]) == 2  # validation at the first and the last step
    module_loss = {"ir": "ir_loss", "separation": "separation_loss", "joint_scratch": "separation_loss"}[name]
    assert f"train/{module_loss}" in logged and f"valid/{module_loss}" in logged
    assert run_dir.RunDir.at(tmp_path).read_config().stage == tiny_config(name, tiny_tfds_dir).stage


@pytest.mark.slow
def test_transcription_stage(transcription_run):
    workdir, state = transcription_run
    assert int(state.step) == 2 and saved_steps(workdir) == [2]
    logged = scalars(workdir)
    assert np.all(np.isfinite(logged["train/transcription_loss"]))
    assert logged["train/learning_rate"][0] == 0.0  # LambdaLR: the first update has lr 0


@pytest.mark.slow
def test_joint_pretrained_starts_from_the_transcription_checkpoint(transcription_run, tiny_tfds_dir, tmp_path):
    source_dir, source_state = transcription_run
    config = tiny_config("joint_pretrained", tiny_tfds_dir, total_steps=1, init_from=str(source_dir))
    state = trainer.train_and_evaluate(config, str(tmp_path))
    # Step 0 has learning rate 0, so after one step the transcriber still holds the source's weights.
    joint = jax.tree.leaves(state.params["transcriber"])
    for got, want in zip(joint, jax.tree.leaves(source_state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_joint_pretrained_requires_init_from(tiny_tfds_dir, tmp_path):
    with pytest.raises(ValueError, match="init_from"):
        trainer.train_and_evaluate(tiny_config("joint_pretrained", tiny_tfds_dir), str(tmp_path))


RESUME_OVERRIDES = dict(total_steps=4, checkpoint_every=1, **{"data.eval_batches": 0})
# The XLA CPU client of a 1-device process rounds differently from one device of an 8-device
# process: after one step the parameters differ by at most one float32 ulp (largest difference
# measured: 3.0e-8, on a weight near 0.25). The step itself moves parameters by about 1e-4, and a
# step on another batch or from another optimiser state differs by as much.
ONE_DEVICE_TOLERANCE = dict(rtol=5e-7, atol=5e-9)


@pytest.fixture(scope="module")
def uninterrupted_run(tiny_tfds_dir, tmp_path_factory):
    """Four transcription steps in one go: what every interrupted run must reproduce."""
    config = tiny_config("transcription", tiny_tfds_dir, **RESUME_OVERRIDES)
    return trainer.train_and_evaluate(config, str(tmp_path_factory.mktemp("uninterrupted")))


@pytest.mark.slow
def test_resume_in_process_is_bitwise_exact(uninterrupted_run, tiny_tfds_dir, tmp_path):
    trainer.train_and_evaluate(tiny_config("transcription", tiny_tfds_dir, **dict(RESUME_OVERRIDES, total_steps=2)),
                               str(tmp_path))
    resumed = trainer.train_and_evaluate(tiny_config("transcription", tiny_tfds_dir, **RESUME_OVERRIDES),
                                         str(tmp_path))
    for a, b in zip(flat_params(uninterrupted_run), flat_params(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tiny_tfds_dir, tmp_path, monkeypatch):
    """A NaN in step 2's targets makes its loss NaN: the guard stops there, naming the loss."""
    real = trainer.pipeline.make_train_iterator

    class PoisonedSecondBatch:
        def __init__(self, *args, **kwargs):
            self.pipe = real(*args, **kwargs)

        def __iter__(self):
            for step, batch in enumerate(self.pipe, start=1):
                if step == 2:
                    batch = dict(batch, frame_roll=jax.jit(lambda r: r * np.float32(np.nan))(batch["frame_roll"]))
                yield batch

        def close(self):
            self.pipe.close()

    monkeypatch.setattr(trainer.pipeline, "make_train_iterator", PoisonedSecondBatch)
    config = tiny_config("transcription", tiny_tfds_dir, total_steps=4, checkpoint_every=1,
                         **{"data.eval_batches": 0})
    with pytest.raises(trainer.NonFiniteLossError,
                       match=r"non-finite loss = nan at step 2.*last good checkpoint is step 1"):
        trainer.train_and_evaluate(config, str(tmp_path))
    assert saved_steps(tmp_path) == [1]


def test_the_guard_reads_the_loss_before_the_parameter_norm(tmp_path):
    class Manager:
        directory = tmp_path

        def latest_step(self):
            return 7

    with pytest.raises(trainer.NonFiniteLossError, match="non-finite transcription_loss = inf at step 8"):
        trainer.check_finite(8, {"param_norm": float("nan"), "transcription_loss": float("inf")}, Manager())
    with pytest.raises(trainer.NonFiniteLossError, match="non-finite param_norm = nan"):
        trainer.check_finite(8, {"param_norm": float("nan"), "loss": 1.0}, Manager())
    trainer.check_finite(8, {"param_norm": 3.0, "loss": 1.0, "grad_norm": float("inf")}, Manager())


@pytest.mark.slow
def test_sigkill_then_restart_matches_uninterrupted_run(uninterrupted_run, tiny_tfds_dir, tmp_path):
    overrides = dict(total_steps=4, checkpoint_every=1)
    proc = run_train(config_flags("transcription:runlocal", tiny_tfds_dir, tmp_path, **overrides))
    wait_for_line(proc, "step 3/4", timeout=400)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    restarted = run_train(config_flags("transcription:runlocal", tiny_tfds_dir, tmp_path, **overrides))
    out, _ = restarted.communicate(timeout=400)
    assert restarted.returncode == 0, out
    assert "resumed from" in out
    for a, b in zip(flat_params(uninterrupted_run), checkpoint_params(tmp_path, 4), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly_and_resumes_on_one_device(tiny_tfds_dir, tmp_path):
    overrides = dict(total_steps=50, checkpoint_every=100)
    proc = run_train(config_flags("transcription:runlocal", tiny_tfds_dir, tmp_path, **overrides))
    lines = wait_for_line(proc, "step 1/50", timeout=400)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, "".join(lines) + out
    steps = saved_steps(tmp_path)
    assert len(steps) == 1 and 1 <= steps[0] < 50, steps
    # Restored onto one device through the trainer's own path, every saved value comes back.
    config = tiny_config("transcription", tiny_tfds_dir, **overrides)
    run = trainer.Run(config, distributed.data_mesh(jax.devices()[:1]))
    mngr = ocp.CheckpointManager(tmp_path / "checkpoints", options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        items = run.restore_items(mngr, steps[0])
    finally:
        mngr.close()
    restored = [np.asarray(x) for x in jax.tree.leaves(items["params"])]
    assert {d for x in jax.tree.leaves(items) for d in x.devices()} == {jax.devices()[0]}
    for a, b in zip(restored, checkpoint_params(tmp_path, steps[0]), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(items["step"]) == steps[0]
    # The 8-device checkpoint resumes on a single device and trains on.
    one_device = run_train(config_flags("transcription:runlocal", tiny_tfds_dir, tmp_path,
                                        total_steps=steps[0] + 1, checkpoint_every=100), devices=1)
    out, _ = one_device.communicate(timeout=400)
    assert one_device.returncode == 0, out
    assert "resumed from" in out and f"final step {steps[0] + 1}" in out
    # Its step is one step of the saved state (parameters, statistics, optimiser) on the batch and
    # dropout key of that step: the same step taken here on one device of this 8-device process.
    state = run.state_from_items(items, run.init_state().rest)
    with pipeline.make_train_iterator(str(tiny_tfds_dir), "train", trainer._input_spec(config), run.mesh,
                                      start_step=steps[0]) as batches:
        state, _ = run.train_step(state, next(iter(batches)))
    assert int(state.step) == steps[0] + 1
    resumed = checkpoint_params(tmp_path, steps[0] + 1)
    for a, b in zip(flat_params(state), resumed, strict=True):
        np.testing.assert_allclose(a, b, **ONE_DEVICE_TOLERANCE)
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(resumed, restored, strict=True))
    assert moved > 1e-5, moved  # the step itself (about 1e-4) is far above that rounding


@pytest.mark.slow
def test_each_validation_saves_and_the_best_is_kept_beside_the_last(tiny_tfds_dir, tmp_path, monkeypatch):
    """The reference's save_top_k=1: a checkpoint with the lowest validation loss survives
    keep_checkpoints=1, and run_dir finds it as ``best``."""
    reported = {}
    real_report = trainer._report_validation

    def record(step, losses, writer):
        reported[step] = losses["loss"]
        real_report(step, losses, writer)

    monkeypatch.setattr(trainer, "_report_validation", record)
    config = tiny_config("transcription", tiny_tfds_dir, total_steps=4, eval_every=1, checkpoint_every=100,
                         keep_checkpoints=1, **{"data.eval_batches": -1})
    # Step 1 runs at lr 0 (the warm-up starts at 0); then Adam steps of 1.0 throw the model far
    # off, so the validation loss rises and the best checkpoint is an early one, not the last.
    config.optimizer.lr, config.optimizer.warmup_steps = 1.0, 1
    trainer.train_and_evaluate(config, str(tmp_path))
    validated = {step: loss for step, loss in reported.items() if step > 0}
    assert sorted(validated) == [1, 2, 3, 4]
    best = min(validated, key=validated.get)
    run = run_dir.RunDir.at(tmp_path)
    assert best < 4 and run.best_step() == best and run.saved_steps() == [best, 4]
    assert run.resolve_step("best") == best


def test_validation_on_the_whole_split(tiny_tfds_dir):
    """eval_batches=-1 reads every validation batch (2 tracks, one clip per batch here)."""
    config = tiny_config("transcription", tiny_tfds_dir)
    config.data.global_batch = 1
    run = trainer.Run(config, distributed.data_mesh(jax.devices()[:1]))
    state = run.init_state()
    losses = {}
    for batches in (-1, 1, 2):
        config.data.eval_batches = batches
        losses[batches] = trainer._evaluate(run, state, config, tiny_tfds_dir)["loss"]
    assert losses[-1] == losses[2] != losses[1]
