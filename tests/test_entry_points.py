"""The console scripts of setup.cfg and the launch/ scripts that wrap them: one program each."""

import configparser
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {"jointist-transcribe": ("jointist_jax.inference.cli", "launch/transcribe.py"),
            "jointist-eval": ("jointist_jax.evaluation.cli", "launch/eval.py"),
            "jointist-train": ("jointist_jax.train.cli", "launch/train.py"),
            "jointist-convert": ("jointist_jax.convert.cli", "launch/convert_torch_checkpoint.py")}


def _console_scripts() -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict((part.strip() for part in line.split("=")) for line in lines)


def test_every_launch_script_is_a_console_script_of_the_package():
    scripts = _console_scripts()
    for command, (module, launch) in COMMANDS.items():
        assert scripts[command] == f"{module}:main"
        assert "\ndef main(" in (ROOT / (module.replace(".", "/") + ".py")).read_text(), module
        shim = (ROOT / launch).read_text()
        assert f"from {module} import main" in shim and "sys.path" not in shim, launch


def _run(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300,
                          cwd=ROOT / "tests")


def test_train_command_resolves_config_names(capsys):
    spec = importlib.util.spec_from_file_location("launch_train_shim", ROOT / "launch" / "train.py")
    shim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shim)
    from jointist_jax.train import cli

    assert shim.main is cli.main
    with pytest.raises(SystemExit) as exit_:
        cli.main(["jointist-train", "--config=nope", "--workdir=x"])
    assert exit_.value.code == 2
    assert "jointist-train: error: --config=nope: no config 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_runs_as_a_module_and_names_itself(tmp_path):
    proc = _run("-m", "jointist_jax.evaluation.cli", "--config=transcription:runlocal", f"--workdir={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "jointist-eval: error:" in proc.stderr and "neither a workdir" in proc.stderr
    proc = _run(str(ROOT / "launch" / "eval.py"), "--config=transcription:runlocal", f"--workdir={tmp_path}")
    assert proc.returncode == 2 and "eval.py: error:" in proc.stderr and "neither a workdir" in proc.stderr
