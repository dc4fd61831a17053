"""Process start-up and the data-parallel device mesh.

One process per host (TPU VMs, GPU hosts) or per GPU; ``jax.distributed.initialize`` joins them
when the job is started as several processes. The mesh has one axis, ``data``, over every
device of every process: the batch is sharded along it, parameters are replicated (or, with
``config.shard_params``, their largest arrays are split along it too).
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

log = logging.getLogger(__name__)


def cluster_parameters(initialization_timeout: int = 300) -> tuple[str | None, int | None, int | None]:
    """``(coordinator_address, num_processes, process_id)`` as ``jax.distributed.initialize()``
    finds them by itself, or ``(None, None, None)`` outside every cluster it knows.

    This is JAX's own detection (``ClusterEnv.auto_detect_unset_distributed_params``): the first of
    Open MPI, SLURM, a GKE TPU slice (``TPU_WORKER_HOSTNAMES``), a Cloud TPU VM slice (the GCE
    metadata server: ``agent-worker-number``, ``worker-network-endpoints``, ``tpu-env``) and
    Kubernetes that is present, with ``JAX_COORDINATOR_ADDRESS`` and ``JAX_COORDINATOR_PORT``
    taking precedence for the address. What goes wrong while asking (an unreachable metadata
    server, a coordinator host that does not resolve) is raised, never read as "no cluster".
    """
    from jax._src import clusters  # jax.distributed.initialize's cluster detection

    address, count, process_id, _ = clusters.ClusterEnv.auto_detect_unset_distributed_params(
        os.environ.get("JAX_COORDINATOR_ADDRESS"), None, None, None, None, initialization_timeout)
    return address, count, process_id


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, initialization_timeout: int = 300) -> None:
    """Joins a multi-process job: explicit arguments, else the cluster JAX detects, else nothing.

    A cluster of one process (a single-host TPU VM, ``srun -n 1``) stays a single process. A job
    that cannot start (no coordinator within ``initialization_timeout`` seconds) stops with JAX's
    error. CPU processes (tests, the local two-process recipe) exchange collectives through gloo.
    """
    if coordinator_address is not None and (num_processes is None or process_id is None):
        raise ValueError("--coordinator_address needs --num_processes and --process_id")
    if coordinator_address is None:
        coordinator_address, num_processes, process_id = cluster_parameters(initialization_timeout)
        if coordinator_address is None or num_processes == 1:
            return
    log.info("joining a job of %s processes as process %s, coordinator %s", num_processes, process_id,
             coordinator_address)
    # Without this, CPU devices of different processes cannot run collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=initialization_timeout)
    if jax.default_backend() == "cpu":
        open_cpu_collectives()


def require_coordination_service() -> None:
    """Stops a run of several processes that has no ``jax.distributed`` client.

    The TPU runtime joins the hosts of a slice by itself, so a slice can run as several processes
    although ``jax.distributed.initialize`` never ran; JAX's preemption service would then be
    missing and a preempted job would be killed without its preemption save.
    """
    if jax.process_count() > 1 and not jax.distributed.is_initialized():
        raise RuntimeError(
            f"{jax.process_count()} processes but no jax.distributed client: preemption saves "
            "cannot be coordinated. jax.distributed.initialize() found no cluster here; pass "
            "--coordinator_address, --num_processes and --process_id (or set "
            "JAX_COORDINATOR_ADDRESS and start under SLURM, Open MPI or on a TPU slice)")


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
