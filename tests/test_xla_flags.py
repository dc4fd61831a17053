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


def test_importing_the_package_adds_the_flags_before_jax_loads():
    """Entry points only import a jointist_jax module before jax; the package adds the flags."""
    from jointist_jax import xla_flags

    if xla_flags.has_accelerator():
        pytest.skip("the flags are for CPU-only machines")
    code = "import os, sys; import jointist_jax; print('jax' in sys.modules, os.environ.get('XLA_FLAGS'))"
    environment = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JOINTIST_CPU_FLAGS")}
    out = subprocess.run([sys.executable, "-c", code], env=dict(environment, PYTHONPATH=str(ROOT)),
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", xla_flags.CPU_FLAGS[0]]
