"""The run directory (``--workdir``): its layout, finding a run or one of its steps, its config.

Layout of ``WORKDIR`` (local or ``gs://``)::

    config.json                    the run's config (rebuilds the model to read a checkpoint)
    checkpoints/<step>/            orbax checkpoints (finalised ones only count): the last few, and
                                   the one with the lowest validation loss (its ``metrics``)
    tensorboard/                   training scalars (TensorBoard run ".")
    tensorboard/eval_<split>/      evaluation scalars, charts, piano rolls, stems
    eval/<split>/<step>/           one evaluation: metrics.json, charts/, songs/

A *run path* given by a user may be the workdir, its ``checkpoints/`` folder or one step
(``checkpoints/<step>``); :func:`locate` resolves all three. A step may also be chosen as
``latest``, ``best`` (lowest validation loss) or a number: :meth:`RunDir.resolve_step`.
"""

from __future__ import annotations

import dataclasses
import json
import os

import ml_collections

from jointist_jax import storage

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
EVAL_DIR = "eval"
METRICS_FILE = "metrics.json"
# The metric a checkpoint saved after validation carries; the lowest one is the ``best`` step.
VALIDATION_LOSS = "validation_loss"
STEP_CHOICES = ("latest", "best")


class RunNotFoundError(storage.StorageError):
    """A path that is not a run, a missing step, or a checkpoint that was never finished."""


@dataclasses.dataclass(frozen=True)
class RunDir:
    """One run's directory; every path of the layout (module docstring) comes from here."""

    root: storage.Path

    @classmethod
    def at(cls, workdir) -> "RunDir":
        """The run directory at ``workdir`` (a local path or ``gs://`` URI; need not exist yet)."""
        return cls(storage.path(workdir))

    def __str__(self) -> str:
        return os.fspath(self.root)

    @property
    def config_file(self) -> storage.Path:
        return self.root / CONFIG_FILE

    @property
    def checkpoints(self) -> storage.Path:
        return self.root / CHECKPOINT_DIR

    def step_dir(self, step: int) -> storage.Path:
        """Where checkpoint ``step`` lives."""
        return self.checkpoints / str(step)

    def tensorboard(self, name: str = "") -> storage.Path:
        """The TensorBoard folder of run ``name``: ``""`` for training, ``eval_<split>`` for evaluations."""
        return self.root / TENSORBOARD_DIR / name if name else self.root / TENSORBOARD_DIR

    def eval_root(self, out=None) -> storage.Path:
        """Root of evaluation outputs: ``out`` if given, else ``WORKDIR/eval``."""
        return storage.path(out) if out else self.root / EVAL_DIR


    # -- config --

    def write_config(self, config: ml_collections.ConfigDict) -> None:
        """Writes ``config.json`` in one piece (call from one process only)."""
        storage.write_text(self.config_file, config.to_json_best_effort(indent=2))

    def read_config(self) -> ml_collections.ConfigDict:
        """The run's config; a clear error if it is missing or not JSON."""
        if not self.config_file.is_file():
            raise RunNotFoundError(f"{os.fspath(self.config_file)!r} not found: not a jointist-jax workdir")
        try:
            return ml_collections.ConfigDict(json.loads(self.config_file.read_text()))
        except json.JSONDecodeError as error:
            raise ValueError(f"{os.fspath(self.config_file)!r} is not valid JSON ({error})") from error

    # -- checkpoints --

    def saved_steps(self) -> list[int]:
        """Finalised checkpoint steps, ascending (a step being written or abandoned is not listed)."""
        import orbax.checkpoint as ocp

        if not self.checkpoints.is_dir():
            return []
        return sorted(ocp.utils.checkpoint_steps(self.checkpoints))

    def require_step(self, step: int) -> int:
        """``step`` if it is a finalised checkpoint, else an error naming what is there."""
        saved = self.saved_steps()
        if step in saved:
            return step
        if self.step_dir(step).exists():
            raise RunNotFoundError(
                f"checkpoint {os.fspath(self.step_dir(step))!r} was never finished (an interrupted save); "
                f"finalised steps: {saved}")
        raise RunNotFoundError(f"no checkpoint {step} in {os.fspath(self.checkpoints)!r}; saved steps: {saved}")

    def latest_step(self) -> int:
        """The newest finalised step; an error if there is none."""
        saved = self.saved_steps()
        if not saved:
            raise RunNotFoundError(f"no finished checkpoint in {os.fspath(self.checkpoints)!r}")
        return saved[-1]

    def best_step(self) -> int:
        """The finalised step with the lowest validation loss; an error if none was validated."""
        import orbax.checkpoint as ocp

        if not self.saved_steps():
            raise RunNotFoundError(f"no finished checkpoint in {os.fspath(self.checkpoints)!r}")
        options = ocp.CheckpointManagerOptions(read_only=True, best_fn=best_metric, best_mode="min")
        mngr = ocp.CheckpointManager(self.checkpoints, options=options)
        try:
            if not any(mngr.metrics(step) for step in mngr.all_steps()):
                raise RunNotFoundError(
                    f"no checkpoint in {os.fspath(self.checkpoints)!r} carries a validation loss (the run "
                    f"validated none: data.eval_batches = 0, or no validation step yet); saved steps: "
                    f"{self.saved_steps()}")
            return int(mngr.best_step())
        finally:
            mngr.close()

    def resolve_step(self, choice) -> int:
        """A finalised step from ``latest``, ``best`` or a step number (int or digits)."""
        if isinstance(choice, int) or (isinstance(choice, str) and choice.isdigit()):
            return self.require_step(int(choice))
        if choice == "latest":
            return self.latest_step()
        if choice == "best":
            return self.best_step()
        raise ValueError(f"a checkpoint step is one of {STEP_CHOICES} or a number, got {choice!r}")


def best_metric(metrics) -> float:
    """The value orbax ranks checkpoints by (lower is better); +inf without a validation loss."""
    if not metrics or VALIDATION_LOSS not in metrics:
        return float("inf")
    return float(metrics[VALIDATION_LOSS])


def locate(run_path) -> tuple[RunDir, int]:
    """``(run, step)`` of a workdir (latest step), its ``checkpoints/`` folder (latest step) or one
    ``checkpoints/<step>`` folder. Errors name the path and say what is wrong."""
    given = os.fspath(run_path)
    p = storage.path(run_path)
    if not p.exists():
        storage.require_bucket(p, role="checkpoint path")
        raise RunNotFoundError(f"checkpoint path {given!r} does not exist")
    if (p / CHECKPOINT_DIR).is_dir():
        return RunDir(p), RunDir(p).latest_step()
    if p.name == CHECKPOINT_DIR:
        run = RunDir(p.parent)
        return run, run.latest_step()
    if p.name.isdigit() and p.parent.name == CHECKPOINT_DIR:
        run = RunDir(p.parent.parent)
        return run, run.require_step(int(p.name))
    raise RunNotFoundError(f"{given!r} is neither a workdir, its {CHECKPOINT_DIR}/ folder nor one step of it "
                           f"({CHECKPOINT_DIR}/<step>)")


def evaluation_dir(eval_root, split: str, step: int) -> storage.Path:
    """The folder of one evaluation: ``EVAL_ROOT/<split>/<step>``."""
    return storage.path(eval_root) / split / str(step)


def is_evaluated(eval_root, split: str, step: int) -> bool:
    """Whether the evaluation of ``step`` is complete (its ``metrics.json``, written last, exists)."""
    return (evaluation_dir(eval_root, split, step) / METRICS_FILE).is_file()
