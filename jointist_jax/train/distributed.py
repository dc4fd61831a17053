"""Process start-up and the data-parallel device mesh.

One process per host (TPU VMs, GPU hosts) or per GPU; ``jax.distributed.initialize`` joins them
when the job is started as several processes. The mesh has one axis, ``data``, over every
device of every process: the batch is sharded along it, parameters are replicated (or, with
``config.shard_params``, their largest arrays are split along it too).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"



def _started_as_one_of_several() -> bool:
    """True under a multi-process launcher jax can auto-detect (SLURM, Open MPI, TPU pod, env)."""
    for count in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        if int(os.environ.get(count, "1") or "1") > 1:
            return True
    return "JAX_COORDINATOR_ADDRESS" in os.environ or "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Joins a multi-process job: explicit arguments, else the cluster's environment, else nothing.

    CPU processes (tests, the local two-process recipe) exchange collectives through gloo.
    """
    explicit = coordinator_address is not None
    if explicit and (num_processes is None or process_id is None):
        raise ValueError("--coordinator_address needs --num_processes and --process_id")
    if not explicit and not _started_as_one_of_several():
        return
    # Without this, CPU devices of different processes cannot run collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    else:
        jax.distributed.initialize()
    if jax.default_backend() == "cpu":
        open_cpu_collectives()


def open_cpu_collectives(barrier_timeout_s: int = 1800) -> None:
    """Opens the gloo context over every device while all processes are in step.

    gloo builds its context at the first collective over a set of devices, and each process waits
    only 30 s (fixed inside XLA, no flag changes it) for the others' addresses. When one process
    reaches its first training step more than 30 s after another, because it compiled or loaded
    data more slowly, the job dies with ``Gloo context initialization failed: DEADLINE_EXCEEDED``.
    Once built, the context is reused and later collectives wait as long as they need. So every
    process compiles a tiny sum over all devices, meets the others at a coordination-service
    barrier (which waits up to ``barrier_timeout_s``), and then runs it together.
    """
    from jax._src import distributed as jax_distributed  # the coordination-service client

    mesh = data_mesh()
    sharding = batch_sharding(mesh)
    total = jax.jit(lambda x: x.sum(), out_shardings=NamedSharding(mesh, PartitionSpec()))
    compiled = total.lower(jax.ShapeDtypeStruct((mesh.size,), np.int32, sharding=sharding)).compile()
    ones = jax.make_array_from_process_local_data(sharding, np.ones(jax.local_device_count(), np.int32))
    jax_distributed.global_state.client.wait_at_barrier("jointist_open_cpu_collectives",
                                                        barrier_timeout_s * 1000)
    count = int(compiled(ones))
    if count != mesh.size:
        raise RuntimeError(f"collective over {mesh.size} devices counted {count}")


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``data`` over all devices of all processes (Auto axis semantics)."""
    devices = jax.devices() if devices is None else devices
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split along ``data``."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def parameter_sharding(shape: tuple[int, ...], mesh: Mesh, *, shard: bool, min_size: int) -> NamedSharding:
    """Replicated, or for a large array with ``shard``: its largest dimension divisible by the
    data-axis size split along ``data`` (memory for communication; XLA inserts the gathers)."""
    size = mesh.shape[DATA_AXIS]
    if shard and size > 1 and int(np.prod(shape, dtype=np.int64)) >= min_size:
        for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
            if shape[dim] % size == 0:
                spec = [None] * len(shape)
                spec[dim] = DATA_AXIS
                return NamedSharding(mesh, PartitionSpec(*spec))
    return NamedSharding(mesh, PartitionSpec())


def tree_shardings(abstract_tree, mesh: Mesh, *, shard: bool = False, min_size: int = 2 ** 20):
    """Shardings for every array of a pytree of ``jax.ShapeDtypeStruct``."""
    return jax.tree.map(
        lambda a: parameter_sharding(tuple(a.shape), mesh, shard=shard, min_size=min_size), abstract_tree)
