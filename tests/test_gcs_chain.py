"""The whole chain with data and runs in a bucket, against a real GCS emulator on 127.0.0.1.

Render a tiny Slakh-format dataset locally, upload it, build it from ``gs://`` into ``gs://``, train
``transcription:runlocal`` into a ``gs://`` workdir, train ``joint_pretrained:runlocal`` from it
(``init_from`` a bucket run), SIGKILL and resume it with bitwise-equal parameters, evaluate into the
bucket (``metrics.json`` and TensorBoard events read back), and transcribe from the bucket. The
commands are the ones README.md gives for training with data in a bucket. Every subprocess runs in
an empty folder that must stay empty: no local ``gs:`` folder is ever created.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf

from launch_helpers import ROOT, run_train, wait_for_line

from jointist_jax import run_dir, storage
from jointist_jax.data import pipeline, records
from jointist_jax.data.spec import InputSpec

TINY_STEPS = ["--config.data.global_batch=8", "--config.data.eval_batches=1", "--config.log_every=1"]


def run_script(script: str, args: list[str], cwd, timeout: float = 500) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    return subprocess.run([sys.executable, str(ROOT / script), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def make_bucket(gcs, local) -> str:
    """A bucket holding a rendered dataset under ``slakh2100/`` (12-s songs: one 10-s clip each)."""
    from data_pipelines import synth_slakh

    assert synth_slakh.main(["--out", str(local), "--seconds", "12", "--seed", "3",
                             "--splits", "train=3,validation=1,test=1", "--workers", "2"]) == 0
    name = gcs.new_bucket()
    storage.upload_tree(local, f"gs://{name}/slakh2100")
    return name


def build_in_bucket(bucket, workspace) -> str:
    from data_pipelines import build_slakh

    before = os.getcwd()
    os.chdir(workspace)
    try:
        code = build_slakh.main(["--slakh_dir", f"gs://{bucket}/slakh2100", "--data_dir", f"gs://{bucket}/tfds",
                                 "--workers", "1"])
    finally:
        os.chdir(before)
    assert code == 0
    return f"gs://{bucket}/tfds"


def check_build_matches_a_local_build(bucket, built, tmp_path):
    from data_pipelines import build_slakh

    remote = records.open_dataset(built)
    assert storage.is_remote(remote.path) and os.fspath(remote.path).endswith("slakh2100/clips/1.0.0")
    assert (remote.path / "dataset_info.json").is_file()
    build_slakh.build(tmp_path / "slakh", tmp_path / "tfds", workers=1)  # the rendered, uploaded dataset
    local = records.open_dataset(tmp_path / "tfds")
    for split in ("train", "validation", "test"):
        assert records.load_index(remote, split) is not None  # the build left the record index
        a, b = records.split_index(remote, split), records.split_index(local, split)
        np.testing.assert_array_equal(a.offset, b.offset)
        np.testing.assert_array_equal(a.track_id, b.track_id)
        with records.RecordReader(remote, a) as ra, records.RecordReader(local, b) as rb:
            rows = list(range(len(a)))
            assert ra.read_many_bytes(rows) == [rb.read_bytes(r) for r in rows]
            # Ranged reads: exactly the records' bytes and their framing (length, two CRCs), one request each.
            assert ra.bytes_read == int(a.length.sum()) + 16 * len(rows)


def check_pipeline_batches_equal_local_ones(built, tmp_path):
    local = tmp_path / "tfds"
    spec = InputSpec(global_batch=2, num_positive=2, clip_seconds=2.0, seed=5)
    options = dict(start_step=3, process_index=0, process_count=1)
    with pipeline.make_train_iterator(built, "train", spec, **options) as remote_pipe, \
            pipeline.make_train_iterator(local, "train", spec, **options) as local_pipe:
        remote_batch = next(iter(remote_pipe.local_batches()))
        local_batch = next(iter(local_pipe.local_batches()))
    for key in local_batch:
        np.testing.assert_array_equal(remote_batch[key], local_batch[key])


def _event_scalars(logdir: str) -> dict[str, list[float]]:
    """Scalars of the event files in a bucket folder (copied to a local file to read them)."""
    import tempfile

    values: dict[str, list[float]] = {}
    for path in sorted(storage.path(logdir).glob("events.out.tfevents.*")):
        with tempfile.NamedTemporaryFile(suffix=path.name) as local:
            local.write(path.read_bytes())
            local.flush()
            for event in tf.compat.v1.train.summary_iterator(local.name):
                for value in event.summary.value:
                    number = tf.make_ndarray(value.tensor) if value.HasField("tensor") else value.simple_value
                    if np.ndim(number) == 0:  # scalars only (evaluations also log images and audio)
                        values.setdefault(value.tag, []).append(float(number))
    return values


def train_transcription(bucket, built, workspace) -> str:
    workdir = f"gs://{bucket}/runs/transcription"
    proc = run_script("launch/train.py", ["--config=transcription:runlocal", f"--workdir={workdir}",
                                          f"--config.data.data_dir={built}", "--config.total_steps=2",
                                          *TINY_STEPS], cwd=workspace)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return workdir


def check_training_outputs(transcription_run, workspace):
    run = run_dir.RunDir.at(transcription_run)
    assert run.saved_steps() == [2]
    assert run.read_config().stage == "transcription"
    logged = _event_scalars(os.fspath(run.tensorboard()))
    assert len(logged["train/loss"]) == 2 and "valid/loss" in logged
    assert list(workspace.iterdir()) == []


def _joint_flags(workdir, built, transcription_run) -> list[str]:
    return ["--config=joint_pretrained:runlocal", f"--workdir={workdir}", f"--config.data.data_dir={built}",
            f"--config.init_from={transcription_run}", "--config.total_steps=4", "--config.checkpoint_every=1",
            "--config.data.global_batch=8", "--config.data.eval_batches=0", "--config.log_every=1"]


def train_joint_killed_and_resumed(bucket, built, transcription_run, workspace) -> str:
    """joint_pretrained from the bucket transcription run: killed at step 3, then resumed."""
    workdir = f"gs://{bucket}/runs/joint"
    proc = run_train(_joint_flags(workdir, built, transcription_run), cwd=workspace)
    wait_for_line(proc, "step 3/4", timeout=500)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    restarted = run_train(_joint_flags(workdir, built, transcription_run), cwd=workspace)
    out, _ = restarted.communicate(timeout=500)
    assert restarted.returncode == 0, out
    assert "resumed from" in out
    return workdir


def check_resumed_equals_uninterrupted(bucket, built, transcription_run, joint_run, workspace):
    import orbax.checkpoint as ocp

    uninterrupted = f"gs://{bucket}/runs/joint_uninterrupted"
    proc = run_train(_joint_flags(uninterrupted, built, transcription_run), cwd=workspace)
    out, _ = proc.communicate(timeout=500)
    assert proc.returncode == 0, out

    def params(workdir):
        restored = ocp.StandardCheckpointer().restore(run_dir.RunDir.at(workdir).step_dir(4) / "default")
        return [np.asarray(x) for x in jax.tree.leaves(restored["params"])]

    for a, b in zip(params(uninterrupted), params(joint_run), strict=True):
        np.testing.assert_array_equal(a, b)
    assert list(workspace.iterdir()) == []


def check_evaluation(joint_run, built, workspace):
    proc = run_script("launch/eval.py", ["--config=joint_pretrained:runlocal", f"--workdir={joint_run}",
                                         f"--config.data.data_dir={built}", "--media_songs=1"], cwd=workspace)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = run_dir.RunDir.at(joint_run)
    metrics = json.loads((run_dir.evaluation_dir(run.eval_root(), "test", 4) / "metrics.json").read_text())
    assert metrics["step"] == 4 and metrics["scalars"]["num_songs"] == 1
    assert (run_dir.evaluation_dir(run.eval_root(), "test", 4) / "songs").is_dir()
    logged = _event_scalars(os.fspath(run.tensorboard("eval_test")))
    # TensorBoard stores float32.
    sdr = metrics["scalars"]["gt_instruments/sdr/source_wise"]
    assert logged["gt_instruments/sdr/source_wise"] == [pytest.approx(sdr, rel=1e-6)]
    assert list(workspace.iterdir()) == []


def check_transcription(bucket, joint_run, workspace):
    from jointist_jax.inference import cli

    mix = next(f for f in storage.files_under(f"gs://{bucket}/slakh2100/test") if f.name == "mix.flac")
    storage.copy_file(mix, f"gs://{bucket}/songs/song.flac")
    song = f"gs://{bucket}/songs"
    out = f"gs://{bucket}/transcribed"
    before = os.getcwd()
    os.chdir(workspace)
    try:
        code = cli.main(["--checkpoint", joint_run, "--audio", song, "--out", out, "--instruments", "piano,bass",
                         "--separate", "--quiet"])
    finally:
        os.chdir(before)
    assert code == 0
    names = sorted(p.name for p in storage.path(out).iterdir())
    assert names == ["song"]
    folder = storage.path(out) / names[0]
    document = json.loads((folder / f"{names[0]}.notes.json").read_text())
    assert [i["class_name"] for i in document["instruments"]] == ["Piano", "Bass"]
    assert sorted(p.name for p in (folder / "stems").iterdir()) == ["Bass.wav", "Piano.wav"]
    assert list(workspace.iterdir()) == []


def check_bad_paths(bucket, built, joint_run, workspace):
    # A missing bucket, for the workdir and the data.
    proc = run_script("launch/train.py", ["--config=transcription:runlocal", "--workdir=gs://no-such-bucket-x/run",
                                          f"--config.data.data_dir={built}"], cwd=workspace, timeout=200)
    assert proc.returncode == 2 and "gs://no-such-bucket-x does not exist" in proc.stderr
    with pytest.raises(storage.StorageError, match="gs://no-such-bucket-y does not exist"):
        records.open_dataset("gs://no-such-bucket-y/tfds")
    # A path that does not exist in an existing bucket.
    with pytest.raises(FileNotFoundError, match=f"gs://{bucket}/nothing-here' does not exist"):
        records.open_dataset(f"gs://{bucket}/nothing-here")
    with pytest.raises(run_dir.RunNotFoundError, match=f"gs://{bucket}/runs/nothing"):
        run_dir.locate(f"gs://{bucket}/runs/nothing")
    # A checkpoint whose save never finished (no commit_success.txt in a bucket).
    half = run_dir.RunDir.at(joint_run).step_dir(9)
    (half / "default" / "_METADATA").write_text("{}")
    proc = run_script("launch/eval.py", ["--config=joint_pretrained:runlocal", f"--workdir={joint_run}",
                                         f"--config.data.data_dir={built}", "--checkpoint=9"], cwd=workspace,
                      timeout=200)
    assert proc.returncode == 2 and "was never finished" in proc.stderr and f"{joint_run}/checkpoints/9" in proc.stderr
    assert run_dir.locate(joint_run)[1] == 4  # the latest finished step, not the half-written one
    storage.remove_tree(half)
    assert list(workspace.iterdir()) == []
    assert not (ROOT / "gs:").exists() and not os.path.exists("gs:")


@pytest.mark.slow
def test_whole_chain_in_a_bucket(gcs, tmp_path):
    """One test, so that the steps, which build on each other, run in order in one process."""
    workspace = tmp_path / "cwd"
    workspace.mkdir()
    bucket = make_bucket(gcs, tmp_path / "slakh")
    built = build_in_bucket(bucket, workspace)
    check_build_matches_a_local_build(bucket, built, tmp_path)
    check_pipeline_batches_equal_local_ones(built, tmp_path)
    transcription = train_transcription(bucket, built, workspace)
    check_training_outputs(transcription, workspace)
    joint = train_joint_killed_and_resumed(bucket, built, transcription, workspace)
    check_resumed_equals_uninterrupted(bucket, built, transcription, joint, workspace)
    check_evaluation(joint, built, workspace)
    check_transcription(bucket, joint, workspace)
    check_bad_paths(bucket, built, joint, workspace)
