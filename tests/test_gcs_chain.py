"""The whole chain with data and runs in a bucket, against a real GCS emulator on 127.0.0.1 behind
a proxy that injects faults (scripts/gcs_fault_proxy.py: error answers, cut bodies, slow first
bytes, at low seeded rates; every kind must actually have been injected).

Render a tiny Slakh-format dataset locally, upload it, build it from ``gs://`` into ``gs://``, train
``transcription:runlocal`` into a ``gs://`` workdir, train ``joint_pretrained:runlocal`` from it
(``init_from`` a bucket run) once with faults off, and once with faults on, SIGKILLed before its
step 4 is saved and resumed from the last committed step: both end with bitwise-equal parameters.
Evaluate into the bucket (``metrics.json`` and TensorBoard events read back), and transcribe from
the bucket (the same notes as a transcription of a local copy of the song). From the proxy's
request log: every read of a shard fetches at most one record and its framing, and completion
markers are uploaded after everything they mark. The commands are the ones README.md gives for
training with data in a bucket. Every subprocess runs in an empty folder that must stay empty: no
local ``gs:`` folder is ever created.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf

from launch_helpers import ROOT, run_train, wait_for_line

from scripts import gcs_fault_proxy

from jointist_jax import run_dir, stages, storage
from jointist_jax.data import pipeline, records
from jointist_jax.data.spec import InputSpec

# Low rates, each kind bounded: gcsfs waits 1-2 s before its first retry, TensorStore about 1 s.
CHAIN_FAULTS = gcs_fault_proxy.Faults(seed=11, error_503=0.002, error_429=0.002, drop=0.004, delay=0.004,
                                      delay_s=0.5, max_per_kind=6)

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


def check_shard_reads_are_ranged(proxy, built):
    """Every GET of a shard object asks for a range no longer than the longest record and its
    framing (length, two CRCs: 16 bytes): no object is downloaded whole and sliced."""
    dataset = records.open_dataset(built)
    longest = max(int(records.split_index(dataset, split).length.max()) for split in ("train", "validation", "test"))
    shards = {storage._object_key(f) for split in ("train", "validation", "test")
              for f in dataset.split_files(split)}
    reads = [e for e in proxy.requests() if e.method == "GET" and e.object in shards]
    assert reads, "no shard was read through the proxy"
    for e in reads:
        assert e.range is not None, f"GET of the whole shard {e.object}"
        first, last = (int(x) for x in e.range.split("=")[1].split("-"))
        assert last - first + 1 <= longest + 16, (e.object, e.range, longest)
    return len(reads)


def check_markers_uploaded_last(proxy, prefix: str, marker: str):
    """From the request log: the upload of ``prefix/marker`` completed after that of every other
    object under ``prefix`` (a reader that waits for the marker never sees a partial folder)."""
    done = gcs_fault_proxy.upload_completions(proxy.requests(), prefix + "/")
    last = done.pop(f"{prefix}/{marker}")
    assert done and last > max(done.values()), sorted(done.items(), key=lambda kv: kv[1])[-3:]


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
    # Another seed than the joint run's: its transcriber then starts far from this run's weights,
    # so that a joint run ignoring init_from is told apart (check_init_from_took_the_transcriber).
    proc = run_script("launch/train.py", ["--config=transcription:runlocal", f"--workdir={workdir}",
                                          f"--config.data.data_dir={built}", "--config.total_steps=2",
                                          "--config.seed=1", *TINY_STEPS], cwd=workspace)
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


def train_joint_uninterrupted(proxy, bucket, built, transcription_run, workspace) -> str:
    """joint_pretrained from the bucket transcription run, faults off: the reference."""
    workdir = f"gs://{bucket}/runs/joint_uninterrupted"
    proxy.faults_on = False
    try:
        proc = run_train(_joint_flags(workdir, built, transcription_run), cwd=workspace)
        out, _ = proc.communicate(timeout=500)
    finally:
        proxy.faults_on = True
    assert proc.returncode == 0, out
    return workdir


def train_joint_killed_and_resumed(bucket, built, transcription_run, workspace) -> str:
    """The same run with faults on: SIGKILLed as soon as it reports step 3 (before step 4 is
    trained, so before it can be saved), then restarted; it resumes from the last step committed
    at the kill."""
    workdir = f"gs://{bucket}/runs/joint"
    proc = run_train(_joint_flags(workdir, built, transcription_run), cwd=workspace)
    wait_for_line(proc, "step 3/4", timeout=500)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = run_dir.RunDir.at(workdir).saved_steps()
    assert committed and max(committed) < 4, committed
    restarted = run_train(_joint_flags(workdir, built, transcription_run), cwd=workspace)
    out, _ = restarted.communicate(timeout=500)
    assert restarted.returncode == 0, out
    resumed = re.findall(r"resumed from \S+ step (\d+)", out)
    assert resumed == [str(max(committed))], (committed, out[-3000:])
    assert "initialised from" not in out
    return workdir


def _params(workdir, step):
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer().restore(run_dir.RunDir.at(workdir).step_dir(step) / "default")["params"]


def check_resumed_equals_uninterrupted(uninterrupted, joint_run, workspace):
    for a, b in zip(jax.tree.leaves(_params(uninterrupted, 4)), jax.tree.leaves(_params(joint_run, 4)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert list(workspace.iterdir()) == []


def check_init_from_took_the_transcriber(transcription_run, joint_run):
    """The joint run's transcriber starts as the transcription run's: 2 Adam steps later (the
    earliest checkpoint kept) no weight has moved by more than a few learning rates (each Adam
    step moves a weight by at most about the learning rate, 1e-3 at most here), while a transcriber
    initialised afresh differs from the trained one by far more."""
    subtree = stages.get("joint").init_source_submodule("transcription")
    source = jax.tree.leaves(_params(transcription_run, run_dir.RunDir.at(transcription_run).latest_step()))
    steps = run_dir.RunDir.at(joint_run).saved_steps()
    joint = jax.tree.leaves(_params(joint_run, steps[0])[subtree])
    moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(source, joint, strict=True))
    print(f"init_from: the transcriber moved by at most {moved:.2e} in {steps[0]} steps")
    assert moved <= 1e-3 * steps[0], moved


def check_evaluation(proxy, bucket, joint_run, built, workspace):
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
    check_markers_uploaded_last(proxy, f"{bucket}/runs/joint/eval/test/4", run_dir.METRICS_FILE)
    assert list(workspace.iterdir()) == []


def _transcribe(checkpoint, audio, out, workspace, *extra) -> dict:
    """Runs the transcribe CLI; returns the song's notes document."""
    from jointist_jax.inference import cli

    before = os.getcwd()
    os.chdir(workspace)
    try:
        code = cli.main(["--checkpoint", checkpoint, "--audio", audio, "--out", out, "--instruments", "piano,bass",
                         "--quiet", *extra])
    finally:
        os.chdir(before)
    assert code == 0
    names = sorted(p.name for p in storage.path(out).iterdir())
    assert names == ["song"]
    return json.loads((storage.path(out) / "song" / "song.notes.json").read_text())


def check_transcription(proxy, bucket, joint_run, workspace, tmp_path):
    mix = next(f for f in storage.files_under(f"gs://{bucket}/slakh2100/test") if f.name == "mix.flac")
    storage.copy_file(mix, f"gs://{bucket}/songs/song.flac")
    out = f"gs://{bucket}/transcribed"
    document = _transcribe(joint_run, f"gs://{bucket}/songs", out, workspace, "--separate")
    folder = storage.path(out) / "song"
    assert [i["class_name"] for i in document["instruments"]] == ["Piano", "Bass"]
    assert sorted(p.name for p in (folder / "stems").iterdir()) == ["Bass.wav", "Piano.wav"]
    check_markers_uploaded_last(proxy, f"{bucket}/transcribed/song", "song.notes.json")
    # The same song from local disk, transcribed by the same bucket checkpoint: the same notes.
    (tmp_path / "songs").mkdir()
    storage.copy_file(mix, tmp_path / "songs" / "song.flac")
    local = _transcribe(joint_run, str(tmp_path / "songs"), str(tmp_path / "transcribed"), workspace)
    assert local["instruments"] == document["instruments"]
    # The notes of a model trained 4 steps may be none: the posteriorgrams they come from are compared too.
    with np.load(io.BytesIO((folder / "song.posteriorgrams.npz").read_bytes())) as remote, \
            np.load(tmp_path / "transcribed" / "song" / "song.posteriorgrams.npz") as here:
        assert np.abs(remote["frame_output"]).max() > 0
        for key in ("frame_output", "reg_onset_output", "transcribed_classes"):
            np.testing.assert_array_equal(remote[key], here[key])
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
    with gcs_fault_proxy.running(gcs.url, CHAIN_FAULTS) as proxy:
        bucket = make_bucket(gcs, tmp_path / "slakh")
        built = build_in_bucket(bucket, workspace)
        check_markers_uploaded_last(proxy, f"{bucket}/tfds/slakh2100/clips/1.0.0", "dataset_info.json")
        check_build_matches_a_local_build(bucket, built, tmp_path)
        check_pipeline_batches_equal_local_ones(built, tmp_path)
        check_shard_reads_are_ranged(proxy, built)  # here too, so that a whole-object read fails early
        transcription = train_transcription(bucket, built, workspace)
        check_training_outputs(transcription, workspace)
        uninterrupted = train_joint_uninterrupted(proxy, bucket, built, transcription, workspace)
        joint = train_joint_killed_and_resumed(bucket, built, transcription, workspace)
        check_resumed_equals_uninterrupted(uninterrupted, joint, workspace)
        check_init_from_took_the_transcriber(transcription, joint)
        check_evaluation(proxy, bucket, joint, built, workspace)
        check_transcription(proxy, bucket, joint, workspace, tmp_path)
        shard_reads = check_shard_reads_are_ranged(proxy, built)
        check_bad_paths(bucket, built, joint, workspace)
        print(f"fault proxy: {proxy.summary()}; {shard_reads} ranged shard reads")
        # Faults of every kind were injected (and survived: every step above passed).
        assert all(proxy.counts[kind] > 0 for kind in gcs_fault_proxy.KINDS), proxy.summary()
