"""A bucket that goes away while an evaluation or a transcription uploads its results: nothing
half-written is ever taken as done.

fake-gcs-server keeps its objects on disk (so it can be stopped and started again), behind
scripts/gcs_fault_proxy.py. The outage is set off by the request log, not by a clock: when the
second upload into the bucket arrives, once the first one has been answered, the emulator is
stopped before that request is forwarded. So exactly one output file lands, the marker (written
last) never does, and every client request from then on meets a closed connection, for longer
than gcsfs's retries (about 31 s).

Each program must then stop with an error naming the folder; the folder has files but no marker
and does not count as done (the evaluation watcher evaluates the step again); the same command,
run again once the bucket is back, completes with the results of a run that met no outage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from scripts import gcs_emulator, gcs_fault_proxy

from jointist_jax import storage

ROOT = Path(__file__).resolve().parents[1]
STEP = 7
# gcsfs gives up on a request after about 31 s of waits; nothing else then waits on the bucket.
GIVES_UP_WITHIN_S = 60


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """An emulator keeping its objects on disk, so that it can be stopped and started again."""
    server = gcs_emulator.Emulator(root=tmp_path_factory.mktemp("outage-objects")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def transcription_run(tmp_path_factory):
    """A tiny freshly initialised transcription run at step 7 whose untrained posteriors start at
    0.5 (so every instrument decodes notes)."""
    from flax import nnx

    import configs.transcription
    from jointist_jax import runs, stages

    config = configs.transcription.get_config("runlocal")
    config.model.transcriber.output_prior = 0.0
    workdir = tmp_path_factory.mktemp("outage-run") / "transcription"
    runs.save_model(workdir, config, stages.build_model(config, nnx.Rngs(0)), step=STEP)
    return workdir


class _GoesAwayAtSecondUpload(list):
    """A proxy request log that stops the emulator when the second upload into ``bucket`` arrives,
    after the first upload was answered and before the second is forwarded."""

    def __init__(self, emulator, bucket: str):
        super().__init__()
        self.emulator = emulator
        self.prefix = f"/upload/storage/v1/b/{bucket}/o"
        self.uploads: list = []
        self.stopped_at: float | None = None

    def append(self, entry) -> None:
        super().append(entry)
        if entry.method != "POST" or not entry.path.startswith(self.prefix) or len(self.uploads) >= 2:
            return
        self.uploads.append(entry)
        if len(self.uploads) == 2:
            deadline = time.monotonic() + 60
            while self.uploads[0].status is None and time.monotonic() < deadline:
                time.sleep(0.01)
            self.emulator.stop()
            self.stopped_at = time.monotonic()


def _outage(emulator, proxy, prefix: str):
    bucket = gcs_emulator.new_bucket(prefix)
    proxy.log = _GoesAwayAtSecondUpload(emulator, bucket)
    return bucket, proxy.log


def _landed(folder: str) -> list[str]:
    return [os.fspath(f)[len(folder) + 1:] for f in storage.files_under(folder)]


@pytest.mark.slow
def test_an_evaluation_cut_by_an_outage_is_not_taken_as_done(emulator, transcription_run, tiny_tfds_dir):
    from jointist_jax.evaluation import EvalOptions, evaluate_run, watch

    with gcs_fault_proxy.running(emulator.url) as proxy:
        bucket, log = _outage(emulator, proxy, "jointist-eval-outage")
        out = f"gs://{bucket}/eval"
        folder = f"{out}/test/{STEP}"
        command = [sys.executable, str(ROOT / "launch" / "eval.py"), f"--workdir={transcription_run}",
                   f"--data_dir={tiny_tfds_dir}", "--split=test", f"--out={out}", "--media_songs=1",
                   "--no_tensorboard", "--watch", "--poll_seconds=0.2", "--watch_timeout=1"]
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
        gave_up_s = time.monotonic() - log.stopped_at
        emulator.start()
        print(f"evaluation: stopped {gave_up_s:.0f} s after the bucket went away")
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert gave_up_s < GIVES_UP_WITHIN_S
        message = next(line for line in proc.stderr.splitlines() if line.startswith("eval.py: error:"))
        assert f"'{folder}' could not be written to the bucket" in message and "metrics.json" in message, message
        landed = _landed(folder)
        assert landed and "metrics.json" not in landed, landed  # files there, the marker not
        assert watch.pending_steps(transcription_run, out, "test") == [STEP]

        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"evaluated steps [{STEP}]" in proc.stdout, proc.stdout[-3000:]
        document = json.loads(storage.path(f"{folder}/metrics.json").read_text())

    reference = evaluate_run(transcription_run, tiny_tfds_dir, EvalOptions(split="test", media_songs=1))
    np.testing.assert_equal(document["scalars"], json.loads(json.dumps(reference.scalars)))


@pytest.mark.slow
def test_a_transcription_cut_by_an_outage_is_not_taken_as_done(emulator, transcription_run, tiny_slakh_dir,
                                                               tmp_path, capsys):
    from jointist_jax.inference import cli

    song = sorted(tiny_slakh_dir.glob("test/*/mix.flac"))[0]
    name = song.stem

    def transcribe(out) -> int:
        return cli.main(["--checkpoint", str(transcription_run), "--audio", str(song), "--out", str(out),
                         "--instruments", "piano,bass", "--quiet"])

    with gcs_fault_proxy.running(emulator.url) as proxy:
        bucket, log = _outage(emulator, proxy, "jointist-transcribe-outage")
        out = f"gs://{bucket}/songs"
        folder = f"{out}/{name}"
        code = transcribe(out)
        gave_up_s = time.monotonic() - log.stopped_at
        emulator.start()
        error = capsys.readouterr().err
        print(f"transcription: stopped {gave_up_s:.0f} s after the bucket went away")
        assert code == 1, error[-3000:]
        assert gave_up_s < GIVES_UP_WITHIN_S
        assert f"{name}: could not write the results: '{folder}' could not be written to the bucket" in error, error
        assert f"{name}.notes.json" in error
        landed = _landed(folder)
        assert landed and f"{name}.notes.json" not in landed, landed  # files there, the marker not

        assert transcribe(out) == 0, capsys.readouterr().err[-3000:]
        again = {f: storage.path(f"{folder}/{name}.{f}").read_bytes() for f in ("notes.json", "mid")}

    assert transcribe(tmp_path / "no_outage") == 0
    for suffix, data in again.items():
        assert (tmp_path / "no_outage" / name / f"{name}.{suffix}").read_bytes() == data, suffix
