"""The CPU XLA flags: added before jax loads on CPU machines, never on request or with jax loaded."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _flags_after_apply(**env) -> str:
    code = ("import os; from jointist_jax import xla_flags; xla_flags.has_accelerator = lambda: False; "
            "xla_flags.apply_cpu_flags(host_device_count=2); print(os.environ['XLA_FLAGS'])")
    environment = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JOINTIST_CPU_FLAGS")}
    environment.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_cpu_flags_are_added_unless_switched_off_or_set_by_the_user():
    from jointist_jax import xla_flags

    default = _flags_after_apply()
    assert xla_flags.CPU_FLAGS[0] in default and "--xla_force_host_platform_device_count=2" in default
    off = _flags_after_apply(JOINTIST_CPU_FLAGS="0")
    assert xla_flags.CPU_FLAGS[0] not in off and "--xla_force_host_platform_device_count=2" in off
    mine = _flags_after_apply(XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=none")
    assert mine.split().count("--xla_cpu_experimental_ynn_fusion_type=none") == 1
    assert xla_flags.CPU_FLAGS[0] not in mine


def test_each_program_applies_the_flags_in_main_and_importing_the_package_does_not():
    """Importing jointist_jax leaves XLA_FLAGS alone; each console script's ``main()`` adds the CPU
    flags before it imports jax (checked after it stopped at a command-line mistake or at a
    missing run)."""
    from jointist_jax import xla_flags

    if xla_flags.has_accelerator():
        pytest.skip("the flags are for CPU-only machines")
    environment = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JOINTIST_CPU_FLAGS")}
    programs = {"jointist_jax.train.cli": ["jointist-train"], "jointist_jax.evaluation.cli": ["jointist-eval"],
                "jointist_jax.inference.cli": ["--checkpoint", "/nonexistent", "--audio", "/nonexistent",
                                               "--instruments", "piano", "--out", "/nonexistent"],
                "jointist_jax.app.cli": ["--checkpoint", "/nonexistent", "--port", "0"]}
    for module, argv in programs.items():
        code = (f"import importlib, os, sys; cli = importlib.import_module({module!r}); "
                "print(os.environ.get('XLA_FLAGS'), 'jax' in sys.modules)\n"
                f"try:\n    cli.main({argv!r})\nexcept SystemExit:\n    pass\n"
                "print(os.environ.get('XLA_FLAGS'))")
        out = subprocess.run([sys.executable, "-c", code], env=dict(environment, PYTHONPATH=str(ROOT)),
                             capture_output=True, text=True, check=True).stdout.splitlines()
        assert out == ["None False", xla_flags.CPU_FLAGS[0]], module
