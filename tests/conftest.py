"""Test set-up: 8 simulated CPU devices and the project's CPU XLA flags, before jax loads; and a
tiny synthetic Slakh-format dataset with its TFRecords, built once per test run and shared by every
pytest-xdist worker (:func:`built_once`)."""

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

import pytest

import launch_helpers

from jointist_jax import xla_flags

# Nothing above imports jax, so the device count still takes effect.
xla_flags.apply_cpu_flags(host_device_count=8)
# Many tests (and the launch/train.py subprocesses they start) compile the same tiny models:
# a persistent XLA cache shared by the test processes compiles each program once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "jointist-jax-test-xla-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

# The longest tests and their seconds, measured in a `make test` run on a 2-core CPU (2 workers).
# pytest-xdist's worksteal scheduler first hands each worker one contiguous slice of the collection
# (the first n // workers tests to the first worker, and so on), then balances by stealing queued
# tests. A long test collected late starts late and runs alone at the end, so
# :func:`pytest_collection_modifyitems` puts each of these at the start of a slice instead.
LONGEST_TESTS = {
    "tests/test_gcs_chain.py::test_whole_chain_in_a_bucket": 872,
    "tests/test_benchmarks.py::test_learn_synth_trains_and_compares_with_the_untrained_model": 302,
    "tests/test_train.py::test_sigterm_saves_and_exits_cleanly_and_resumes_on_one_device": 252,
    "tests/test_bucket_outage.py::test_a_run_survives_a_bucket_that_goes_away": 240,
    "tests/test_distributed.py::test_sharded_parameters_train_like_replicated_ones": 237,
    "tests/test_readme_commands.py::test_two_process_command_trains_what_one_process_trains": 234,
    "tests/test_accelerator_suite.py::test_tiny_run_on_cpu_writes_every_number": 181,
    "tests/test_transcribe.py::test_a_run_written_by_the_trainer_transcribes_and_separates": 181,
    "tests/test_transcribe.py::test_two_hour_song_in_bounded_memory": 173,
    "tests/test_train.py::test_sigkill_then_restart_matches_uninterrupted_run": 157,
    "tests/test_cluster_startup.py::test_two_tpu_vm_workers_form_one_job_and_save_together_on_sigterm": 139,
    "tests/test_train.py::test_stage_trains_checkpoints_and_logs[joint_scratch]": 124,
    "tests/test_evaluation.py::test_joint_run_with_recognizer_reports_both_settings_and_writes_everything": 117,
    "tests/test_evaluation.py::test_eval_cli_errors_name_the_problem": 94,
    "tests/test_bucket_outage_outputs.py::test_an_evaluation_cut_by_an_outage_is_not_taken_as_done": 94,
    "tests/test_bucket_outage_outputs.py::test_a_transcription_cut_by_an_outage_is_not_taken_as_done": 59,
}


def longest_first(items: list, workers: int, seconds: dict[str, float]) -> list:
    """``items`` reordered for ``workers`` contiguous slices (as worksteal first deals them) so
    that each test of ``seconds`` starts its slice: the longest first, each to the slice that
    holds the fewest seconds of them; the other tests keep their order."""
    if workers < 2:
        return list(items)
    long = sorted((i for i in items if i.nodeid in seconds), key=lambda i: -seconds[i.nodeid])
    rest = iter([i for i in items if i.nodeid not in seconds])
    heads: list[list] = [[] for _ in range(workers)]
    held = [0.0] * workers
    for item in long:
        slot = min(range(workers), key=held.__getitem__)
        heads[slot].append(item)
        held[slot] += seconds[item.nodeid]
    size = len(items) // workers
    ordered = []
    for slot, head in enumerate(heads):
        fill = len(items) - len(ordered) - len(head) if slot == workers - 1 else max(size - len(head), 0)
        ordered += head + [next(rest) for _ in range(fill)]
    return ordered


def pytest_collection_modifyitems(config, items):
    items[:] = longest_first(items, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), LONGEST_TESTS)


@pytest.fixture(autouse=True)
def no_run_left_behind():
    """After each test, the launch/train.py processes it started that still run are killed."""
    yield
    launch_helpers.kill_leftovers()


# Tiny dataset: 2-s clips so the runlocal configs (clip_seconds=2) can train on it.
TINY_CLIP_SECONDS = 2.0
TINY_HOP_SECONDS = 2.0


@contextlib.contextmanager
def built_once(tmp_path_factory, name: str):
    """A folder for this whole test run, built by the first worker that asks for it.

    Yields ``(folder, build)``: when ``build`` is true the caller fills ``folder`` inside the
    ``with`` block (other workers wait on a lock meanwhile); a block that raises leaves no folder
    behind, so the next caller builds it again. pytest-xdist workers share the parent of their
    base temporary folders; without xdist the base folder itself is used.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder, done = root / name, root / f"{name}.built"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            yield folder, False
            return
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        try:
            yield folder, True
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        done.touch()


@pytest.fixture(scope="session")
def tiny_slakh_dir(tmp_path_factory) -> Path:
    """A rendered Slakh-format dataset: 4 train, 2 validation, 1 test track of 5 s."""
    from data_pipelines import synth_slakh

    with built_once(tmp_path_factory, "slakh_synth") as (out, build):
        if build:
            assert synth_slakh.main(["--out", str(out), "--seconds", "5", "--seed", "7",
                                     "--splits", "train=4,validation=2,test=1", "--workers", "2"]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_tfds_dir(tiny_slakh_dir, tmp_path_factory) -> Path:
    """The TFDS `slakh2100` clips built from :func:`tiny_slakh_dir`."""
    from data_pipelines import build_slakh

    with built_once(tmp_path_factory, "tfds") as (data_dir, build):
        if build:
            build_slakh.build(tiny_slakh_dir, data_dir, hop_seconds=TINY_HOP_SECONDS,
                              clip_seconds=TINY_CLIP_SECONDS, workers=1)
    return data_dir


@pytest.fixture(scope="session")
def gcs():
    """A GCS emulator on 127.0.0.1 for this test process (scripts/gcs_emulator.py), stopped at
    the end. Returns its ``gcs_emulator.Emulator``: ``gcs.new_bucket()`` makes an empty bucket,
    ``gcs.url`` is its address (for a ``gcs_fault_proxy`` in front of it)."""
    from scripts import gcs_emulator

    with gcs_emulator.running() as emulator:
        yield emulator
