"""A bucket that goes away and comes back, and one that refuses a checkpoint: a training run with
its workdir in a bucket (fake-gcs-server keeping its objects in a folder, so it can be stopped and
started again; scripts/gcs_fault_proxy.py in front of it records every request).

* The bucket goes away while a checkpoint is being written and comes back 3 s later: the run
  carries on (gcsfs and TensorStore retry).
* It goes away again while a later checkpoint is half written, and the run is killed meanwhile:
  that checkpoint is never taken; the same command resumes from the last committed step and ends
  bitwise equal to an uninterrupted run.
* A checkpoint the bucket refuses (403) stops the run with an error naming it and the last
  committed step, instead of a run that exits 0 without it.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import jax
import numpy as np
import pytest

from launch_helpers import config_flags, run_train
from scripts import gcs_emulator, gcs_fault_proxy

from jointist_jax import run_dir

OUTAGE_S = 3.0


@pytest.fixture(scope="module")
def bucket_with_outages(tmp_path_factory):
    """``(emulator, proxy, bucket)``: an emulator keeping its objects on disk, a proxy without
    faults in front of it, every client pointed at the proxy."""
    emulator = gcs_emulator.Emulator(root=tmp_path_factory.mktemp("bucket-objects")).start()
    try:
        with gcs_fault_proxy.running(emulator.url) as proxy:
            yield emulator, proxy, gcs_emulator.new_bucket("jointist-outage")
    finally:
        emulator.stop()


def _wait_for_upload(proxy, prefix: str, timeout: float = 300) -> None:
    """Returns once an upload of an object under ``prefix`` (``bucket/name``) has completed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gcs_fault_proxy.upload_completions(proxy.requests(), prefix):
            return
        time.sleep(0.02)
    raise AssertionError(f"no upload under {prefix} within {timeout} s")


def _collect(proc) -> list[str]:
    """The process's output lines, read in the background (so its pipe never fills)."""
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    return lines


def _params(workdir, step):
    import orbax.checkpoint as ocp

    restored = ocp.StandardCheckpointer().restore(run_dir.RunDir.at(workdir).step_dir(step) / "default")
    return [np.asarray(x) for x in jax.tree.leaves(restored["params"])]


@pytest.mark.slow
def test_a_run_survives_a_bucket_that_goes_away(bucket_with_outages, tiny_tfds_dir, tmp_path):
    emulator, proxy, bucket = bucket_with_outages
    workdir = f"gs://{bucket}/run"
    flags = config_flags("transcription:runlocal", tiny_tfds_dir, workdir, total_steps=6, checkpoint_every=1)
    proc = run_train(flags, cwd=tmp_path)
    lines = _collect(proc)

    # 1. Away for 3 s while checkpoint 2 is being written: the run carries on.
    _wait_for_upload(proxy, f"{bucket}/run/checkpoints/2/")
    emulator.stop()
    time.sleep(OUTAGE_S)
    emulator.start()
    back = time.monotonic()
    # 2. Away again once checkpoint 4 is half written; the run is killed meanwhile.
    _wait_for_upload(proxy, f"{bucket}/run/checkpoints/4/")
    carried_on_s = time.monotonic() - back
    emulator.stop()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    emulator.start()
    print(f"after a {OUTAGE_S:.0f}-s outage the run wrote its next checkpoint {carried_on_s:.1f} s later")
    assert any("step 3/6" in line for line in lines), "".join(lines[-30:])

    run = run_dir.RunDir.at(workdir)
    committed = run.saved_steps()
    assert run.step_dir(4).exists() and max(committed) < 4, committed  # half written, not counted
    with pytest.raises(run_dir.RunNotFoundError, match="was never finished"):
        run.require_step(4)
    restarted = run_train(flags, cwd=tmp_path)
    out, _ = restarted.communicate(timeout=400)
    assert restarted.returncode == 0, out
    assert re.findall(r"resumed from \S+ step (\d+)", out) == [str(max(committed))], out[-3000:]

    reference = tmp_path / "uninterrupted"
    proc = run_train(config_flags("transcription:runlocal", tiny_tfds_dir, reference, total_steps=6,
                                  checkpoint_every=1), cwd=tmp_path)
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out
    for a, b in zip(_params(reference, 6), _params(workdir, 6), strict=True):
        np.testing.assert_array_equal(a, b)
    assert os.listdir(tmp_path) == ["uninterrupted"]  # nothing written into the working folder


@pytest.mark.slow
def test_a_refused_checkpoint_stops_the_run_naming_it(bucket_with_outages, tiny_tfds_dir, tmp_path):
    _, proxy, bucket = bucket_with_outages
    workdir = f"gs://{bucket}/refused"
    proxy.deny = f"{bucket}/refused/checkpoints/2"
    try:
        proc = run_train(config_flags("transcription:runlocal", tiny_tfds_dir, workdir, total_steps=3,
                                      checkpoint_every=1), cwd=tmp_path)
        out, _ = proc.communicate(timeout=400)
    finally:
        proxy.deny = None
    assert proc.returncode == 1, out[-3000:]
    message = next(line for line in out.splitlines() if "error: checkpoint 2 could not be saved" in line)
    assert f"'{workdir}/checkpoints/2'" in message and "the last committed checkpoint is step 1" in message
    assert run_dir.RunDir.at(workdir).saved_steps() == [1]
