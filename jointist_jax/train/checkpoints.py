"""Orbax checkpoints of a training run: asynchronous saves, resume, and ``init_from``.

Layout: ``WORKDIR/checkpoints/<step>/`` (an orbax ``CheckpointManager``) holding the step,
parameters, BatchNorm statistics and optimiser state, and ``WORKDIR/config.json`` (the run's
config, so another run can rebuild the model to read it).

Restores are always into an abstract target carrying the *current* mesh's shardings, so a run
saved on 8 devices resumes on 1 and vice versa.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import ml_collections
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.json"


def manager(workdir: str | os.PathLike, *, keep: int, asynchronous: bool = True) -> ocp.CheckpointManager:
    """The run's CheckpointManager (keeps the last ``keep`` checkpoints)."""
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=asynchronous)
    return ocp.CheckpointManager(Path(workdir).absolute() / CHECKPOINT_DIR, options=options)


def with_shardings(abstract_tree, shardings):
    """ShapeDtypeStructs of ``abstract_tree`` carrying ``shardings`` (the restore target)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract_tree, shardings)


def save(mngr: ocp.CheckpointManager, step: int, items: dict, *, force: bool = False) -> bool:
    """Starts an (asynchronous) save of ``items`` at ``step``."""
    return mngr.save(step, args=ocp.args.StandardSave(items), force=force)


def restore(mngr: ocp.CheckpointManager, step: int, target: dict) -> dict:
    """Restores ``step`` into ``target`` (abstract arrays with shardings)."""
    return mngr.restore(step, args=ocp.args.StandardRestore(target))


def write_config(workdir: str | os.PathLike, config: ml_collections.ConfigDict) -> None:
    """Writes the run's config as JSON (process 0 only)."""
    if jax.process_index() == 0:
        path = Path(workdir) / CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config.to_json_best_effort(indent=2))


def read_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    """The config a run wrote with :func:`write_config`."""
    path = Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} not found: not a jointist-jax workdir")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def locate(path: str | os.PathLike) -> tuple[Path, Path, int]:
    """(workdir, checkpoint manager dir, step) for a workdir, its checkpoints dir or one step dir.

    A workdir or checkpoints dir resolves to its latest step.
    """
    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint path {str(path)!r} does not exist")
    if (path / CHECKPOINT_DIR).is_dir():
        path = path / CHECKPOINT_DIR
    if path.name.isdigit() and path.parent.name == CHECKPOINT_DIR:
        return path.parent.parent, path.parent, int(path.name)
    if path.name == CHECKPOINT_DIR:
        steps = ocp.utils.checkpoint_steps(path)
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {str(path)!r}")
        return path.parent, path, max(steps)
    raise FileNotFoundError(f"{str(path)!r} is neither a workdir, its {CHECKPOINT_DIR}/ dir nor one "
                            f"step of it ({CHECKPOINT_DIR}/<step>)")


def restore_from_path(path: str | os.PathLike, target: dict) -> tuple[dict, int]:
    """Restores the checkpoint at ``path`` (see :func:`locate`) into ``target``; returns (items, step)."""
    _, ckpt_dir, step = locate(path)
    mngr = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        return restore(mngr, step, target), step
    finally:
        mngr.close()


def _abstract_items(config: ml_collections.ConfigDict):
    """(graphdef, abstract checkpoint items) of a run's model and optimiser, without allocating."""
    from flax import nnx

    from jointist_jax.train import model_factory
    from jointist_jax.train.optimizer import make_optimizer

    tx, _ = make_optimizer(config.optimizer)

    def items():
        model = model_factory.build_model(config, nnx.Rngs(0))
        _, params, batch_stats, _ = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
        return dict(step=jax.numpy.zeros((), jax.numpy.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params))

    return jax.eval_shape(items)


def load_model(path: str | os.PathLike, *, sharding=None):
    """A trained model for inference: ``(module in eval mode, config, step)``.

    ``path`` is a workdir, its ``checkpoints/`` dir or one step of it (see :func:`locate`); the
    workdir's ``config.json`` says which model to build. Arrays land replicated on ``sharding``
    (default: the first local device).
    """
    from flax import nnx

    from jointist_jax.train import model_factory

    workdir, _, _ = locate(path)
    config = read_config(workdir)
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = _abstract_items(config)
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract)
    items, step = restore_from_path(path, target)
    model = model_factory.empty_model(config)  # every parameter is overwritten just below
    nnx.update(model, items["params"], items["batch_stats"])
    model.eval()
    return model, config, step


def save_model(workdir: str | os.PathLike, config: ml_collections.ConfigDict, model, *, step: int = 0) -> Path:
    """Writes ``model`` as a checkpoint that :func:`load_model`, ``init_from`` and resume accept:
    ``workdir/config.json`` and ``workdir/checkpoints/<step>`` with a fresh optimiser state.
    Used to import weights trained elsewhere (launch/convert_torch_checkpoint.py)."""
    from flax import nnx

    from jointist_jax.train.optimizer import make_optimizer

    tx, _ = make_optimizer(config.optimizer)
    _, params, batch_stats, _ = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    items = dict(step=jax.numpy.asarray(step, jax.numpy.int32), params=params, batch_stats=batch_stats,
                 opt_state=tx.init(params))
    write_config(workdir, config)
    mngr = manager(workdir, keep=1, asynchronous=False)
    try:
        save(mngr, step, items, force=True)
        mngr.wait_until_finished()
    finally:
        mngr.close()
    return Path(workdir) / CHECKPOINT_DIR / str(step)
