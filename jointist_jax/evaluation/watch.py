"""Following a training workdir: evaluate each new checkpoint once (``launch/eval.py --watch``),
or with ``which="best"`` (``--checkpoint best``) each checkpoint that becomes the best one (lowest
validation loss).

A step counts as evaluated when its ``metrics.json`` exists under the output folder, so a
restarted watcher resumes where it stopped. Only finalised checkpoints are seen (orbax writes a
step into a temporary folder and renames it when complete). A checkpoint that disappears before
it is read (the trainer keeps only the last few) is skipped with a warning.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from jointist_jax import run_dir

logger = logging.getLogger(__name__)


def saved_steps(workdir) -> list[int]:
    """Finalised checkpoint steps of a workdir, ascending (empty if it has none yet)."""
    return run_dir.RunDir.at(workdir).saved_steps()


WATCHED = ("all", "best")


def watched_steps(workdir, which: str = "all") -> list[int]:
    """The steps to evaluate: every saved one, or only the current best (none before a validation)."""
    if which == "all":
        return saved_steps(workdir)
    if which != "best":
        raise ValueError(f"which must be one of {WATCHED}, got {which!r}")
    try:
        return [run_dir.RunDir.at(workdir).best_step()]
    except run_dir.RunNotFoundError:
        return []


def pending_steps(workdir, out_root, split: str, which: str = "all") -> list[int]:
    """Watched steps without a ``metrics.json`` yet, ascending."""
    return [s for s in watched_steps(workdir, which) if not run_dir.is_evaluated(out_root, split, s)]


def follow(workdir, out_root, split: str,
           evaluate_step: Callable[[int], None], *, final_step: int | None, poll_seconds: float = 60.0,
           idle_timeout: float = 3600.0, sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.monotonic, which: str = "all") -> list[int]:
    """Evaluates pending checkpoints as they appear; returns the steps evaluated.

    Stops once ``final_step`` (the run's last step) is saved and, for ``which="all"``, evaluated,
    for ``which="best"``, once the best step as of then is evaluated; or when nothing new has
    appeared for ``idle_timeout`` seconds.
    """
    evaluated: list[int] = []
    last_news = clock()
    while True:
        pending = pending_steps(workdir, out_root, split, which)
        for step in pending:
            try:
                evaluate_step(step)
            except FileNotFoundError as error:
                if step in saved_steps(workdir):
                    raise  # not a rotated-away checkpoint: a real error (e.g. a missing dataset)
                logger.warning("checkpoint %d vanished before it was evaluated (%s); skipping it", step, error)
                continue
            evaluated.append(step)
            last_news = clock()
        if which == "best":
            finished = final_step is not None and any(s >= final_step for s in saved_steps(workdir))
            if finished and not pending_steps(workdir, out_root, split, which):
                return evaluated
        else:
            done = [s for s in saved_steps(workdir) if run_dir.is_evaluated(out_root, split, s)]
            if final_step is not None and any(s >= final_step for s in done):
                return evaluated
        if clock() - last_news >= idle_timeout:
            logger.info("no new checkpoint in %s for %.0f s: stopping", workdir, idle_timeout)
            return evaluated
        sleep(poll_seconds)
