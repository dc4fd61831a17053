"""Starting launch/ scripts as separate processes in tests, and reading their output."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "launch" / "train.py")
# In transcription:runlocal's warm-up, step 2's Adam update moves a parameter by up to about
# lr * 1/50 = 6e-5. Topologies that train on the same batches differ only by float summation
# order (largest difference measured: 9e-7), well below one update.
TOPOLOGY_TOLERANCE = 1e-5


# The processes :func:`run_train` started that may still run (tests/conftest.py kills them after
# each test: a test that fails while one trains would leave it training beside the next tests).
STARTED: list[subprocess.Popen] = []


def run_train(args: list[str], *, devices: int = 8, timeout: float = 400, env: dict | None = None,
              runner: list[str] = (), **popen) -> subprocess.Popen:
    """Starts launch/train.py as another process with ``devices`` simulated CPU devices; ``env`` is
    added to the environment, ``runner`` (a script that runs the next one) goes before train.py."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **(env or {}))
    proc = subprocess.Popen([sys.executable, *runner, TRAIN, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)
    STARTED.append(proc)
    return proc


def kill_leftovers() -> list[subprocess.Popen]:
    """SIGKILLs the processes :func:`run_train` started that still run (SIGTERM would make a
    trainer save first); returns them."""
    killed = [proc for proc in STARTED if proc.poll() is None]
    for proc in killed:
        proc.kill()
        proc.wait()
    STARTED.clear()
    return killed


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


def two_process_flags(data_dir, workdir, **overrides) -> list[str]:
    """:func:`config_flags` of a transcription run whose 4 clips per step make 2 per process."""
    return [f if not f.startswith("--config.data.global_batch") else "--config.data.global_batch=4"
            for f in config_flags("transcription:runlocal", data_dir, workdir, **overrides)]


def sigterm_one_of_two(procs: list[subprocess.Popen], total: int) -> int:
    """Sends SIGTERM to the second process once the first has trained 2 steps; checks that both
    exit 0 having stopped at the same step, before ``total``, and returns that step."""
    wait_for_line(procs[0], f"step 2/{total}", timeout=400)
    procs[1].send_signal(signal.SIGTERM)
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out
    final = [[line for line in out.splitlines() if "final step" in line] for out in outputs]
    steps = [int(lines[0].split("final step")[1].split()[0]) for lines in final]
    assert steps[0] == steps[1] < total, outputs
    return steps[0]


def checkpoint_params(workdir: Path, step: int) -> list:
    """Parameters of one saved step, restored without a target (host numpy arrays)."""
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    path = Path(workdir) / "checkpoints" / str(step) / "default"
    checkpointer = ocp.StandardCheckpointer()
    saved = checkpointer.metadata(path).item_metadata
    # Onto this process's first device, whatever topology wrote it.
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), saved)
    restored = checkpointer.restore(path, target)
    return [np.asarray(x) for x in jax.tree.leaves(restored["params"])]
