"""Multi-process start-up follows JAX's own cluster detection (jax.distributed.initialize()).

Every cluster JAX detects by itself starts the distributed system, a process outside any cluster
stays alone, a detection or connection failure is an error, and a run of several processes
without a jax.distributed client stops before it trains. A two-worker Cloud TPU VM slice is
simulated on 127.0.0.1 (tests/fake_tpu_vm.py) for launch/train.py.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import jax
import pytest
import requests
from jax._src.clusters import cloud_tpu_cluster

from fake_tpu_vm import RUNNER, MetadataServer
from launch_helpers import ROOT, free_port, run_train, sigterm_one_of_two, two_process_flags, wait_for_line

from jointist_jax import run_dir
from jointist_jax.train import distributed, trainer

# Every variable through which JAX's detection (or its precedence rules) sees a cluster.
_CLUSTER_VARIABLES = (
    "JAX_COORDINATOR_ADDRESS", "JAX_COORDINATOR_PORT", "JAX_LOCAL_DEVICE_IDS",
    "SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID",
    "OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
    "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES", "TPU_WORKER_ID", "MEGASCALE_COORDINATOR_ADDRESS",
    "MEGASCALE_NUM_SLICES", "MEGASCALE_SLICE_ID", "GCE_METADATA_IP", "KUBERNETES_SERVICE_HOST")


@pytest.fixture
def no_cluster(monkeypatch):
    """This process outside every cluster; ``tpu_vm(True)`` makes JAX take it for a Cloud TPU VM
    (whose metadata server JAX then asks: ``import jax`` skips that query on a machine without
    TPU chips)."""
    for name in _CLUSTER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cloud_tpu_cluster, "running_in_cloud_tpu_vm", False)

    def tpu_vm(on: bool) -> None:
        monkeypatch.setattr(cloud_tpu_cluster, "running_in_cloud_tpu_vm", on)
        monkeypatch.delenv("TPU_SKIP_MDS_QUERY", raising=False)

    return tpu_vm


# name: (a Cloud TPU VM?, environment, what JAX makes of it). JAX's ports: SLURM 61440 + job id
# mod 4096, Open MPI 61440 + (job id / 4096) mod 4096, TPU slices 8482 unless JAX_COORDINATOR_PORT.
CLUSTERS = {
    "slurm": (False, dict(SLURM_JOB_ID="4242", SLURM_STEP_NODELIST="node[003-004]", SLURM_NTASKS="2",
                          SLURM_PROCID="1", SLURM_LOCALID="0"),
              ("node003:61586", 2, 1)),
    "open_mpi": (False, dict(OMPI_MCA_orte_hnp_uri="1531576320.0;tcp://10.96.0.1,10.148.0.1:34911",
                             OMPI_COMM_WORLD_SIZE="4", OMPI_COMM_WORLD_RANK="3", OMPI_COMM_WORLD_LOCAL_RANK="1"),
                 ("10.96.0.1:62624", 4, 3)),
    # GKE sets TPU_SKIP_MDS_QUERY (JAX checks a GCE slice first). Slice 1 of 2: JobSet's
    # MEGASCALE_* variables (JAX asks the metadata server for those unset).
    "gke_tpu": (True, dict(TPU_SKIP_MDS_QUERY="true", TPU_WORKER_HOSTNAMES="127.0.0.5,127.0.0.2,127.0.0.3,127.0.0.4", TPU_WORKER_ID="2",
                           MEGASCALE_COORDINATOR_ADDRESS="127.0.0.1", MEGASCALE_NUM_SLICES="2",
                           MEGASCALE_SLICE_ID="1"),
                ("127.0.0.1:8482", 8, 6)),
    "gke_tpu_coordinator_port": (True, dict(TPU_SKIP_MDS_QUERY="true", TPU_WORKER_HOSTNAMES="127.0.0.1,127.0.0.2", TPU_WORKER_ID="0",
                                            MEGASCALE_COORDINATOR_ADDRESS="127.0.0.1", MEGASCALE_NUM_SLICES="1",
                                            MEGASCALE_SLICE_ID="0", JAX_COORDINATOR_PORT="23456"),
                                 ("127.0.0.1:23456", 2, 0)),
    "coordinator_address_only": (False, dict(JAX_COORDINATOR_ADDRESS="10.1.2.3:1234"), ("10.1.2.3:1234", None, None)),
}


@pytest.mark.parametrize("cluster", sorted(CLUSTERS))
def test_every_cluster_jax_detects_gives_the_job(cluster, no_cluster, monkeypatch):
    on_tpu_vm, env, expected = CLUSTERS[cluster]
    no_cluster(on_tpu_vm)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert distributed.cluster_parameters(initialization_timeout=5) == expected


def test_a_cloud_tpu_vm_slice_is_found_through_its_metadata_server(no_cluster, monkeypatch):
    no_cluster(True)
    with MetadataServer(3, ["10.0.0.7", "10.0.0.8", "10.0.0.9", "10.0.0.10"]) as server:
        for name, value in server.env(coordinator_port=8555).items():
            monkeypatch.setenv(name, value)
        assert distributed.cluster_parameters() == ("10.0.0.7:8555", 4, 3)
    assert {"agent-worker-number", "worker-network-endpoints", "tpu-env"} <= set(server.asked)


def test_no_cluster_is_one_process_and_a_cluster_of_one_too(no_cluster, monkeypatch):
    """jax.distributed.initialize() would raise here (this process has used its backend), so
    returning quietly shows it was not called."""
    assert distributed.cluster_parameters() == (None, None, None)
    distributed.initialize()
    for name, value in dict(CLUSTERS["slurm"][1], SLURM_NTASKS="1", SLURM_PROCID="0").items():
        monkeypatch.setenv(name, value)
    assert distributed.cluster_parameters()[1] == 1
    distributed.initialize()
    assert not jax.distributed.is_initialized()


def test_a_tpu_vm_whose_metadata_server_does_not_answer_is_an_error(no_cluster, monkeypatch):
    no_cluster(True)
    monkeypatch.setenv("GCE_METADATA_IP", f"127.0.0.1:{free_port()}")
    with pytest.raises(requests.ConnectionError):
        distributed.cluster_parameters()


def test_a_detected_job_whose_coordinator_never_comes_stops_with_jax_error(tmp_path):
    """Worker 1 of a two-worker slice whose worker 0 never starts: JAX's connection deadline
    ends the process; it does not go on as a single process."""
    script = tmp_path / "start.py"
    script.write_text("import jax\nfrom jointist_jax.train import distributed\n"
                      "distributed.initialize(initialization_timeout=2)\n"
                      "print('started as process', jax.process_index(), 'of', jax.process_count())\n")
    with MetadataServer(1, ["127.0.0.1", "127.0.0.1"]) as server:
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), **server.env(coordinator_port=free_port()))
        done = subprocess.run([sys.executable, RUNNER, str(script)], env=env, capture_output=True,
                              text=True, timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "started as process" not in out, out
    assert "DEADLINE_EXCEEDED" in out, out


def test_several_processes_without_a_distributed_client_stop_before_training(tiny_tfds_dir, tmp_path,
                                                                              monkeypatch):
    """What the TPU runtime alone makes of a slice: several processes, no jax.distributed client."""
    config = importlib.import_module("configs.transcription").get_config("runlocal")
    config.data.data_dir = str(tiny_tfds_dir)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(RuntimeError, match="2 processes but no jax.distributed client"):
        trainer.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_two_tpu_vm_workers_form_one_job_and_save_together_on_sigterm(tiny_tfds_dir, tmp_path):
    """launch/train.py with no coordinator flags on two simulated TPU VM workers: JAX's detection
    joins them, and a SIGTERM to one makes both save the same step and exit 0."""
    port, workers = free_port(), ["127.0.0.1", "127.0.0.1"]
    flags = two_process_flags(tiny_tfds_dir, tmp_path, total_steps=200, checkpoint_every=1000)
    with MetadataServer(0, workers) as first, MetadataServer(1, workers) as second:
        procs = [run_train(flags, devices=2, env=server.env(coordinator_port=port), runner=[RUNNER])
                 for server in (first, second)]
        try:
            started = wait_for_line(procs[0], "training stage", timeout=400)[-1]
            assert "(2 processes)" in started, started
            step = sigterm_one_of_two(procs, total=200)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
    assert run_dir.RunDir.at(tmp_path).saved_steps() == [step]
