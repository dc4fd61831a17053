"""Starting launch/ scripts as separate processes in tests, and reading their output."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "launch" / "train.py")


def run_train(args: list[str], *, devices: int = 8, timeout: float = 400, **popen) -> subprocess.Popen:
    """Starts launch/train.py as another process with ``devices`` simulated CPU devices."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.Popen([sys.executable, TRAIN, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def config_flags(name: str, data_dir, workdir, **overrides) -> list[str]:
    """Command-line flags of a subprocess run: tiny data, 8 clips per step, no validation."""
    flags = [f"--config={name}", f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
             "--config.data.global_batch=8", "--config.data.eval_batches=0", "--config.log_every=1"]
    flags += [f"--config.{k}={v}" for k, v in overrides.items()]
    return flags


def wait_for_line(proc: subprocess.Popen, needle: str, timeout: float) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not seen; output:\n{''.join(lines[-40:])}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
