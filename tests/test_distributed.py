"""The data-parallel mesh, parameter shardings, and global-batch statistics in a sharded step."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, PartitionSpec

from configs import transcription
from jointist_jax.train import distributed
from jointist_jax.train.trainer import Run
from launch_helpers import ROOT, free_port


def test_data_mesh_spans_all_devices_with_auto_axis():
    mesh = distributed.data_mesh()
    assert mesh.axis_names == ("data",) and mesh.size == len(jax.devices()) == 8
    assert mesh.axis_types == (AxisType.Auto,)


def test_parameter_sharding_rule():
    mesh = distributed.data_mesh()
    big = distributed.parameter_sharding((3, 1024, 16), mesh, shard=True, min_size=1000)
    assert big.spec == PartitionSpec(None, "data", None)
    indivisible = distributed.parameter_sharding((3, 5, 7), mesh, shard=True, min_size=10)
    assert indivisible.spec == PartitionSpec()
    small = distributed.parameter_sharding((16,), mesh, shard=True, min_size=1000)
    assert small.spec == PartitionSpec()
    off = distributed.parameter_sharding((3, 1024, 16), mesh, shard=False, min_size=1000)
    assert off.spec == PartitionSpec()


def test_initialize_needs_all_three_flags():
    with pytest.raises(ValueError, match="num_processes"):
        distributed.initialize("127.0.0.1:1234", None, None)


def test_batchnorm_statistics_cover_the_global_batch():
    """A batch sharded over 8 devices updates BatchNorm with the statistics of all 8 shards."""
    mesh = distributed.data_mesh()
    bn = nnx.BatchNorm(4, momentum=0.0, use_fast_variance=False, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(bn)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 4)) * np.arange(1, 9)[:, None], jnp.float32)
    x = jax.device_put(x, distributed.batch_sharding(mesh))

    @jax.jit
    def update(state, x):
        module = nnx.merge(graphdef, state, copy=True)
        module(x)
        return nnx.state(module)

    new = update(state, x)
    np.testing.assert_allclose(np.asarray(new["mean"][...]), np.asarray(x).mean(0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(new["var"][...]), np.asarray(x).var(0), rtol=1e-5)


def _random_batch(config, mesh):
    rng = np.random.default_rng(0)
    b, k = config.data.global_batch, config.data.num_positive + config.data.num_negative
    length = int(config.data.clip_seconds * 16000)
    frames = length // 160 + 1
    rolls = {name: (rng.random((b, k, frames, 88)) > 0.9).astype(np.float32)
             for name in ("onset_roll", "reg_onset_roll", "frame_roll")}
    batch = dict(waveform=rng.normal(size=(b, length)).astype(np.float32) * 0.1,
                 conditions=np.eye(40, dtype=np.float32)[rng.integers(0, 39, (b, k))],
                 mask_roll=np.ones((b, k, frames, 88), np.float32), **rolls)
    return jax.device_put(batch, distributed.batch_sharding(mesh))


def test_sharded_parameters_train_like_replicated_ones():
    mesh = distributed.data_mesh()
    results, initial = [], None
    for shard in (False, True):
        config = transcription.get_config("runlocal")
        config.data.global_batch = 8
        config.data.clip_seconds = 0.5
        config.shard_params = shard
        config.shard_params_min_size = 1024
        run = Run(config, mesh)
        state = run.init_state()
        specs = {leaf.sharding.spec for leaf in jax.tree.leaves(state.params)}
        assert any("data" in tuple(s) for s in specs) == shard
        if initial is None:
            initial = [np.asarray(x) for x in jax.tree.leaves(state.params)]
        for _ in range(2):
            state, metrics = run.train_step(state, _random_batch(config, mesh))
        results.append((float(metrics["loss"]), [np.asarray(x) for x in jax.tree.leaves(state.params)]))
    (loss_a, params_a), (loss_b, params_b) = results
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5)
    # The step-2 update (warm-up lr 3e-3 / 50) moves parameters by about 6e-5; the two layouts
    # must agree far more closely than that, up to float summation order.
    update = max(float(np.max(np.abs(a - i))) for a, i in zip(params_a, initial))
    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(params_a, params_b))
    assert update > 3e-5 and difference < update / 20, (update, difference)


_LATE_PROCESS = """
import sys, time
import jax, numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from jointist_jax.train import distributed
port, pid, late = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
distributed.initialize(f"127.0.0.1:{port}", 2, pid)
mesh = distributed.data_mesh()
sharding = distributed.batch_sharding(mesh)
x = jax.make_array_from_process_local_data(sharding, np.full((2, 3), pid + 1.0, np.float32))
if pid == 1:
    time.sleep(late)  # a process that compiles or loads data more slowly than the other
total = jax.jit(lambda a: (a * 3).sum(), out_shardings=NamedSharding(mesh, PartitionSpec()))(x)
print("total", float(total), flush=True)
"""


@pytest.mark.slow
def test_first_collective_waits_for_a_process_that_arrives_late():
    """gloo gives up on its first collective after 30 s; initialize opens it while both processes
    are in step, so a process 35 s late to its first step no longer kills the job."""
    port = free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs = [subprocess.Popen([sys.executable, "-c", _LATE_PROCESS, str(port), str(pid), "35"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for pid in range(2)]
    outputs = [p.communicate(timeout=150)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out
        assert "total 54.0" in out, out  # 3 * (2 rows * 3 * 1.0 + 2 rows * 3 * 2.0)
