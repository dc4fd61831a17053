r"""Why does a transcriber learn slowly? Prints what the training loop does not show.

Trains ``transcription:runlocal`` (or the given config) and, every ``--every`` steps, prints:

* the loss of each output (onset, frame) beside the loss of predicting every key's base rate;
* the gradient norm of each module (bn0, both back ends' CNN / fc5 / bn5 / GRU / fc, frame_gru,
  frame_fc);
* BatchNorm statistics: for bn0 and each back end's bn5, how far the running mean and variance
  are from the statistics of the batch being trained on (in units of the batch's std);
* frame-posterior quantiles on the target's active and inactive cells, in three modes:
  ``train`` (batch statistics + dropout, what the loss sees), ``bn-only`` (batch statistics, no
  dropout) and ``eval`` (running statistics, no dropout: what inference sees).

  .venv/bin/python -m benchmarks.diagnose_learning --steps 300 --fixed_batch   # one batch, memorise
  .venv/bin/python -m benchmarks.diagnose_learning --steps 1000                # the training stream

``--set key=value`` overrides config fields (e.g. ``--set optimizer.lr=3e-3``).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys
import time

from jointist_jax import xla_flags

xla_flags.apply_cpu_flags()  # this program's CPU XLA flags, before jax loads

from jointist_jax import audio

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jointist_jax.data import pipeline
from jointist_jax.data.spec import input_spec
from jointist_jax.models import losses
from jointist_jax import optimizer, stages
from jointist_jax.train import steps

MODULE_GROUPS = ("bn0", "frame_model.acoustic", "frame_model.fc5", "frame_model.bn5", "frame_model.language",
                 "frame_model.fc", "reg_onset_model.acoustic", "reg_onset_model.fc5", "reg_onset_model.bn5",
                 "reg_onset_model.language", "reg_onset_model.fc", "frame_gru", "frame_fc")
QUANTILES = (0.5, 0.9, 0.99, 1.0)


def _override(config, assignment: str) -> None:
    key, _, value = assignment.partition("=")
    node = config
    *parents, leaf = key.split(".")
    for name in parents:
        node = node[name]
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    node[leaf] = type(node[leaf])(parsed) if not isinstance(node[leaf], (tuple, list)) else parsed


def _group_norms(grads) -> dict[str, float]:
    flat = nnx.to_flat_state(grads) if hasattr(nnx, "to_flat_state") else grads.flat_state()
    sums = {g: 0.0 for g in MODULE_GROUPS}
    for path, leaf in flat:
        name = ".".join(str(p) for p in path)
        value = leaf[...] if isinstance(leaf, nnx.Variable) else leaf
        for group in MODULE_GROUPS:
            if name.startswith(group + ".") or name == group:
                sums[group] += float(jnp.sum(jnp.square(value)))
                break
    return {g: s ** 0.5 for g, s in sums.items()}


def _quantiles(values: np.ndarray) -> str:
    if values.size == 0:
        return "-"
    return " ".join(f"{q:.3f}" for q in np.quantile(values, QUANTILES))


def _base_rate_loss(target: np.ndarray, mask: np.ndarray) -> float:
    """BCE of predicting each key's mean target over the batch (the best input-blind prediction)."""
    m = mask.astype(np.float64)
    rate = np.clip((target * m).sum(axis=(0, 1, 2)) / np.maximum(m.sum(axis=(0, 1, 2)), 1), 1e-7, 1 - 1e-7)
    bce = -(target * np.log(rate) + (1 - target) * np.log1p(-rate))
    return float((bce * m).sum() / max(m.sum(), 1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="transcription:runlocal")
    parser.add_argument("--data_dir", default="demo/tfds")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--fixed_batch", action="store_true", help="train on the first batch only")
    parser.add_argument("--optimizer", choices=("config", "adam"), default="config",
                        help="config: the config's Adam(amsgrad); adam: optax.adam under the same schedule")
    parser.add_argument("--prior_bias", type=float, default=None,
                        help="start every output layer's bias at logit(PRIOR) instead of 0 (sigmoid 0.5)")
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    args = parser.parse_args(argv)

    name, _, config_arg = args.config.partition(":")
    config = importlib.import_module(f"configs.{name}").get_config(config_arg)
    config.data.data_dir = args.data_dir
    for assignment in args.set:
        _override(config, assignment)
    if config.stage != "transcription":
        parser.error("diagnose_learning reads transcriber internals: use a transcription config")

    model = stages.build_model(config, nnx.Rngs(params=config.seed, dropout=config.seed))
    if args.prior_bias is not None:
        logit = float(np.log(args.prior_bias / (1 - args.prior_bias)))
        for layer in (model.frame_model.fc, model.reg_onset_model.fc, model.frame_fc):
            layer.bias[...] = jnp.full_like(layer.bias[...], logit)
    model.train()
    graphdef, params, batch_stats, rest = stages.split_model(model)
    tx, schedule = optimizer.make_optimizer(config.optimizer)
    if args.optimizer == "adam":
        o = config.optimizer
        tx = optax.chain(optax.scale_by_adam(o.b1, o.b2, o.eps), optax.scale_by_learning_rate(schedule))
    opt_state = tx.init(params)
    base_key = jax.random.key(config.seed)
    spec = input_spec(stages.get(config.stage), config)  # the trainer's own input settings
    stream = pipeline.make_train_iterator(args.data_dir, config.data.train_split, spec)
    batches = iter(stream)
    fixed = next(batches) if args.fixed_batch else None

    @jax.jit
    def train_step(step, params, batch_stats, opt_state, batch):
        def loss_fn(params):
            m = nnx.merge(graphdef, params, batch_stats, rest, copy=True)
            loss, metrics = steps.stage_losses(m, batch, "transcription", nnx.Rngs(dropout=jax.random.fold_in(base_key, step)))
            return loss, (metrics, nnx.state(m, nnx.BatchStat))

        (loss, (metrics, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, metrics, grads

    def outputs(params, batch_stats, batch, *, running: bool, dropout: bool):
        m = nnx.merge(graphdef, params, batch_stats, rest, copy=True)
        m.set_attributes(use_running_average=running, deterministic=not dropout, raise_if_not_found=False)
        return m(audio.log_mel(batch["waveform"]), batch["conditions"], rngs=nnx.Rngs(dropout=1))

    forward = jax.jit(outputs, static_argnames=("running", "dropout"))

    def bn_report(batch_stats, batch):
        """Running vs batch statistics of bn0 (log-mel) and bn5 (both back ends), in batch-std units."""
        x = np.asarray(audio.log_mel(batch["waveform"]))
        mean, var = x.mean(axis=(0, 1)), x.var(axis=(0, 1))
        running_mean = np.asarray(batch_stats["bn0"]["mean"][...])
        running_var = np.asarray(batch_stats["bn0"]["var"][...])
        shift = np.abs(running_mean - mean) / np.sqrt(var + 1e-5)
        ratio = running_var / (var + 1e-5)
        return (f"bn0: |mean shift| median {np.median(shift):.2f} max {shift.max():.2f} std; "
                f"var ratio median {np.median(ratio):.2f} [min {ratio.min():.2f}, max {ratio.max():.2f}]")

    print(f"config {args.config} {' '.join(args.set)}; optimizer {args.optimizer}; prior_bias {args.prior_bias}; lr {config.optimizer.lr:g} warm-up "
          f"{config.optimizer.warmup_steps}; batch {config.data.global_batch} clips x "
          f"{config.data.num_positive + config.data.num_negative} rows x {config.data.clip_seconds:g} s; "
          f"{'one fixed batch' if args.fixed_batch else 'training stream'}", flush=True)
    start = time.perf_counter()
    for step in range(args.steps + 1):
        # Plain host arrays: the pipeline's batches carry a mesh sharding the reshapes here do not.
        batch = jax.tree.map(np.asarray, fixed if fixed is not None else next(batches))
        if step % args.every == 0 or step == args.steps:
            mask = np.asarray(batch["mask_roll"])
            frame_t = np.asarray(batch["frame_roll"])
            onset_t = np.asarray(batch["reg_onset_roll"])
            on, off = (frame_t > 0.5) & (mask > 0), (frame_t < 0.5) & (mask > 0)
            line = [f"\n== step {step} ({time.perf_counter() - start:.0f} s); frame density "
                    f"{frame_t[mask > 0].mean():.4f}; base-rate loss onset {_base_rate_loss(onset_t, mask):.4f} "
                    f"frame {_base_rate_loss(frame_t, mask):.4f}"]
            for mode, running, dropout in (("train", False, True), ("bn-only", False, False),
                                           ("eval", True, False)):
                out = forward(params, batch_stats, batch, running=running, dropout=dropout)
                f = np.asarray(out["frame_output"])
                o = np.asarray(out["reg_onset_output"])
                lo = float(losses.masked_bce(out["reg_onset_output"], batch["reg_onset_roll"], batch["mask_roll"]))
                lf = float(losses.masked_bce(out["frame_output"], batch["frame_roll"], batch["mask_roll"]))
                onset_on = (onset_t > 0.5) & (mask > 0)
                line.append(f"  {mode:<8} loss onset {lo:.4f} frame {lf:.4f} | frame q{QUANTILES} on "
                            f"[{_quantiles(f[on])}] off [{_quantiles(f[off])}] | onset on [{_quantiles(o[onset_on])}]")
            line.append("  " + bn_report(batch_stats, batch))
            print("\n".join(line), flush=True)
        if step == args.steps:
            break
        params, batch_stats, opt_state, metrics, grads = train_step(jnp.asarray(step), params, batch_stats,
                                                                    opt_state, batch)
        if step % args.every == 0:
            norms = _group_norms(grads)
            print(f"  step {step} lr {float(schedule(step)):.2e} loss {float(metrics['transcription_loss']):.4f} "
                  f"(onset {float(metrics['onset_loss']):.4f} frame {float(metrics['frame_loss']):.4f}); grad norms: "
                  + ", ".join(f"{k} {v:.2e}" for k, v in norms.items()), flush=True)
    stream.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
