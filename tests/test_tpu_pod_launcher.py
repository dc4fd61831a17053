"""launch/tpu_pod.sh with a recording ``gcloud`` on PATH: what each worker's shell runs, and the
paths it refuses."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from launch_helpers import ROOT

SCRIPT = str(ROOT / "launch" / "tpu_pod.sh")
# Prints its arguments, each followed by a NUL byte, into $ARGV_FILE.
_RECORDER = '#!/usr/bin/env bash\nprintf "%s\\0" "$@" > "$ARGV_FILE"\n'


def _recorder(path) -> str:
    path.write_text(_RECORDER)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _argv(path) -> list[str]:
    return path.read_text().split("\0")[:-1]


def _launch(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """Runs tpu_pod.sh with a ``gcloud`` that records its arguments into tmp_path/gcloud.argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    _recorder(bin_dir / "gcloud")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", ARGV_FILE=str(tmp_path / "gcloud.argv"))
    return subprocess.run(["bash", SCRIPT, *args], env=env, capture_output=True, text=True, timeout=60)


AWKWARD = ["--config.data.data_dir=gs://b/tfds", "--config.init_from=gs://b/run one",
           "--config.note=it's \"quoted\" $HOME `date` ; rm -rf x", "--config.optimizer.lr", "3e-4"]


def test_every_argument_reaches_train_py_on_each_worker_unchanged(tmp_path):
    done = _launch(tmp_path, "my-tpu", "us-central2-b", "joint_pretrained:variant=wide", "gs://b/jointist/pts",
                   *AWKWARD)
    assert done.returncode == 0, done.stderr
    gcloud = _argv(tmp_path / "gcloud.argv")
    assert gcloud[:-1] == ["compute", "tpus", "tpu-vm", "ssh", "my-tpu", "--zone", "us-central2-b",
                           "--worker=all", "--command"]
    # A worker's login shell runs the command: here bash, in a home with a recording python.
    home = tmp_path / "home"
    (home / "jointist-jax" / ".venv" / "bin").mkdir(parents=True)
    _recorder(home / "jointist-jax" / ".venv" / "bin" / "python")
    worker = subprocess.run(["bash", "-c", gcloud[-1]], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, HOME=str(home), ARGV_FILE=str(tmp_path / "train.argv")))
    assert worker.returncode == 0, worker.stderr
    assert _argv(tmp_path / "train.argv") == [
        "launch/train.py", "--config=joint_pretrained:variant=wide", "--workdir=gs://b/jointist/pts", *AWKWARD]


@pytest.mark.parametrize("workdir, data_flags, named", [
    ("/home/me/run", ["--config.data.data_dir=gs://b/tfds"], "WORKDIR must be a gs:// path"),
    ("gs://b/run", ["--config.data.data_dir=/data/tfds"], "got '/data/tfds'"),
    ("gs://b/run", ["--config.data.data_dir", "~/tensorflow_datasets"], "got '~/tensorflow_datasets'"),
    ("gs://b/run", [], "got 'the config default'"),
    ("gs://b/run", ["--config.data.data_dir=gs://b/tfds", "--config.data.data_dir=demo/tfds"], "got 'demo/tfds'"),
])
def test_a_path_that_is_not_shared_by_every_host_is_refused(tmp_path, workdir, data_flags, named):
    done = _launch(tmp_path, "my-tpu", "us-central2-b", "transcription", workdir, *data_flags)
    assert done.returncode == 2 and named in done.stderr, done.stderr
    assert not (tmp_path / "gcloud.argv").exists()
