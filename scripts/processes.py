"""Stopping a server process that tests and benchmarks started."""

from __future__ import annotations

import subprocess


def stop(process: subprocess.Popen, timeout: float) -> None:
    """Asks ``process`` to end (SIGTERM), waits up to ``timeout`` seconds, then kills it."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
