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

from jointist_jax import xla_flags

# Nothing above imports jax, so the device count still takes effect.
xla_flags.apply_cpu_flags(host_device_count=8)
# Many tests (and the launch/train.py subprocesses they start) compile the same tiny models:
# a persistent XLA cache shared by the test processes compiles each program once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "jointist-jax-test-xla-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

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
