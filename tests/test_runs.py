"""A trained run (jointist_jax/runs.py): opened once, its arrays' shapes from one place, its
parameters and statistics restored without an optimiser."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import configs.ir
from jointist_jax import optimizer, run_dir, runs, stages


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny ir run with checkpoints 3 and 5 (different weights) and the models saved in them."""
    config = configs.ir.get_config("runlocal")
    run = run_dir.RunDir.at(tmp_path_factory.mktemp("runs") / "ir")
    run.write_config(config)
    tx, _ = optimizer.make_optimizer(config.optimizer)
    models = {}
    mngr = runs.manager(run, keep=2, asynchronous=False)
    try:
        for step, seed in ((3, 0), (5, 1)):
            models[step] = stages.build_model(config, nnx.Rngs(seed))
            arrays = runs.model_arrays(models[step])
            runs.save(mngr, step, runs.checkpoint_items(jnp.asarray(step, jnp.int32), arrays,
                                                        tx.init(arrays["params"])), force=True)
            mngr.wait_until_finished()
    finally:
        mngr.close()
    return run.root, config, models


def _params(model):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, (nnx.Param, nnx.BatchStat)))]


def test_open_resolves_directory_step_and_config_once(saved, monkeypatch):
    workdir, config, _ = saved
    calls = {"locate": 0, "read_config": 0}
    locate, read_config = run_dir.locate, run_dir.RunDir.read_config

    def counting_locate(path):
        calls["locate"] += 1
        return locate(path)

    def counting_read_config(self):
        calls["read_config"] += 1
        return read_config(self)

    monkeypatch.setattr(run_dir, "locate", counting_locate)
    monkeypatch.setattr(run_dir.RunDir, "read_config", counting_read_config)
    for path, step in ((workdir, 5), (workdir / "checkpoints", 5), (workdir / "checkpoints" / "3", 3)):
        trained = runs.open(path)
        assert (trained.dir.root, trained.step, trained.path) == (workdir, step, str(path))
        assert trained.config.to_json_best_effort() == config.to_json_best_effort() and trained.stage is stages.IR
        assert trained.checkpoint == workdir / "checkpoints" / str(step)
    assert calls == {"locate": 3, "read_config": 3}
    runs.load_model(trained)  # restoring locates nothing again
    assert calls == {"locate": 3, "read_config": 3}


def test_open_names_the_flag_and_the_path(saved, tmp_path):
    with pytest.raises(runs.CheckpointError, match=r"^--ir_checkpoint '.*nothing': checkpoint path .* does not exist"):
        runs.open(tmp_path / "nothing", role="--ir_checkpoint")
    with pytest.raises(run_dir.RunNotFoundError, match="does not exist"):
        runs.open(tmp_path / "nothing", role=None)


def test_abstract_arrays_are_the_shapes_of_the_built_model(saved):
    _, config, models = saved
    abstract = runs.abstract_arrays(config)
    real = runs.model_arrays(models[3])
    assert set(abstract) == {"params", "batch_stats"}
    assert all(isinstance(a, jax.ShapeDtypeStruct) for a in jax.tree.leaves(abstract))
    assert jax.tree.structure(abstract) == jax.tree.structure(real)
    assert [(a.shape, a.dtype) for a in jax.tree.leaves(abstract)] == \
        [(r.shape, r.dtype) for r in jax.tree.leaves(real)]
    assert len(jax.tree.leaves(abstract["batch_stats"])) > 0  # the recognizer has BatchNorm statistics


def test_load_model_restores_parameters_and_statistics_without_an_optimiser(saved, tmp_path, monkeypatch):
    workdir, config, models = saved

    def no_optimiser(*args, **kwargs):
        raise AssertionError("loading a model built an optimiser")

    monkeypatch.setattr(optimizer, "make_optimizer", no_optimiser)
    for step in (3, 5):
        model = runs.load_model(runs.open(workdir / "checkpoints" / str(step)))
        for ours, back in zip(_params(models[step]), _params(model), strict=True):
            np.testing.assert_array_equal(back, ours)
    # A checkpoint whose optimiser state no optimiser of ours would make still loads: only the
    # parameters and statistics are read (orbax partial restore).
    run = run_dir.RunDir.at(tmp_path / "odd")
    run.write_config(config)
    mngr = runs.manager(run, keep=1, asynchronous=False)
    try:
        items = runs.checkpoint_items(jnp.asarray(9, jnp.int32), runs.model_arrays(models[5]),
                                      {"unknown": jnp.zeros(7)})
        runs.save(mngr, 9, items, force=True)
        mngr.wait_until_finished()
    finally:
        mngr.close()
    model = runs.load_model(runs.open(run.root))
    for ours, back in zip(_params(models[5]), _params(model), strict=True):
        np.testing.assert_array_equal(back, ours)


def test_a_checkpoint_of_another_model_is_an_error_naming_the_arrays(saved):
    workdir, config, _ = saved
    other = config.copy_and_resolve_references()
    other.model.recognizer.d_model = config.model.recognizer.d_model * 2
    trained = runs.open(workdir, role="--ir_checkpoint").with_config(other)
    with pytest.raises(runs.CheckpointError, match=r"^--ir_checkpoint '.*': cannot restore the checkpoint: .*\(stage 'ir'\): "
                                                   r"params\.conv\.bias\.value: checkpoint \(16,\) vs config \(32,\); "):
        runs.load_model(trained)
