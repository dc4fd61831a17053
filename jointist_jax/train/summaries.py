"""TensorBoard scalars (process 0 only) and the console progress line.

TensorFlow's summary writer writes to local disk; for a run in a bucket the event files are
written to a local folder and copied up at every flush (:class:`jointist_jax.storage.MirroredFolder`).
"""

from __future__ import annotations

import datetime
import time
from typing import Mapping

import jax

from jointist_jax import storage


class SummaryWriter:
    """Scalars to ``WORKDIR/tensorboard/<name>``; a no-op on processes other than 0."""

    def __init__(self, logdir):
        self._writer = None
        if jax.process_index() == 0:
            import tensorflow as tf

            self._tf = tf
            self._folder = storage.MirroredFolder(logdir)
            self._writer = tf.summary.create_file_writer(str(self._folder.local))

    def scalars(self, step: int, values: Mapping[str, float], prefix: str = "") -> None:
        if self._writer is None or self._folder.failed:  # failed: a full local disk, reported once
            return
        with self._folder.local_writes(f"TensorBoard events of step {step}"):
            with self._writer.as_default(step=step):
                for name, value in values.items():
                    self._tf.summary.scalar(prefix + name, float(value))
            self._writer.flush()
        self._folder.sync()

    def flush(self) -> None:
        """Writes pending events where TensorBoard reads them (a full local disk is a warning, and
        the end of this run's events: :meth:`jointist_jax.storage.MirroredFolder.local_writes`)."""
        if self._writer is not None:
            with self._folder.local_writes("TensorBoard events"):
                self._writer.flush()
            self._folder.sync()

    def close(self) -> None:
        if self._writer is not None:
            with self._folder.local_writes("TensorBoard events"):
                self._writer.close()
            self._folder.close()
            self._writer = None


class Throughput:
    """Steps/s, examples/s, wall time and ETA between two log points."""

    def __init__(self, first_step: int, total_steps: int, examples_per_step: int):
        self.start_time = self._last_time = time.monotonic()
        self.first_step = self._last_step = first_step
        self.total_steps = total_steps
        self.examples_per_step = examples_per_step

    def measure(self, step: int) -> dict[str, float]:
        now = time.monotonic()
        steps = step - self._last_step
        elapsed = max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        rate = steps / elapsed
        return {"steps_per_second": rate, "examples_per_second": rate * self.examples_per_step,
                "wall_time_seconds": now - self.start_time}

    def eta(self, step: int) -> str:
        done = step - self.first_step
        if done <= 0:
            return "?"
        remaining = (time.monotonic() - self.start_time) / done * (self.total_steps - step)
        return str(datetime.timedelta(seconds=int(remaining)))


def progress_line(step: int, total: int, metrics: Mapping[str, float], eta: str) -> str:
    """``step 120/200 | loss 0.7321 | transcription_loss 0.7 | 3.1 steps/s | ETA 0:00:25``."""
    shown = [f"{k} {v:.4g}" for k, v in metrics.items() if k.endswith("loss")]
    rate = metrics.get("steps_per_second")
    if rate is not None:
        shown.append(f"{rate:.3g} steps/s")
    return f"step {step}/{total} | " + " | ".join(shown) + f" | ETA {eta}"
