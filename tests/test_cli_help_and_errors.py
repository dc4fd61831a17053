"""``--help`` of every console script lists the program's own flags, one line each, and exits 0;
a mistake in ``--config`` is one line naming what is wrong, with exit status 2."""

import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from launch_helpers import ROOT

BIN = Path(sys.executable).parent


def _console_scripts() -> list[str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return [line.split("=")[0].strip() for line in lines]


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=300, cwd=ROOT / "tests")


def _defined_flags(script: str) -> set[str]:
    """The flags the program's module defines, read from its source."""
    module = {"jointist-train": "jointist_jax/train/cli.py", "jointist-eval": "jointist_jax/evaluation/cli.py",
              "jointist-transcribe": "jointist_jax/inference/cli.py", "jointist-convert": "jointist_jax/convert/cli.py",
              "jointist-build-slakh": "data_pipelines/build_slakh.py",
              "jointist-synth-slakh": "data_pipelines/synth_slakh.py", "jointist-app": "jointist_jax/app/cli.py"}[script]
    source = (ROOT / module).read_text()
    return set(re.findall(r'(?:DEFINE_\w+|add_argument)\(\s*"-*(\w+)"', source))


@pytest.mark.parametrize("script", _console_scripts())
def test_help_lists_the_programs_own_flags_one_line_each(script):
    proc = _run(str(BIN / script), "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    flag_lines = [line for line in proc.stdout.splitlines() if line.startswith("  -")]
    listed = {re.match(r"\s+-+(\w+)", line).group(1) for line in flag_lines}
    defined = _defined_flags(script)
    assert len(defined) >= 5 and defined <= listed, sorted(defined - listed)
    # One line each: nothing but flag lines after the first one, up to the blank line before --helpfull.
    lines = proc.stdout.splitlines()
    body = lines[lines.index(flag_lines[0]):]
    body = body[:body.index("")] if "" in body else body
    assert all(line.startswith("  -") for line in body), body
    # absl's, jax's and orbax's own flags stay behind --helpfull.
    assert "alsologtostderr" not in proc.stdout and "jax_" not in proc.stdout


def test_config_help_names_each_stage_and_its_arguments():
    out = _run(str(BIN / "jointist-train"), "--help").stdout
    config_line = next(line for line in out.splitlines() if line.startswith("  --config=NAME"))
    for stage in ("ir[:runlocal]", "separation[:runlocal]", "transcription[:runlocal,variant=narrow|wide]",
                  "joint_pretrained[:runlocal,variant=narrow|wide]", "joint_scratch[:runlocal,variant=narrow|wide]"):
        assert stage in config_line, config_line
    assert "--helpfull" in out


@pytest.mark.parametrize("args, expected", [
    (["--config=transcription", "--config.optimizer.lrr=1"],
     "--config.optimizer.lrr: no field 'lrr' in config.optimizer; closest: lr"),
    (["--config=transcription", "--config.optimiser.lr=1"], "--config.optimiser.lr: no field 'optimiser'; closest: optimizer"),
    (["--config=transcription:variant=huge"],
     "--config=transcription:variant=huge: config argument variant='huge' is not one of narrow, wide"),
    (["--config=ir:variant=wide"], "--config=ir:variant=wide: unknown config argument 'variant'; valid: runlocal"),
    (["--config=transcription", "--config.optimizer.lr=abc"], "--config.optimizer.lr=abc: expected a float, got 'abc'"),
    (["--config=transcription", "--config.data.global_batch=2.5"],
     "--config.data.global_batch=2.5: expected an integer, got '2.5'"),
    (["--config=transcriptio"], "--config=transcriptio: no config 'transcriptio'; known: ir, joint_pretrained, "
                                "joint_scratch, separation, transcription"),
])
def test_a_config_mistake_is_one_line_and_exit_status_2(args, expected, tmp_path):
    proc = _run(str(BIN / "jointist-train"), *args, f"--workdir={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr == f"jointist-train: error: {expected}\n"
    assert list(tmp_path.iterdir()) == []


def test_eval_reports_config_and_flag_mistakes_the_same_way(tmp_path):
    proc = _run(str(BIN / "jointist-eval"), "--config=joint_pretrained", "--config.data.data_dri=x",
                f"--workdir={tmp_path}")
    assert proc.returncode == 2
    assert proc.stderr == "jointist-eval: error: --config.data.data_dri: no field 'data_dri' in config.data; " \
                          "closest: data_dir\n"
    proc = _run(str(BIN / "jointist-eval"), "--config=joint_pretrained")
    assert (proc.returncode, proc.stderr) == (2, "jointist-eval: error: --workdir is required\n")
