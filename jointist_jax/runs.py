"""A trained run: opened once, its arrays restored, checkpoints written and read.

:func:`open` resolves a run path (a workdir, its ``checkpoints/`` folder or one
``checkpoints/<step>``; :func:`jointist_jax.run_dir.locate`), its step and its ``config.json``
once, into a :class:`TrainedRun` that callers pass on. :func:`load_model` restores the parameters
and BatchNorm statistics of that step only (an orbax partial restore: the optimiser state stays
on disk) into the model the config builds; :func:`abstract_arrays` is the one place that says
which arrays a config's model has.

A checkpoint is ``WORKDIR/checkpoints/<step>/`` (layout: :mod:`jointist_jax.run_dir`), an orbax
``CheckpointManager`` step holding :func:`checkpoint_items`: the step, parameters, BatchNorm
statistics and optimiser state. The workdir may be local or in a bucket (``gs://``): orbax writes
through epath and TensorStore, and in a bucket a step counts as finished only once its
``commit_success.txt`` exists. Restores are always into an abstract target carrying the *current*
mesh's shardings, so a run saved on 8 devices resumes on 1 and vice versa.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from jointist_jax import run_dir, stages


class CheckpointError(ValueError):
    """A checkpoint that is missing, of the wrong stage, or does not match its config."""


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """One step of a run, resolved: where it is, which step, the config that rebuilds its model.

    ``path`` is the run path as given and ``role`` the flag that gave it (both for messages).
    """

    path: str
    role: str | None
    dir: run_dir.RunDir
    step: int
    config: ml_collections.ConfigDict

    @property
    def stage(self) -> stages.Stage | None:
        """The registered stage of the run's config, or None for a name the registry does not know."""
        try:
            return stages.get(self.config.get("stage"))
        except ValueError:
            return None

    @property
    def checkpoint(self):
        """The folder of the step (``checkpoints/<step>``)."""
        return self.dir.step_dir(self.step)

    def with_config(self, config: ml_collections.ConfigDict) -> "TrainedRun":
        """The same step read with another ``config`` (one that builds the same arrays)."""
        return dataclasses.replace(self, config=config)


def open(path: str | os.PathLike, *, role: str | None = "checkpoint path",  # noqa: A001 (runs.open)
         default_config: ml_collections.ConfigDict | None = None) -> TrainedRun:
    """The run at ``path``: directory, step (the latest, or the step ``path`` names) and config.

    ``role`` names the flag in a :class:`CheckpointError`; with ``role=None`` the errors of
    :mod:`jointist_jax.run_dir` pass unchanged. ``default_config`` stands in for a missing
    ``config.json`` (a checkpoint folder copied without it).
    """
    try:
        run, step = run_dir.locate(path)
        if default_config is not None and not run.config_file.is_file():
            config = default_config
        else:
            config = run.read_config()
    except FileNotFoundError as error:
        if role is None:
            raise
        raise CheckpointError(f"{role} {str(path)!r}: {error}") from error
    except ValueError as error:  # config.json that is not valid JSON
        if role is None:
            raise
        raise CheckpointError(f"{role} {str(path)!r}: unreadable config.json ({error})") from error
    return TrainedRun(path=os.fspath(path), role=role, dir=run, step=step, config=config)


# ----------------------------------------------------------------------------- the arrays of a model
def model_arrays(model: nnx.Module) -> dict:
    """What a checkpoint keeps of a module: ``params`` and ``batch_stats`` (BatchNorm statistics)."""
    _, params, batch_stats, _ = stages.split_model(model)
    return dict(params=params, batch_stats=batch_stats)


def abstract_arrays(config: ml_collections.ConfigDict, stage=None) -> dict:
    """:func:`model_arrays` of the model ``config`` (or ``stage``) builds, as
    ``jax.ShapeDtypeStruct``s: nothing is allocated."""
    return jax.eval_shape(lambda: model_arrays(stages.build_model(config, nnx.Rngs(0), stage)))


def checkpoint_items(step, arrays: dict, opt_state) -> dict:
    """What a checkpoint stores: the step (an int32 scalar), :func:`model_arrays` and the optimiser
    state. Works on abstract arrays too (a restore target)."""
    return dict(step=step, params=arrays["params"],
                batch_stats=arrays["batch_stats"], opt_state=opt_state)


def with_shardings(abstract_tree, shardings):
    """ShapeDtypeStructs of ``abstract_tree`` carrying ``shardings`` (a tree of them, or one for all)."""
    if isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=shardings), abstract_tree)
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract_tree, shardings)


# ----------------------------------------------------------------------------- reading a trained run
def restore_arrays(trained: TrainedRun, target: dict) -> dict:
    """The ``params`` and ``batch_stats`` of ``trained``'s step, restored into ``target`` (abstract
    arrays with shardings, :func:`abstract_arrays`); nothing else of the checkpoint is read."""
    mngr = ocp.CheckpointManager(trained.dir.checkpoints, options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        restored = mngr.restore(trained.step, args=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True))
    finally:
        mngr.close()
    return dict(params=restored["params"], batch_stats=restored["batch_stats"])


def load_model(trained: TrainedRun, *, sharding=None) -> nnx.Module:
    """The trained module of ``trained`` in eval mode, for inference. Arrays land replicated on
    ``sharding`` (default: the first local device). No optimiser is built."""
    config = trained.config
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    try:
        arrays = restore_arrays(trained, with_shardings(abstract_arrays(config), sharding))
    except Exception as error:  # orbax/flax raise many types for shape, dtype or structure mismatches
        try:
            differences = shape_differences(trained)
        except Exception:  # unreadable metadata: the checkpoint itself is damaged
            differences = []
        detail = ("; ".join(differences) if differences
                  else f"{type(error).__name__}: {_first_lines(str(error))}")
        raise CheckpointError(
            f"{trained.role} {trained.path!r}: cannot restore the checkpoint: it is corrupted or does not match "
            f"the model its config.json describes (stage {config.get('stage')!r}): {detail}") from error
    model = stages.empty_model(config)  # every parameter is overwritten just below
    nnx.update(model, arrays["params"], arrays["batch_stats"])
    model.eval()
    return model


def shape_differences(trained: TrainedRun, limit: int = 5) -> list[str]:
    """Human-readable differences between the arrays saved at ``trained``'s step and those its
    config builds."""
    metadata = ocp.StandardCheckpointer().metadata(trained.checkpoint / "default")
    metadata = getattr(metadata, "item_metadata", metadata)
    saved = {_key(p): tuple(m.shape) for p, m in jax.tree_util.tree_leaves_with_path(metadata)
             if _key(p).split(".")[0] in ("params", "batch_stats")}
    expected = {_key(p): tuple(a.shape)
                for p, a in jax.tree_util.tree_leaves_with_path(abstract_arrays(trained.config))}
    lines = [f"{name}: checkpoint {saved[name]} vs config {shape}" for name, shape in expected.items()
             if name in saved and saved[name] != shape]
    missing = sorted(set(expected) - set(saved))
    extra = sorted(set(saved) - set(expected))
    if missing:
        lines.append(f"{len(missing)} arrays missing from the checkpoint (e.g. {missing[0]})")
    if extra:
        lines.append(f"{len(extra)} arrays in the checkpoint that the config does not build (e.g. {extra[0]})")
    return lines[:limit] + ([f"... {len(lines) - limit} more"] if len(lines) > limit else [])


def _key(path) -> str:
    parts = []
    for entry in path:
        for attribute in ("key", "name", "idx"):
            if hasattr(entry, attribute):
                parts.append(str(getattr(entry, attribute)))
                break
        else:
            parts.append(str(entry))
    return ".".join(parts)


def _first_lines(text: str, limit: int = 6) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[:limit]) + ("\n..." if len(lines) > limit else "")


# ----------------------------------------------------------------------------- what a run can do
def _stages_that(ability: str) -> list[str]:
    return [stage.name for stage in stages.all_stages() if getattr(stage, ability)]


def check_transcriber(trained: TrainedRun, *, separate: bool) -> None:
    """Raises a :class:`CheckpointError` unless ``trained``'s stage transcribes (``Stage.transcribes``
    in :mod:`jointist_jax.stages`) and, with ``separate``, separates (weights not read)."""
    path, stage, name = trained.path, trained.stage, trained.config.get("stage")
    transcribing = _stages_that("transcribes")
    if stage is not None and stage.recognizes and not stage.transcribes:
        raise CheckpointError(f"--checkpoint {path!r} is an instrument-recognition ({name}) run; it cannot "
                              f"transcribe. Pass it as --ir_checkpoint and give a "
                              f"{' or '.join(transcribing)} run as --checkpoint")
    if stage is None or not stage.transcribes:
        raise CheckpointError(f"--checkpoint {path!r} is a {name!r} run; expected one of "
                              f"{', '.join(transcribing)}")
    if separate and not stage.separates:
        raise CheckpointError(f"--separate needs a {' or '.join(_stages_that('separates'))} (transcriber + "
                              f"separator) run, but --checkpoint {path!r} is a {name!r} run with no separator")


def check_recognizer(trained: TrainedRun) -> None:
    """Raises a :class:`CheckpointError` unless ``trained``'s stage recognizes instruments (``ir``)."""
    stage = trained.stage
    if stage is None or not stage.recognizes:
        raise CheckpointError(f"--ir_checkpoint {trained.path!r} is a {trained.config.get('stage')!r} run; "
                              f"expected an {' or '.join(_stages_that('recognizes'))} (instrument recognition) run")


# ----------------------------------------------------------------------------- writing checkpoints
def manager(run: run_dir.RunDir, *, keep: int, asynchronous: bool = True) -> ocp.CheckpointManager:
    """The run's CheckpointManager: keeps the last ``keep`` checkpoints and, beside them, the one
    with the lowest validation loss (the reference's ``save_top_k=1`` on the validation loss).

    A checkpoint saved right after a validation carries ``{run_dir.VALIDATION_LOSS: loss}`` as its
    orbax metrics; :meth:`run_dir.RunDir.best_step` finds the best one again.
    """
    from orbax.checkpoint._src.checkpoint_managers import preservation_policy as policies

    keep_policy = policies.AnyPreservationPolicy([
        policies.LatestN(n=keep),
        # Sorted from the highest loss to the lowest; the last one (the lowest) is kept.
        policies.BestN(get_metric_fn=run_dir.best_metric, reverse=True, n=1,
                       keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=asynchronous,
                                           best_fn=run_dir.best_metric, best_mode="min",
                                           preservation_policy=keep_policy)
    return ocp.CheckpointManager(run.checkpoints, options=options)


class SaveFailedError(OSError):
    """A checkpoint could not be written (a bucket that stayed away longer than the retries, a
    full disk): the run stops, naming the checkpoint and the last committed step."""


def _save_failed(mngr: ocp.CheckpointManager, step: int, error: BaseException) -> SaveFailedError:
    committed = [s for s in mngr.all_steps() if s < step]
    last = f"step {committed[-1]}" if committed else "none"
    detail = " ".join(str(error).split())  # one line (gcsfs puts the server's answer on a second)
    return SaveFailedError(
        f"checkpoint {step} could not be saved to {os.fspath(mngr.directory / str(step))!r} "
        f"({type(error).__name__}: {detail}); the last committed checkpoint is {last}: running the same "
        f"command again resumes from it")


def wait_for_save(mngr: ocp.CheckpointManager, step: int | None) -> None:
    """Waits for the asynchronous save of ``step`` (the last one started; None: none) to commit.

    Orbax reports a failed asynchronous save once (to the next ``save`` or wait) and then
    forgets it, so a caller that does not stop on it would carry on, and exit successfully,
    without that checkpoint: this raises :class:`SaveFailedError` instead.
    """
    try:
        mngr.wait_until_finished()
    except Exception as error:  # noqa: BLE001 - any failure of the save is reported the same way
        raise _save_failed(mngr, step if step is not None else -1, error) from error


def save(mngr: ocp.CheckpointManager, step: int, items: dict, *, force: bool = False,
         validation_loss: float | None = None, previous: int | None = None) -> bool:
    """Starts an (asynchronous) save of ``items`` (:func:`checkpoint_items`) at ``step``, with the
    validation loss measured at that step if there is one (it ranks the checkpoint for ``best``),
    once the save of ``previous`` (the step saved before, if any) has committed
    (:func:`wait_for_save`).

    Raises:
      SaveFailedError: the save of ``previous`` failed, or this one could not start.
    """
    wait_for_save(mngr, previous)
    # Empty metrics (not None, which orbax warns about) rank last: run_dir.best_metric gives +inf.
    metrics = {} if validation_loss is None else {run_dir.VALIDATION_LOSS: float(validation_loss)}
    try:
        return mngr.save(step, args=ocp.args.StandardSave(items), force=force, metrics=metrics)
    except Exception as error:  # noqa: BLE001
        raise _save_failed(mngr, step, error) from error


def save_model(workdir, config: ml_collections.ConfigDict, model: nnx.Module, *, step: int = 0):
    """Writes ``model`` as a checkpoint that :func:`load_model`, ``init_from`` and resume accept:
    ``workdir/config.json`` and ``workdir/checkpoints/<step>`` with a fresh optimiser state (of
    :func:`jointist_jax.optimizer.make_optimizer`). Used to import weights trained elsewhere
    (``jointist-convert``)."""
    from jointist_jax.optimizer import make_optimizer

    tx, _ = make_optimizer(config.optimizer)
    arrays = model_arrays(model)
    items = checkpoint_items(jnp.asarray(step, jnp.int32), arrays, tx.init(arrays["params"]))
    run = run_dir.RunDir.at(workdir)
    run.write_config(config)
    mngr = manager(run, keep=1, asynchronous=False)
    try:
        save(mngr, step, items, force=True)
        mngr.wait_until_finished()
    finally:
        mngr.close()
    return run.step_dir(step)
