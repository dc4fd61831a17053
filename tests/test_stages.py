"""The stage registry (jointist_jax/stages.py) and ``TrainState.create``.

A toy stage registered from here is built, initialised and stepped by the trainer's own ``Run``,
as docs/adding_a_stage.md describes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import ir as ir_config
from jointist_jax.data import pipeline
from jointist_jax import runs, stages
from jointist_jax.data.spec import InputSpec, input_spec
from jointist_jax.optimizer import make_optimizer
from jointist_jax.train import distributed, trainer
from jointist_jax.train.steps import TrainState, stage_losses


# ------------------------------------------------------------------------------ the registered stages
def test_the_four_stages_are_registered_with_their_data_and_abilities():
    assert stages.names()[:4] == ("ir", "transcription", "separation", "joint")
    table = {s.name: (s.targets, s.stems, s.transcribes, s.separates, s.recognizes) for s in stages.all_stages()}
    assert table["ir"] == (False, False, False, False, True)
    assert table["transcription"] == (True, False, True, False, False)
    assert table["separation"] == (False, True, False, False, False)
    assert table["joint"] == (True, True, True, True, False)
    assert stages.get("joint").init_source_submodule("transcription") == "transcriber"
    assert stages.get("joint").init_source_submodule("ir") is None
    assert stages.get("transcription").init_sources == ()


def test_unknown_stage_names_are_rejected_with_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown stage 'nope'; config.stage must be one of \('ir', "):
        stages.get("nope")
    config = ir_config.get_config("runlocal")
    config.stage = "nope"
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        stages.build_model(config, nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        stage_losses(None, {}, "nope", None)
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        stages.unregister("nope")
    with pytest.raises(ValueError, match="already registered"):
        stages.register(stages.get("ir"))
    with pytest.raises(TypeError, match="expects a Stage"):
        stages.register("ir")


def test_unknown_stage_stops_training_before_anything_is_written(tmp_path):
    config = ir_config.get_config("runlocal")
    config.stage = "nope"
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        trainer.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ a toy extra stage
class _Loudness(nnx.Module):
    """Per-quarter log energies of the waveform -> BatchNorm -> 40 logits."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.norm = nnx.BatchNorm(4, rngs=rngs)
        self.linear = nnx.Linear(4, 40, rngs=rngs)

    def __call__(self, waveform):
        quarters = waveform.reshape(waveform.shape[0], 4, -1)
        return self.linear(self.norm(jnp.log(jnp.mean(quarters ** 2, axis=-1) + 1e-6)))


def _toy_losses(model, batch, rngs):
    loss = jnp.mean(optax.sigmoid_binary_cross_entropy(model(batch["waveform"]), batch["instruments"]))
    return loss, {"toy_loss": loss}


@pytest.fixture
def toy_stage():
    stage = stages.register(stages.Stage(name="toy", build=lambda config, rngs: _Loudness(rngs=rngs),
                                         losses=_toy_losses, recognizes=True))
    yield stage
    stages.unregister("toy")
    assert "toy" not in stages.names()


def _toy_batch(spec, clips: int) -> dict:
    rng = np.random.default_rng(0)
    fields = {name: shape for name, _, shape in spec.fields()}
    assert set(fields) == {"waveform", "instruments"}  # no rows: recognizer-style batches
    return {"waveform": rng.uniform(-0.5, 0.5, (clips,) + fields["waveform"]).astype(np.float32),
            "instruments": (rng.random((clips,) + fields["instruments"]) < 0.3).astype(np.float32)}


def test_a_registered_toy_stage_builds_steps_and_learns_through_the_trainer(toy_stage):
    config = ir_config.get_config("runlocal")
    config.stage = "toy"
    config.data.global_batch, config.data.clip_seconds = 4, 0.25
    config.optimizer.lr, config.optimizer.warmup_steps = 0.05, 1
    assert stages.get("toy") is toy_stage
    assert isinstance(stages.build_model(config, nnx.Rngs(0)), _Loudness)
    assert "toy" in runs._stages_that("recognizes")

    mesh = distributed.data_mesh(jax.devices()[:1])
    run = trainer.Run(config, mesh)
    assert run.stage is toy_stage
    state = run.init_state()
    assert int(state.step) == 0 and set(state.params) == {"norm", "linear"}
    batch = jax.device_put(_toy_batch(input_spec(toy_stage, config), 4), distributed.batch_sharding(mesh))
    first = jax.device_get(run.eval_step(state, batch))
    assert first["weight"] == 4.0 and first["loss"] == pytest.approx(first["toy_loss"])
    initial_kernel = np.asarray(state.params["linear"]["kernel"][...])
    losses = []
    for _ in range(30):
        state, metrics = run.train_step(state, batch)
        losses.append(float(metrics["toy_loss"]))
    assert int(state.step) == 30 and np.all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0]  # it fits the one batch
    assert not np.allclose(np.asarray(state.params["linear"]["kernel"][...]), initial_kernel)
    # BatchNorm statistics moved in train mode.
    assert not np.allclose(np.asarray(state.batch_stats["norm"]["mean"][...]), 0.0)
    # Evaluation reads the new parameters (with running statistics, so not the train loss).
    after = float(jax.device_get(run.eval_step(state, batch))["toy_loss"])
    assert np.isfinite(after) and after != pytest.approx(float(first["toy_loss"]))


def test_an_unregistered_stage_object_drives_a_run_too():
    """The train-step benchmark's GT-roll separator is a Stage that no config names: ``Run`` builds
    that stage's model and minimises its loss, not those of ``config.stage``."""
    stage = stages.Stage(name="toy_unregistered", build=lambda config, rngs: _Loudness(rngs=rngs),
                         losses=_toy_losses)
    assert "toy_unregistered" not in stages.names()
    config = ir_config.get_config("runlocal")  # config.stage is "ir"
    config.data.global_batch, config.data.clip_seconds = 4, 0.25
    mesh = distributed.data_mesh(jax.devices()[:1])
    run = trainer.Run(config, mesh, stage=stage)
    assert run.stage is stage
    state = run.init_state()
    assert set(state.params) == {"norm", "linear"}  # the toy's module, not the recognizer
    batch = _toy_batch(input_spec(stage, config), 4)
    # The toy loss of the toy module, computed here outside the run.
    model = nnx.merge(run.eval_graphdef, state.params, state.batch_stats, state.rest)
    expected = float(_toy_losses(model, batch, None)[0])
    evaluated = jax.device_get(run.eval_step(state, jax.device_put(batch, distributed.batch_sharding(mesh))))
    assert set(evaluated) == {"toy_loss", "loss", "weight"}
    assert float(evaluated["toy_loss"]) == pytest.approx(expected, rel=1e-6)
    _, trained = run.train_step(state, jax.device_put(batch, distributed.batch_sharding(mesh)))
    assert {"toy_loss", "loss"} <= set(trained) and not {"ir_loss"} & set(trained)
    assert float(trained["loss"]) == pytest.approx(float(trained["toy_loss"]))


# ------------------------------------------------------------------------------ input settings in a run
class _BatchSpy:
    """Wraps the real input pipeline of a run and keeps the host copy of every batch it yields."""

    def __init__(self, real, seen: list):
        self._real, self._seen = real, seen

    def __call__(self, data_dir, split, spec, *args, **kwargs):
        pipe = self._real(data_dir, split, spec, *args, **kwargs)
        seen = self._seen

        class Recorded:
            def __iter__(self):
                for batch in pipe:
                    if spec.random_crop:
                        seen.append(jax.device_get(batch))
                    yield batch

            def close(self):
                pipe.close()

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                pipe.close()

        return Recorded()


def _toy_run_batches(tiny_tfds_dir, workdir, monkeypatch, **data) -> tuple[dict, object]:
    """The batch a one-step toy-stage run trains on, and the run's final state."""
    config = ir_config.get_config("runlocal")
    config.stage, config.seed = "toy", data.pop("seed", 0)
    config.data.update(data_dir=str(tiny_tfds_dir), global_batch=8, eval_batches=0, **data)
    config.update(total_steps=1, checkpoint_every=100, log_every=1)
    seen = []
    with monkeypatch.context() as patch:
        patch.setattr(trainer.pipeline, "make_train_iterator", _BatchSpy(pipeline.make_train_iterator, seen))
        state = trainer.train_and_evaluate(config, str(workdir))
    assert len(seen) >= 1 and int(state.step) == 1
    return seen[0], state


def _pipeline_batch(tiny_tfds_dir, **options) -> dict:
    """The first training batch the input pipeline builds on its own (one host)."""
    spec = InputSpec(global_batch=8, clip_seconds=2.0, targets=False, stems=False, **options)
    with pipeline.make_train_iterator(str(tiny_tfds_dir), "train", spec, process_index=0, process_count=1) as pipe:
        return next(pipe.local_batches())


def test_a_run_trains_on_the_batches_of_its_seed(toy_stage, tiny_tfds_dir, tmp_path, monkeypatch):
    default, _ = _toy_run_batches(tiny_tfds_dir, tmp_path / "seed0", monkeypatch)
    seeded, _ = _toy_run_batches(tiny_tfds_dir, tmp_path / "seed5", monkeypatch, seed=5)
    np.testing.assert_array_equal(default["waveform"], _pipeline_batch(tiny_tfds_dir, seed=0)["waveform"])
    np.testing.assert_array_equal(seeded["waveform"], _pipeline_batch(tiny_tfds_dir, seed=5)["waveform"])
    assert not np.array_equal(seeded["waveform"], default["waveform"])


def test_a_run_with_all_audio_crop_sampling_trains_on_its_batches(toy_stage, tiny_tfds_dir, tmp_path, monkeypatch):
    batch, state = _toy_run_batches(tiny_tfds_dir, tmp_path, monkeypatch, crop_sampling="all_audio")
    all_audio = _pipeline_batch(tiny_tfds_dir, crop_sampling="all_audio")
    per_track = _pipeline_batch(tiny_tfds_dir, crop_sampling="per_track")
    np.testing.assert_array_equal(batch["waveform"], all_audio["waveform"])
    np.testing.assert_array_equal(batch["instruments"], all_audio["instruments"])
    # The same seed draws other crops: one per slice of all crop starts, not one per track.
    per_track_clips = {bytes(clip) for clip in per_track["waveform"]}
    assert sum(bytes(clip) not in per_track_clips for clip in all_audio["waveform"]) >= 6
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(jax.device_get(state.params)))


# ------------------------------------------------------------------------------ TrainState.create
def test_train_state_create_holds_the_model_state_and_a_fresh_optimiser():
    config = ir_config.get_config("runlocal")
    model = stages.build_model(config, nnx.Rngs(0))
    tx, _ = make_optimizer(config.optimizer)
    state = TrainState.create(model, tx, step=7)
    assert state.step.dtype == jnp.int32 and int(state.step) == 7
    params = nnx.state(model, nnx.Param)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), state.params, params))
    assert jax.tree.structure(state.opt_state) == jax.tree.structure(tx.init(params))
    assert set(state.checkpoint_items()) == {"step", "params", "batch_stats", "opt_state"}
    assert TrainState.create(model).opt_state is None
    restored = TrainState.from_checkpoint_items(state.checkpoint_items(), state.rest)
    assert int(restored.step) == 7 and restored.params is state.params
    abstract = jax.eval_shape(lambda: TrainState.create(stages.build_model(config, nnx.Rngs(0)), tx))
    assert abstract.step.shape == () and jax.tree.structure(abstract.params) == jax.tree.structure(state.params)
