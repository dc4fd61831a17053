"""Orbax checkpoints of a training run: asynchronous saves, resume, and ``init_from``.

A checkpoint is ``WORKDIR/checkpoints/<step>/`` (layout: :mod:`jointist_jax.run_dir`), an orbax
``CheckpointManager`` step holding the step, parameters, BatchNorm statistics and optimiser state.
The workdir may be local or in a bucket (``gs://``): orbax writes through epath and TensorStore,
and in a bucket a step counts as finished only once its ``commit_success.txt`` exists.

Restores are always into an abstract target carrying the *current* mesh's shardings, so a run
saved on 8 devices resumes on 1 and vice versa.
"""

from __future__ import annotations

import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from jointist_jax import run_dir


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


def with_shardings(abstract_tree, shardings):
    """ShapeDtypeStructs of ``abstract_tree`` carrying ``shardings`` (the restore target)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract_tree, shardings)


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
    """Starts an (asynchronous) save of ``items`` at ``step``, with the validation loss measured
    at that step if there is one (it ranks the checkpoint for ``best``), once the save of
    ``previous`` (the step saved before, if any) has committed (:func:`wait_for_save`).

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


def restore(mngr: ocp.CheckpointManager, step: int, target: dict) -> dict:
    """Restores ``step`` into ``target`` (abstract arrays with shardings)."""
    return mngr.restore(step, args=ocp.args.StandardRestore(target))


def restore_from_path(path: str | os.PathLike, target: dict) -> tuple[dict, int]:
    """Restores the checkpoint at ``path`` (see :func:`run_dir.locate`) into ``target``; returns (items, step)."""
    run, step = run_dir.locate(path)
    mngr = ocp.CheckpointManager(run.checkpoints, options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        return restore(mngr, step, target), step
    finally:
        mngr.close()


def _abstract_items(config: ml_collections.ConfigDict):
    """The abstract checkpoint items of a run's model and optimiser, without allocating."""
    from flax import nnx

    from jointist_jax.train import model_factory
    from jointist_jax.train.optimizer import make_optimizer
    from jointist_jax.train.steps import TrainState

    tx, _ = make_optimizer(config.optimizer)

    def items():
        return TrainState.create(model_factory.build_model(config, nnx.Rngs(0)), tx).checkpoint_items()

    return jax.eval_shape(items)


def load_model(path: str | os.PathLike, *, sharding=None):
    """A trained model for inference: ``(module in eval mode, config, step)``.

    ``path`` is a workdir, its ``checkpoints/`` dir or one step of it (see :func:`run_dir.locate`); the
    workdir's ``config.json`` says which model to build. Arrays land replicated on ``sharding``
    (default: the first local device).
    """
    from flax import nnx

    from jointist_jax.train import model_factory

    run, _ = run_dir.locate(path)
    config = run.read_config()
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = _abstract_items(config)
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract)
    items, step = restore_from_path(path, target)
    model = model_factory.empty_model(config)  # every parameter is overwritten just below
    nnx.update(model, items["params"], items["batch_stats"])
    model.eval()
    return model, config, step


def save_model(workdir, config: ml_collections.ConfigDict, model, *, step: int = 0):
    """Writes ``model`` as a checkpoint that :func:`load_model`, ``init_from`` and resume accept:
    ``workdir/config.json`` and ``workdir/checkpoints/<step>`` with a fresh optimiser state.
    Used to import weights trained elsewhere (launch/convert_torch_checkpoint.py)."""
    from jointist_jax.train.optimizer import make_optimizer
    from jointist_jax.train.steps import TrainState

    tx, _ = make_optimizer(config.optimizer)
    items = TrainState.create(model, tx, step=step).checkpoint_items()
    run = run_dir.RunDir.at(workdir)
    run.write_config(config)
    mngr = manager(run, keep=1, asynchronous=False)
    try:
        save(mngr, step, items, force=True)
        mngr.wait_until_finished()
    finally:
        mngr.close()
    return run.step_dir(step)
