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


def _train_two_steps(devices, shard: bool):
    """Initial and step-2 parameters, and the step-2 loss, of the runlocal transcriber trained on
    one fixed global batch of 8 over ``devices``."""
    mesh = distributed.data_mesh(devices)
    config = transcription.get_config("runlocal")
    config.data.global_batch = 8
    config.data.clip_seconds = 0.5
    config.shard_params = shard
    config.shard_params_min_size = 1024
    run = Run(config, mesh)
    state = run.init_state()
    specs = {leaf.sharding.spec for leaf in jax.tree.leaves(state.params)}
    assert any("data" in tuple(s) for s in specs) == shard
    initial = [np.asarray(x) for x in jax.tree.leaves(state.params)]
    for _ in range(2):
        state, metrics = run.train_step(state, _random_batch(config, mesh))
    return initial, float(metrics["loss"]), [np.asarray(x) for x in jax.tree.leaves(state.params)]


def _largest_difference(a, b) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def test_sharded_parameters_train_like_replicated_ones():
    """Sharding the parameters changes only the order of float sums, never the training.

    How far two mathematically equal layouts may drift is measured, not guessed: the same
    replicated training on 4 of the 8 devices sums the batch in another order. Adam divides each
    gradient by its own running scale, so rounding in small gradients grows into parameter
    differences of a few 1e-6 after two steps (measured 2.5e-6 for 4 devices and 3.4e-6 for the
    sharded layout on a 2-core x86 CPU), a size that varies between CPUs. Any real divergence
    (a shard that misses its update, a gradient that is not reduced over the whole batch) moves a
    parameter by a whole update, about 6e-5 here.
    """
    devices = jax.devices()
    initial, loss_replicated, replicated = _train_two_steps(devices, shard=False)
    initial_sharded, loss_sharded, sharded = _train_two_steps(devices, shard=True)
    _, loss_reordered, reordered = _train_two_steps(devices[:4], shard=False)
    assert _largest_difference(initial, initial_sharded) == 0.0
    np.testing.assert_allclose(loss_sharded, loss_replicated, rtol=1e-5)
    np.testing.assert_allclose(loss_reordered, loss_replicated, rtol=1e-5)
    update = _largest_difference(replicated, initial)
    # Float noise of a reordered sum, floored at float32's resolution of the parameters.
    resolution = float(np.finfo(np.float32).eps) * max(float(np.max(np.abs(p))) for p in replicated)
    noise = max(_largest_difference(reordered, replicated), resolution)
    bound = 4 * noise
    assert bound < update / 2, f"float noise {noise:.3g} is too close to the update {update:.3g} to tell them apart"
    difference = _largest_difference(sharded, replicated)
    assert difference <= bound, (f"sharded and replicated parameters differ by {difference:.3g} after two steps; "
                                 f"float noise of a reordered sum is {noise:.3g}, update {update:.3g}")


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
