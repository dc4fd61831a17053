"""README.md's deterministic figures are what the code computes today (scripts/readme_numbers.py):
the ones computed in seconds here, the rest (on the demo's data) by `make benchmarks`."""

import importlib.util

import pytest

from launch_helpers import ROOT


def _readme_numbers():
    spec = importlib.util.spec_from_file_location("readme_numbers", ROOT / "scripts" / "readme_numbers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cheap_figures_are_in_the_readme_as_the_code_computes_them():
    numbers = _readme_numbers()
    readme = numbers.readme_text()
    figures = [figure for compute in numbers.CHEAP for figure in compute()]
    assert len(figures) == 8
    missing = [figure for figure in figures if " ".join(figure.split()) not in readme]
    assert not missing, "README.md does not say (run scripts/readme_numbers.py):\n" + "\n".join(missing)


@pytest.mark.slow
def test_input_pipeline_benchmark_removes_the_dataset_it_built(tmp_path):
    """`python -m benchmarks.input_pipeline --slakh_dir` builds a dataset to measure; none is left behind
    (two 10-s songs: one default 10-s clip each)."""
    import os
    import subprocess
    import sys

    from data_pipelines import synth_slakh

    songs, temp = tmp_path / "songs", tmp_path / "temp"
    temp.mkdir()
    assert synth_slakh.main(["--out", str(songs), "--seconds", "10", "--seed", "1", "--max_stems", "3",
                             "--splits", "train=2", "--workers", "1"]) == 0
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), TMPDIR=str(temp),
               XLA_FLAGS="--xla_force_host_platform_device_count=1")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.input_pipeline", "--slakh_dir",
                           str(songs), "--steps", "1", "--warmup", "0", "--workers", "1"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MB per audio hour" in proc.stdout and f"local disk: {temp}/jointist_bench_" in proc.stdout
    assert [p.name for p in temp.iterdir() if p.name.startswith("jointist_bench_")] == []
