r"""Plants known bugs one at a time in a temporary copy of the repository and runs the tests that
claim to catch each; prints which were caught.

Every mutation replaces one exact snippet of one file (it must occur exactly once: a stale
snippet is reported, never silently skipped) and runs its tests in the copy with
``PYTHONPATH`` set to the copy. The working tree is never modified. A mutation counts as
``caught`` when its tests fail with the bug planted, ``missed`` when they pass; with
``--baseline`` its tests are first run unmutated, and a mutation whose tests fail without the
bug is reported as ``baseline failed`` instead.

  .venv/bin/python scripts/mutation_check.py                 # every mutation
  .venv/bin/python scripts/mutation_check.py --list
  .venv/bin/python scripts/mutation_check.py --only warmup_zero_ignored,toy_stage_ignored --baseline

Not part of ``make test`` (it runs slow tests once per mutation); tests/test_mutation_check.py
checks that every snippet still occurs exactly once.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Mutation:
    """One planted bug: ``old`` (exact text, once in ``file``) becomes ``new``; ``tests`` are pytest
    arguments (node ids, or a file followed by ``-k`` and an expression) and ``test_globs`` test
    files matched in the copy when it runs (files that may not exist yet)."""

    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...] = ()
    test_globs: tuple[str, ...] = ()


MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "window_tolerance_loosened", "jointist_jax/convert/assign.py",
        '    return MEL_FILTERBANK_ATOL if key.endswith("mel_scale.fb") else WINDOW_ATOL',
        "    return MEL_FILTERBANK_ATOL",
        ("tests/test_convert_checkpoint.py", "-k", "each_window or filterbank_is_held or nudged_separator_window")),
    Mutation(
        "crop_sampling_hard_coded", "jointist_jax/data/spec.py",
        "crop_sampling=data.crop_sampling,", 'crop_sampling="per_track",',
        ("tests/test_spec.py::test_the_spec_of_a_stage_carries_every_setting_of_the_config",
         "tests/test_stages.py::test_a_run_with_all_audio_crop_sampling_trains_on_its_batches")),
    Mutation(
        "data_seed_hard_coded", "jointist_jax/data/spec.py",
        "seed=config.seed,", "seed=0,",
        ("tests/test_spec.py::test_the_spec_of_a_stage_carries_every_setting_of_the_config",
         "tests/test_stages.py::test_a_run_trains_on_the_batches_of_its_seed")),
    Mutation(
        "process_offset_dropped", "jointist_jax/data/pipeline.py",
        "return step * self.global_batch + self.process_index * self.local_batch + slot",
        "return step * self.global_batch + slot",
        ("tests/test_input_pipeline.py::test_two_hosts_build_the_one_host_global_batch",)),
    Mutation(
        "loss_check_skipped", "jointist_jax/train/trainer.py",
        '    watched = losses + (["param_norm"] if "param_norm" in metrics else [])',
        '    watched = ["param_norm"] if "param_norm" in metrics else []',
        ("tests/test_train.py::test_the_guard_reads_the_loss_before_the_parameter_norm",
         "tests/test_train.py::test_nonfinite_loss_stops_and_keeps_last_good_checkpoint")),
    Mutation(
        "best_and_latest_swapped", "jointist_jax/run_dir.py",
        '        if choice == "latest":\n            return self.latest_step()\n'
        '        if choice == "best":\n            return self.best_step()\n',
        '        if choice == "latest":\n            return self.best_step()\n'
        '        if choice == "best":\n            return self.latest_step()\n',
        ("tests/test_run_dir.py::test_the_best_checkpoint_is_kept_beside_the_last_few",)),
    Mutation(
        "init_from_ignored", "jointist_jax/train/trainer.py",
        "    elif config.init_from:\n        state = _initialise_from(run, state, config.init_from)",
        "    elif False:\n        state = _initialise_from(run, state, config.init_from)",
        ("tests/test_train.py::test_joint_pretrained_starts_from_the_transcription_checkpoint",)),
    Mutation(
        "decoder_threshold_0_01", "jointist_jax/rolls.py",
        "DEFAULT_THRESHOLD = 0.1\n", "DEFAULT_THRESHOLD = 0.01\n",
        ("tests/test_rolls_decode.py",)),
    Mutation(
        "bucket_read_downloads_whole_object", "jointist_jax/storage.py",
        "            data = _filesystem().cat_file(_object_key(self.files[file_index]), start=offset, "
        "end=offset + length)",
        "            data = _filesystem().cat_file(_object_key(self.files[file_index]))[offset:offset + length]",
        test_globs=("tests/test_gcs_chain.py", "tests/test_*proxy*.py", "tests/test_storage*.py")),
    Mutation(
        "bucket_read_many_downloads_whole_objects", "jointist_jax/storage.py",
        '            for i, data in zip(remote, _filesystem().cat_ranges(keys, starts, ends, on_error="raise")):\n'
        "                out[i] = data",
        "            for i, key, start, end in zip(remote, keys, starts, ends):\n"
        "                out[i] = _filesystem().cat_file(key)[start:end]",
        test_globs=("tests/test_gcs_chain.py", "tests/test_*proxy*.py", "tests/test_storage*.py")),
    Mutation(
        "upload_marker_not_last", "jointist_jax/storage.py",
        "    first = [f for f in files if f not in last]\n    final = [f for f in last if f in files]",
        "    first = files\n    final = []",
        test_globs=("tests/test_gcs_chain.py", "tests/test_*proxy*.py", "tests/test_storage*.py")),
    Mutation(
        "warmup_zero_ignored", "jointist_jax/optimizer.py",
        "        if warmup_steps == 0:\n            return lr * decayed\n", "",
        ("tests/test_optimizer.py", "-k", "warm_up")),
    Mutation(
        "toy_stage_ignored", "jointist_jax/train/trainer.py",
        "self.stage = stages.get(config.stage) if stage is None else stage",
        "self.stage = stages.get(config.stage)",
        ("tests/test_stages.py::test_an_unregistered_stage_object_drives_a_run_too",)),
    Mutation(
        "toy_stage_loss_ignored", "jointist_jax/train/trainer.py",
        "self.eval_step = jax.jit(make_eval_step(self.eval_graphdef, self.stage),",
        "self.eval_step = jax.jit(make_eval_step(self.eval_graphdef, config.stage),",
        ("tests/test_stages.py::test_an_unregistered_stage_object_drives_a_run_too",)),
    Mutation(
        "resume_reads_batches_from_step_0", "jointist_jax/train/trainer.py",
        "start_step=first_step)", "start_step=0)",
        ("tests/test_train.py::test_sigterm_saves_and_exits_cleanly_and_resumes_on_one_device",)),
)


class StaleMutation(ValueError):
    """A mutation whose snippet is not found exactly once in its file."""


def plant(mutation: Mutation, text: str) -> str:
    """``text`` with the mutation's snippet replaced; StaleMutation unless it occurs exactly once."""
    count = text.count(mutation.old)
    if count != 1:
        raise StaleMutation(f"{mutation.name}: the snippet to replace occurs {count} times in "
                            f"{mutation.file} (expected once): {mutation.old!r}")
    return text.replace(mutation.old, mutation.new)


def repository_files(root: Path) -> list[str]:
    """Tracked and untracked, not ignored files of the repository at ``root`` (relative paths)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=root,
                         check=True, capture_output=True).stdout.decode()
    return [f for f in out.split("\0") if f and (root / f).is_file()]


def copy_repository(root: Path, target: Path) -> Path:
    """A copy of the working tree's files (uncommitted edits included) at ``target``."""
    for relative in repository_files(root):
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, destination)
    return target


def test_arguments(mutation: Mutation, copy: Path) -> list[str]:
    """The mutation's pytest arguments, its globs resolved in ``copy``."""
    matched = sorted({os.path.relpath(p, copy) for pattern in mutation.test_globs
                      for p in glob.glob(str(copy / pattern))})
    return list(mutation.tests) + matched


def run_tests(copy: Path, arguments: list[str], timeout: float) -> tuple[int, str]:
    """(pytest's exit status, its output) for ``arguments`` run in ``copy``; 124 on a timeout.

    pytest runs in its own process group, ended afterwards: a test that fails under a planted bug
    may leave the processes it started (training runs, emulators) behind."""
    env = dict(os.environ, PYTHONPATH=str(copy))
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-n", "0", "-p", "no:cacheprovider", *arguments]
    proc = subprocess.Popen(command, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
        status = proc.returncode
    except subprocess.TimeoutExpired:
        status, output = 124, f"pytest ran past {timeout:g} s"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return status, output


def verdict(status: int) -> str:
    """What pytest's exit status says about a planted bug."""
    return {0: "missed", 1: "caught", 5: "no tests", 124: "timeout"}.get(status, f"error (pytest exit {status})")


def check_mutation(mutation: Mutation, copy: Path, *, baseline: bool, timeout: float) -> tuple[str, float, str]:
    """(result, seconds, pytest output tail) of one mutation planted in ``copy``; the file is
    restored afterwards."""
    start = time.perf_counter()
    arguments = test_arguments(mutation, copy)
    if not arguments:
        return "no tests", 0.0, f"no test file matches {mutation.test_globs}"
    target = copy / mutation.file
    original = target.read_text()
    mutated = plant(mutation, original)
    if baseline:
        status, output = run_tests(copy, arguments, timeout)
        if status != 0:
            return f"baseline failed ({verdict(status)})", time.perf_counter() - start, output[-2000:]
    target.write_text(mutated)
    try:
        status, output = run_tests(copy, arguments, timeout)
    finally:
        target.write_text(original)
    return verdict(status), time.perf_counter() - start, output[-2000:]


def format_table(rows: list[tuple[str, str, str, str]]) -> str:
    """Rows of (mutation, file, tests, result) as an aligned text table."""
    header = ("mutation", "file", "tests", "result")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None, *, root: Path = ROOT, mutations: tuple[Mutation, ...] = MUTATIONS) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated mutation names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--baseline", action="store_true", help="first run each mutation's tests unmutated")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per pytest run")
    parser.add_argument("--verbose", action="store_true", help="print each pytest run's output tail")
    args = parser.parse_args(argv)
    by_name = {m.name: m for m in mutations}
    chosen = [n for n in args.only.split(",") if n] or list(by_name)
    unknown = [n for n in chosen if n not in by_name]
    if unknown:
        parser.error(f"unknown mutation(s) {unknown}; known: {sorted(by_name)}")
    if args.list:
        for name in chosen:
            m = by_name[name]
            print(f"{name}: {m.file}; tests {' '.join(m.tests + m.test_globs)}")
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="mutation_check-") as temp:
        copy = copy_repository(root, Path(temp) / "repo")
        for name in chosen:
            mutation = by_name[name]
            try:
                result, seconds, output = check_mutation(mutation, copy, baseline=args.baseline,
                                                         timeout=args.timeout)
            except StaleMutation as e:
                result, seconds, output = "stale", 0.0, str(e)
            tests = " ".join(test_arguments(mutation, copy)) or " ".join(mutation.test_globs)
            print(f"{name}: {result} ({seconds:.0f} s)", flush=True)
            if args.verbose or result.startswith(("stale", "error", "baseline", "no tests")):
                print(output, flush=True)
            rows.append((name, mutation.file, tests, result))
    print()
    print(format_table(rows))
    return 0 if all(r[3] == "caught" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
