"""Every shell command of README.md and launch/README.md, checked the way it can be here.

Each command of a fenced ``bash`` block (and of an indented block of launch/README.md) is
classified by its program:

* run here with tiny settings appended (:data:`RUN_HERE`): the command as written, plus the
  settings that make it take seconds on the tiny test dataset;
* its flags parsed by the program itself (absl for ``jointist-train``/``-eval``, including the
  config name, its ``:ARGS`` and every ``--config.FIELD``; argparse for the others), and every
  file it names that the repository holds must exist: commands that need what is not here
  (data, weights, a bucket with credentials, a GPU, minutes of CPU) or that other tests already run;
* ``bash -n`` for the pod and SLURM recipes;
* :data:`CANNOT_RUN_HERE` lists, as data, each command that is not run and why.

A command whose program none of these knows fails the test: a new README command needs a line here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from launch_helpers import ROOT, TOPOLOGY_TOLERANCE, checkpoint_params, run_train, two_process_flags

DOCS = ("README.md", "launch/README.md")
SHELL_BLOCKS = ("bash", "sh", "shell", "console")
# Where a README command uses a shim, the program it wraps.
SHIMS = {"launch/train.py": "jointist-train", "launch/eval.py": "jointist-eval",
         "launch/transcribe.py": "jointist-transcribe", "launch/convert_torch_checkpoint.py": "jointist-convert",
         "data_pipelines.build_slakh": "jointist-build-slakh", "data_pipelines.synth_slakh": "jointist-synth-slakh"}
ABSL_PROGRAMS = {"jointist-train": "jointist_jax.train.cli", "jointist-eval": "jointist_jax.evaluation.cli"}
ARGPARSE_PROGRAMS = {"jointist-transcribe": ("jointist_jax.inference.cli", "build_parser"),
                     "jointist-convert": ("jointist_jax.convert.cli", "parse_args"),
                     "jointist-build-slakh": ("data_pipelines.build_slakh", "_parser"),
                     "jointist-synth-slakh": ("data_pipelines.synth_slakh", "build_parser"),
                     "jointist-app": ("jointist_jax.app.cli", "build_parser")}

# Commands run here (matched by their start), and why the others are not, as data: the report of
# this test. Every other jointist command has its flags, config and files checked.
RUN_HERE = {
    "bash launch/local_two_process.sh": "run with the tiny dataset, 2 steps, no validation, and compared "
                                         "with one process of 4 devices",
    "jointist-train --config=transcription:runlocal --workdir=demo/workdirs/t":
        "run with the tiny dataset, 1 step, no validation",
    "jointist-train --help": "run",
    "source .venv/bin/activate": "run (bash sources it, then finds jointist-train on PATH)",
}
CANNOT_RUN_HERE = {
    "make install": "installs Debian packages with sudo; the suite runs inside what it installed "
                    "(the Makefile target is checked)",
    "make test": "is this test suite (the Makefile target is checked)",
    "make demo": "13 minutes of CPU; tests/test_benchmarks.py and tests/test_learning.py train its "
                 "recipes (the target and `bash -n scripts/demo.sh` are checked)",
    "jointist-train --config=transcription --workdir": "full-size: tens of seconds a step on a CPU (flags checked)",
    "jointist-train --config=joint_pretrained --workdir=runs": "full-size, needs a trained run (flags checked)",
    "jointist-train --config=transcription:runlocal --workdir=gs://": "runs in tests/test_gcs_chain.py "
                                                                      "(flags checked)",
    "jointist-train --config=joint_pretrained:runlocal --workdir=gs://": "runs in tests/test_gcs_chain.py "
                                                                        "(flags checked)",
    "jointist-build-slakh --slakh_dir gs://": "runs in tests/test_gcs_chain.py (flags checked)",
    "jointist-build-slakh --slakh_dir /data": "needs Slakh2100 (flags checked; the build runs in "
                                              "tests/test_build_slakh.py)",
    "jointist-eval --config=joint_pretrained:runlocal --workdir=gs://": "runs in tests/test_gcs_chain.py "
                                                                       "(flags checked)",
    "jointist-eval --config=joint_pretrained --workdir": "needs trained full-size runs (flags checked; "
                                                         "evaluation runs in tests/test_evaluation.py)",
    "jointist-eval --workdir=runs/t": "needs a full-size run to watch (flags checked; "
                                                      "--watch runs in tests/test_evaluation.py)",
    "jointist-transcribe --checkpoint gs://": "runs in tests/test_gcs_chain.py (flags checked)",
    "jointist-transcribe --checkpoint RUN": "needs a trained run and songs (flags checked; "
                                            "tests/test_transcribe.py runs it)",
    "jointist-transcribe --checkpoint weights": "needs the released PyTorch weights (flags checked)",
    "jointist-convert": "needs the released PyTorch checkpoints (flags checked; tests/test_convert_checkpoint.py "
                        "converts checkpoints of the same layout)",
    "jointist-app": "a server that runs until stopped, and needs a trained run (flags checked; "
                    "tests/test_app.py serves a run and drives the page in headless Chromium)",
    "tensorboard": "a server that runs until stopped (the executable is checked)",
    "bash launch/tpu_pod.sh": "needs gcloud and a TPU slice (`bash -n` checked; tests/test_tpu_pod_launcher.py "
                              "runs it with a recording gcloud)",
    "gcloud compute tpus": "creates or sets up a Cloud TPU slice: needs gcloud and a Google Cloud project",
    "sbatch": "needs a SLURM cluster (`bash -n` of the batch script checked)",
}


def extract_commands(doc: str) -> list[tuple[str, int, str]]:
    """``(doc, line, command)`` for each command of the fenced shell blocks and indented blocks of
    ``doc``: continuation lines joined, comments dropped."""
    commands, block, fence = [], [], None  # fence: None outside, else the block's language
    lines = (ROOT / doc).read_text().splitlines() + [""]
    for number, line in enumerate(lines, 1):
        marker = re.match(r"^```(\w*)", line)
        if marker:
            if fence is not None:
                commands += _join(doc, block) if fence in SHELL_BLOCKS else []
                block, fence = [], None
            else:
                commands += _join(doc, block)
                block, fence = [], marker.group(1)
            continue
        if fence is not None or (line.startswith("    ") and line.strip()):
            block.append((number, line))
        elif block:
            commands += _join(doc, block)
            block = []
    return commands


def _join(doc: str, block: list[tuple[int, str]]) -> list[tuple[str, int, str]]:
    out, current, first = [], "", 0
    for number, line in block:
        text = line.strip()
        if not current and (not text or text.startswith("#")):
            continue
        first = first or number
        current += " " + text
        if current.endswith("\\"):
            current = current[:-1]
            continue
        command = re.sub(r"\s+#\s.*$", "", current).strip()
        out.append((doc, first, " ".join(command.split())))
        current, first = "", 0
    return out


def all_commands() -> list[tuple[str, int, str]]:
    return [c for doc in DOCS for c in extract_commands(doc)]


def canonical(command: str) -> list[str]:
    """The command's words with ``python``/``bash`` + a shim replaced by the program it wraps."""
    words = shlex.split(command)
    if words[:2] == ["python", "-m"] and words[2] in SHIMS:
        return [SHIMS[words[2]], *words[3:]]
    if words[0] == "python" and words[1] in SHIMS:
        return [SHIMS[words[1]], *words[2:]]
    return words


def _matching(table: dict[str, str], command: str) -> str | None:
    text = " ".join(canonical(command))
    for prefix in table:
        if text.startswith(prefix):
            return prefix
    return None


def test_both_readmes_have_commands_and_each_has_a_classification():
    commands = all_commands()
    assert len(commands) >= 20, commands
    unclassified = [c for c in commands if _matching(RUN_HERE, c[2]) is None and _matching(CANNOT_RUN_HERE, c[2]) is None]
    assert not unclassified, "README commands this test does not know: add them to RUN_HERE or CANNOT_RUN_HERE:\n" + \
        "\n".join(f"{d}:{n}: {c}" for d, n, c in unclassified)
    print("\n".join(f"{d}:{n}: {c}\n    -> {RUN_HERE.get(_matching(RUN_HERE, c)) or CANNOT_RUN_HERE[_matching(CANNOT_RUN_HERE, c)]}"
                    for d, n, c in commands))


def _env(**extra) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), PATH=f"{bin_dir}:{os.environ['PATH']}",
                PYTHON=sys.executable, **extra)


# Parses one command line's flags with the program's own absl parser, config included (the
# config's override flags exist once per process); prints "ok" or the one-line error.
_ABSL_CHECK = """
import sys
from absl import flags
from jointist_jax import cli_support
import {module} as cli
flags.mark_flags_as_required(list(cli.REQUIRED_FLAGS))
try:
    cli_support.parse_stage_flags(sys.argv[1:], "check")
    print("ok")
except cli_support.ConfigError as error:
    print(error)
"""
# Parses each argument list (JSON) with an argparse program's parser; one line each.
_ARGPARSE_CHECK = """
import contextlib, io, json, sys
from {module} import {function} as f
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            f(argv) if "{function}" == "parse_args" else f().parse_args(argv)
        print("ok")
    except SystemExit:
        print(err.getvalue().strip().splitlines()[-1])
"""


def check_flags(program: str, argvs: list[list[str]]) -> list[str]:
    """For each argument list, "ok" or what the program would reject about it."""
    def python(code: str, *args: str) -> str:
        proc = subprocess.run([sys.executable, "-c", code, *args], env=_env(), capture_output=True, text=True,
                              timeout=300, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    if program in ABSL_PROGRAMS:
        return [python(_ABSL_CHECK.format(module=ABSL_PROGRAMS[program]), program, *argv).strip() for argv in argvs]
    module, function = ARGPARSE_PROGRAMS[program]
    return python(_ARGPARSE_CHECK.format(module=module, function=function), json.dumps(argvs)).splitlines()


def _repository_files(words: list[str]) -> list[str]:
    """The words that name files of this repository (scripts, configs): these must exist."""
    return [w for w in words if re.match(r"^(launch|scripts|benchmarks|configs|data_pipelines)/[\w./-]+$", w)]


def test_every_documented_program_flag_config_and_file_exists():
    by_program: dict[str, list[tuple[str, list[str]]]] = {}
    problems = []
    for doc, number, command in all_commands():
        words = canonical(command)
        where = f"{doc}:{number}: {command}"
        problems += [f"{where}: no file {f}" for f in _repository_files(shlex.split(command)) if not (ROOT / f).exists()]
        if words[0] in ABSL_PROGRAMS or words[0] in ARGPARSE_PROGRAMS:
            if words[1:] != ["--help"]:
                by_program.setdefault(words[0], []).append((where, words[1:]))
        elif words[0] == "make":
            targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M)
            problems += [f"{where}: no Makefile target {t}" for t in words[1:] if t not in targets]
        elif words[0] in ("tensorboard",):
            if not (Path(sys.executable).parent / words[0]).exists():
                problems.append(f"{where}: {words[0]} is not installed beside {sys.executable}")
    for program, commands in by_program.items():
        for (where, _), result in zip(commands, check_flags(program, [argv for _, argv in commands]), strict=True):
            if result != "ok":
                problems.append(f"{where}: {result}")
    assert not problems, "\n".join(problems)


BENCHMARK_DOCS = ("README.md", "Makefile", "benchmarks/README.md", "scripts/readme_numbers.py")


def test_benchmarks_run_as_modules_of_their_package():
    """Benchmarks run as ``python -m benchmarks.NAME`` (they import ``benchmarks.common``); every
    such module a document names exists, and none is run by its file path."""
    named, by_path = set(), []
    for doc in BENCHMARK_DOCS:
        text = (ROOT / doc).read_text()
        named |= set(re.findall(r"-m\"?,? \"?benchmarks\.([a-z_]+)", text))
        by_path += [f"{doc}: {m}" for m in re.findall(r"(?:python|\$\(PY\))\s+benchmarks/\w+\.py", text)]
    assert {"input_pipeline", "forward", "train_step", "inference", "learn_synth", "diagnose_learning",
            "accelerator_suite"} <= named
    assert not [name for name in named if not (ROOT / "benchmarks" / f"{name}.py").is_file()]
    assert not by_path, by_path
    assert (ROOT / "benchmarks" / "__init__.py").is_file()


def test_pod_slurm_and_demo_scripts_parse():
    scripts = {"scripts/demo.sh"}
    for _, _, command in all_commands():
        words = shlex.split(command)
        scripts |= {w for w in words if w.endswith((".sh", ".sbatch")) and (ROOT / w).exists()}
    assert {"launch/tpu_pod.sh", "launch/slurm_gpu.sbatch", "launch/local_two_process.sh"} <= scripts
    for script in sorted(scripts):
        proc = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"


def _one_command(start: str) -> str:
    found = [c for _, _, c in all_commands() if " ".join(canonical(c)).startswith(start)]
    assert len(found) == 1, (start, found)
    return found[0]


def _tiny(tiny_tfds_dir) -> list[str]:
    return [f"--config.data.data_dir={tiny_tfds_dir}", "--config.data.eval_batches=0", "--config.log_every=1"]


def test_venv_activation_then_console_scripts(tmp_path):
    """The install section's second line, then a console script by its bare name."""
    command = _one_command("source .venv/bin/activate")
    proc = subprocess.run(["bash", "-c", f"cd {ROOT} && {command} && jointist-train --help"], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr
    assert "--workdir" in proc.stdout


@pytest.mark.slow
def test_local_training_command_runs(tiny_tfds_dir, tmp_path):
    words = canonical(_one_command("jointist-train --config=transcription:runlocal --workdir=demo/workdirs/t"))
    words = [w.replace("demo/workdirs/t", str(tmp_path / "t")) for w in words]
    proc = subprocess.run([*words, *_tiny(tiny_tfds_dir), "--config.total_steps=1"], env=_env(XLA_FLAGS=
                          "--xla_force_host_platform_device_count=2"), capture_output=True, text=True,
                          timeout=400, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "final step 1 parameter checksum" in proc.stdout


@pytest.mark.slow
def test_two_process_command_trains_what_one_process_trains(tiny_tfds_dir, tmp_path):
    """The README's two-process command, as written: both processes agree on their parameters, say
    where their logs are, and train what one process of 4 devices trains with the same global batch
    (the batch depends on (seed, step) only; the two differ by float summation order at most)."""
    words = shlex.split(_one_command("bash launch/local_two_process.sh"))
    two = tmp_path / "runs" / "two_process"
    words = [str(two) if w == "runs/two_process" else w for w in words]
    proc = subprocess.run([*words, *_tiny(tiny_tfds_dir), "--config.total_steps=2"], env=_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    checksums = {line.split("checksum")[1] for line in proc.stdout.splitlines() if "parameter checksum" in line}
    assert len(checksums) == 1 and proc.stdout.count("parameter checksum") == 2, proc.stdout
    log = tmp_path / "runs" / "two_process.process0.log"
    assert log.is_file() and f"logs: {log}" in proc.stdout
    one = tmp_path / "one_process"
    single = run_train(two_process_flags(tiny_tfds_dir, one, total_steps=2), devices=4)
    out, _ = single.communicate(timeout=500)
    assert single.returncode == 0, out
    largest = max(float(np.max(np.abs(a - b)))
                  for a, b in zip(checkpoint_params(two, 2), checkpoint_params(one, 2), strict=True))
    print("largest parameter difference", largest)
    assert largest < TOPOLOGY_TOLERANCE


def test_two_process_failure_is_shown_and_bucket_logs_stay_out_of_the_working_folder(tmp_path):
    """A failing run (no such config field) prints the end of each process's log; a gs:// workdir
    gets its logs in a temporary folder, not a local ``gs:`` folder."""
    proc = subprocess.run(["bash", str(ROOT / "launch/local_two_process.sh"), "transcription:runlocal",
                           "gs://no-bucket/run", "--config.nope=1"], env=_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "process 0 failed" in proc.stderr and "no field 'nope'" in proc.stderr, proc.stderr
    logs = re.search(r"logs: (\S+)0\.log", proc.stdout).group(1)
    assert not logs.startswith(("gs:", str(tmp_path))) and os.path.isfile(logs + "0.log")
    assert list(tmp_path.iterdir()) == []
    subprocess.run(["rm", "-r", os.path.dirname(logs)], check=True)
