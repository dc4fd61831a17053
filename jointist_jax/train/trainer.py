"""``train_and_evaluate(config, workdir)``: the training loop of every stage.

Where a run starts, in this order:
  1. the latest checkpoint in ``workdir`` (automatic resume, into the current mesh's shardings);
  2. ``config.init_from`` (a workdir or checkpoint): parameters and BatchNorm statistics of the
     same stage, or of a submodule from a stage the registry's ``Stage.init_sources`` names (a
     ``transcription`` run's transcriber for the ``joint`` stage);
  3. a fresh initialisation from ``config.seed``.

Resume is exact: the batch at step n and the step's dropout key depend only on (seed, n), so a
run killed at any point and restarted reaches the same parameters as an uninterrupted run.
On SIGTERM (preemption) the loop finishes the step, saves, waits for the save and returns. With
several processes, JAX's preemption service (started by ``jax.distributed.initialize``) passes
the notice to every process and picks the step at which all of them save
(:meth:`orbax.checkpoint.CheckpointManager.reached_preemption`); no process waits for the others at
the steps in between.

``workdir`` and ``config.data.data_dir`` may be local or ``gs://`` (:mod:`jointist_jax.storage`).
"""

from __future__ import annotations

import logging
import signal
import threading

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils

from jointist_jax import run_dir, runs, stages, storage
from jointist_jax.data import pipeline
from jointist_jax.data.spec import InputSpec, input_spec
from jointist_jax.optimizer import make_optimizer
from jointist_jax.train import distributed, epochs, summaries
from jointist_jax.train.steps import TrainState, make_eval_step, make_train_step

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A loss (or the parameter norm) stopped being finite."""


class PreemptionSignal:
    """Says when the loop must save and stop after a preemption notice (SIGTERM).

    One process: a SIGTERM handler sets a flag, read after every step. Several processes: JAX's
    preemption service (``jax.distributed``) catches the SIGTERM of any process and agrees on a
    step, after which :meth:`reached` is true on every process at that same step; between notices
    it costs no cross-process communication.
    """

    def __init__(self, mngr):
        self.received = False
        self._mngr = mngr
        self._previous = None
        self._distributed = jax.process_count() > 1
        if not self._distributed and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        log.warning("SIGTERM received: saving a checkpoint and stopping after this step")
        self.received = True

    def reached(self, step: int) -> bool:
        """True if the run must save at ``step`` and stop (the same step on every process)."""
        if self._distributed:
            return bool(self._mngr.reached_preemption(step))
        return self.received

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _input_spec(config: ml_collections.ConfigDict, *, random_crop: bool = True) -> InputSpec:
    """Input-pipeline settings of the stage's batches: which targets it needs."""
    return input_spec(stages.get(config.stage), config, random_crop=random_crop)


def check_finite(step: int, metrics: dict[str, float], mngr) -> None:
    """Stops a run whose loss (checked first) or parameter norm is no longer finite."""
    losses = sorted((name for name in metrics if name.endswith("loss")), key=lambda name: name != "loss")
    watched = losses + (["param_norm"] if "param_norm" in metrics else [])
    for name in watched:
        value = metrics[name]
        if not np.isfinite(value):
            raise NonFiniteLossError(
                f"non-finite {name} = {value} at step {step}; stopping. The last good checkpoint is "
                f"step {mngr.latest_step()} in {mngr.directory}")


class Run:
    """The pieces of one run: model definition, step functions, shardings, state.

    ``stage`` (a :class:`~jointist_jax.stages.Stage`, default: the registered ``config.stage``)
    says what is built and trained; the train-step benchmark passes an unregistered one.
    """

    def __init__(self, config: ml_collections.ConfigDict, mesh, stage: stages.Stage | None = None):
        self.config = config
        self.mesh = mesh
        self.stage = stages.get(config.stage) if stage is None else stage
        self.tx, self.schedule = make_optimizer(config.optimizer)

        def init_state() -> TrainState:
            model = stages.build_model(config, nnx.Rngs(params=config.seed, dropout=config.seed),
                                              stage=self.stage)
            model.train()
            return TrainState.create(model, self.tx)

        abstract_model = nnx.eval_shape(lambda: stages.build_model(config, nnx.Rngs(0), stage=self.stage))
        abstract_model.train()
        self.train_graphdef = stages.split_model(abstract_model)[0]
        abstract_model.eval()
        self.eval_graphdef = stages.split_model(abstract_model)[0]

        self.abstract_state = jax.eval_shape(init_state)
        self.state_sharding = distributed.tree_shardings(
            self.abstract_state, mesh, shard=config.shard_params, min_size=config.shard_params_min_size)
        self.init_state = jax.jit(init_state, out_shardings=self.state_sharding)
        base_key = jax.random.key(config.seed)
        self.train_step = jax.jit(
            make_train_step(self.train_graphdef, self.tx, self.schedule, self.stage, base_key),
            in_shardings=(self.state_sharding, distributed.batch_sharding(mesh)),
            out_shardings=(self.state_sharding, None), donate_argnums=(0,))
        self.eval_step = jax.jit(make_eval_step(self.eval_graphdef, self.stage),
                                 in_shardings=(self.state_sharding, distributed.batch_sharding(mesh)))

    def checkpoint_target(self) -> dict:
        items = self.abstract_state.checkpoint_items()
        shardings = self.state_sharding.checkpoint_items()
        return runs.with_shardings(items, shardings)

    def restore_items(self, mngr: ocp.CheckpointManager, step: int) -> dict:
        """Every item of checkpoint ``step`` (optimiser state too), in this run's shardings."""
        return mngr.restore(step, args=ocp.args.StandardRestore(self.checkpoint_target()))

    def state_from_items(self, items: dict, rest) -> TrainState:
        return TrainState.from_checkpoint_items(items, rest)


def _init_source(config: ml_collections.ConfigDict, stage: stages.Stage,
                 init_from: str) -> tuple[runs.TrainedRun, str | None]:
    """``(the init_from run, opened with the config that rebuilds its checkpoint; the submodule it
    fills or None)``; a ``ValueError`` if that run's stage cannot start a ``stage`` run."""
    sources = [name for name, _ in stage.init_sources]
    # A checkpoint without its config.json: assume it is of the first stage that can start this one.
    assumed = ml_collections.ConfigDict(config.to_dict())
    if sources:
        assumed.stage = sources[0]
    source = runs.open(init_from, role=None, default_config=assumed)
    source_config = source.config
    source_config.shard_params = False
    subtree = stage.init_source_submodule(source_config.stage)
    if subtree is not None:
        # The submodule must have the source's widths (its config.model section has its name).
        source_config.model[subtree] = config.model[subtree]
        source_config.model.dtype = config.model.dtype
        source_config.model.remat = config.model.remat
    elif source_config.stage == config.stage:
        source_config = config
    else:
        raise ValueError(f"config.init_from={init_from!r} is a {source_config.stage!r} run; a "
                         f"{config.stage!r} run can start from the same stage"
                         + "".join(f" or a {name!r} run" for name in sources))
    return source.with_config(source_config), subtree


def _initialise_from(run: Run, state: TrainState, init_from: str) -> TrainState:
    """Copies parameters and statistics from another run's checkpoint (see the module docstring)."""
    source, subtree = _init_source(run.config, run.stage, init_from)
    replicated = jax.sharding.NamedSharding(run.mesh, jax.sharding.PartitionSpec())
    items = runs.restore_arrays(source, runs.with_shardings(runs.abstract_arrays(source.config), replicated))
    log.info("initialised from %s (step %d, stage %s)", init_from, source.step, source.config.stage)
    params, batch_stats = state.params, state.batch_stats
    if subtree is None:
        params, batch_stats = items["params"], items["batch_stats"]
    else:
        params, batch_stats = jax.tree.map(lambda x: x, (params, batch_stats))  # fresh containers
        params[subtree] = items["params"]
        batch_stats[subtree] = items["batch_stats"]
    params = jax.device_put(params, run.state_sharding.params)
    batch_stats = jax.device_put(batch_stats, run.state_sharding.batch_stats)
    # The optimiser starts fresh for the new parameters.
    opt_state = jax.jit(run.tx.init, out_shardings=run.state_sharding.opt_state)(params)
    return state.replace(params=params, batch_stats=batch_stats, opt_state=opt_state)


def _evaluate(run: Run, state: TrainState, config: ml_collections.ConfigDict, data_dir) -> dict[str, float]:
    """Mean validation losses over the fixed validation windows (weighted by real clips)."""
    totals: dict[str, float] = {}
    weight = 0.0
    with pipeline.make_train_iterator(data_dir, config.data.eval_split, _input_spec(config, random_crop=False),
                                      run.mesh) as batches:
        for i, batch in enumerate(batches):
            if 0 <= config.data.eval_batches <= i:  # -1: the whole split
                break
            metrics = jax.device_get(run.eval_step(state, batch))
            w = float(metrics.pop("weight"))
            weight += w
            for name, value in metrics.items():
                totals[name] = totals.get(name, 0.0) + float(value) * w
    return {name: value / max(weight, 1e-9) for name, value in totals.items()}


def _report_validation(step: int, losses: dict[str, float], writer: summaries.SummaryWriter) -> None:
    writer.scalars(step, losses, prefix="valid/")
    if jax.process_index() == 0:
        print(f"step {step} validation: " + ", ".join(f"{k} {v:.4g}" for k, v in losses.items()), flush=True)


def parameter_checksum(state: TrainState) -> float:
    """Sum of every parameter (float64) from this process's copy: equal across processes when the
    replicated parameters agree. Sharded parameters (``shard_params``) are gathered first."""
    total = 0.0
    for leaf in jax.tree.leaves(state.params):
        if leaf.is_fully_replicated:
            total += float(np.asarray(leaf.addressable_data(0), dtype=np.float64).sum())
        else:
            total += float(np.asarray(multihost_utils.process_allgather(leaf, tiled=True), dtype=np.float64).sum())
    return total


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains ``config.stage`` in ``workdir`` to ``config.total_steps`` (0: ``config.epochs`` epochs of
    the training split, :mod:`jointist_jax.train.epochs`); returns the final state."""
    stages.get(config.stage)  # an unknown stage is an error before anything is written
    distributed.require_coordination_service()  # several processes must share JAX's preemption service
    if config.get("require_init_from", False) and not config.init_from:
        raise ValueError("this config trains from a pretrained transcriber: set --config.init_from "
                         "(a transcription workdir or checkpoint)")
    if config.init_from and not run_dir.RunDir.at(workdir).saved_steps():
        # A run that init_from cannot start is an error before anything is written.
        _init_source(config, stages.get(config.stage), config.init_from)
    workdir_run = run_dir.RunDir(storage.make_dirs(workdir, role="--workdir"))
    data_dir = storage.require_exists(config.data.data_dir, role="config.data.data_dir", kind="dir")
    # Epochs of the training split built become steps; the run's saved config holds the steps.
    config = epochs.resolve_length(config, data_dir)
    mesh = distributed.data_mesh()
    run = Run(config, mesh)
    if jax.process_index() == 0:
        workdir_run.write_config(config)
    mngr = runs.manager(workdir_run, keep=config.keep_checkpoints)
    writer = summaries.SummaryWriter(workdir_run.tensorboard())

    state = run.init_state()
    latest = mngr.latest_step()
    if latest is not None:
        items = run.restore_items(mngr, latest)
        state = run.state_from_items(items, state.rest)
        log.info("resumed from %s step %d", mngr.directory, latest)
    elif config.init_from:
        state = _initialise_from(run, state, config.init_from)
    first_step = int(jax.device_get(state.step))

    total = config.total_steps
    preemption = PreemptionSignal(mngr)
    throughput = summaries.Throughput(first_step, total, config.data.global_batch)
    log.info("training stage %s on %d devices (%d processes), steps %d -> %d", config.stage,
             mesh.size, jax.process_count(), first_step, total)
    train_batches = pipeline.make_train_iterator(data_dir, config.data.train_split, _input_spec(config), mesh,
                                                 start_step=first_step)
    step = first_step
    saving = None  # the step whose asynchronous save is in flight
    try:
        validate = config.data.eval_batches != 0  # 0 switches validation off, -1 = whole split
        if validate and (first_step == 0 or first_step >= total):
            _report_validation(step, _evaluate(run, state, config, data_dir), writer)
        batches = iter(train_batches)
        while step < total:
            state, metrics = run.train_step(state, next(batches))
            step += 1
            is_last = step == total
            stopping = preemption.reached(step)
            # Validation comes before the save so that the checkpoint carries its loss (``best``).
            validate_now = validate and (step % config.eval_every == 0 or is_last) and not stopping
            save_now = step % config.checkpoint_every == 0 or is_last or stopping or validate_now
            if step % config.log_every == 0 or save_now or step == first_step + 1:
                values = {k: float(v) for k, v in jax.device_get(metrics).items()}
                check_finite(step, values, mngr)
                values.update(throughput.measure(step))
                writer.scalars(step, values, prefix="train/")
                if jax.process_index() == 0:
                    print(summaries.progress_line(step, total, values, throughput.eta(step)), flush=True)
            validation_loss = None
            if validate_now:
                losses = _evaluate(run, state, config, data_dir)
                _report_validation(step, losses, writer)
                validation_loss = losses["loss"]
            if save_now:
                runs.save(mngr, step, state.checkpoint_items(), force=True,
                          validation_loss=validation_loss, previous=saving)
                saving = step
            if stopping:
                log.warning("stopped by SIGTERM at step %d after saving", step)
                break
        runs.wait_for_save(mngr, saving)
    finally:
        mngr.wait_until_finished()
        mngr.close()
        train_batches.close()
        writer.close()
        preemption.restore()
    return state
