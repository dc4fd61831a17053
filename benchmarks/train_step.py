r"""Training-step speed of every stage at the reference's benchmark batch shapes.

Times the step the trainer runs: ``jointist_jax.train.trainer.Run`` builds it from the stage's
config exactly as ``train_and_evaluate`` does (``steps.make_train_step``, jitted with the state and
batch shardings and the state donated), at full model size, on random batches with the input
pipeline's keys, shapes and dtypes (``InputSpec.fields``), placed with
``distributed.batch_sharding``. The cases (docs/reference.md §11.3), each 2 clips x 1 condition (2 rows):

  t_train   transcription stage, narrow transcriber
  tw_train  transcription stage, wide transcriber
  s_train   the ``sum`` separator (TCondUNet, hop 160) alone. No config trains it, so it is
            timed as the unregistered stage ``stages.GT_ROLL_SEPARATION``: the trainer's step
            with the separation stage's optimiser and L1 loss, fed the ground-truth
            ``frame_roll`` as the roll input (the reference's GT-roll separator; docs/reference.md §1.5)
  cu_train  separation stage, standalone separator (CondUNet, hop 320)
  ir_train  ir stage, recognizer (2 clips)
  ts_train  joint stage, narrow transcriber + sum separator

Reported per case: seconds per step (median after warm-up; wall and process CPU), clips/s and
rows/s, compile seconds, FLOPs per step (XLA cost analysis; matmul+conv FLOPs with scan trip
counts), XLA memory analysis of the compiled step, the process peak RSS, the reference's seconds
with the ratio ours / reference, and with ``--peak_tflops`` the model FLOP utilisation.

    .venv/bin/python -m benchmarks.train_step                          # every stage, fp32
    .venv/bin/python -m benchmarks.train_step --stages t_train,ir_train --steps 5 --json /tmp/t.json
    .venv/bin/python -m benchmarks.train_step --dtype bfloat16 --peak_tflops 989   # e.g. an H100
    .venv/bin/python -m benchmarks.train_step --tiny                   # smoke run, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import math

from jointist_jax import xla_flags

xla_flags.apply_cpu_flags()  # this program's CPU XLA flags, before jax loads

from jointist_jax import instruments

import jax
import ml_collections
import numpy as np

from benchmarks import common
from configs import defaults, ir, joint_scratch, separation, transcription
from jointist_jax import stages
from jointist_jax.data.spec import InputSpec, input_spec
from jointist_jax.train import distributed
from jointist_jax.train.trainer import Run


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark case: what it times and the reference's numbers for it (docs/reference.md §11.3):
    median wall seconds per step, median CPU seconds per step and peak RSS."""

    description: str
    ref_s: float
    ref_cpu_s: float
    ref_rss_mb: float


CASES = {
    "t_train": Case("transcription, narrow T, 2 clips x 1 condition", 12.44, 23.7, 3494),
    "tw_train": Case("transcription, wide T, 2 clips x 1 condition", 40.52, 77.0, 5936),
    "s_train": Case("sum separator alone (GT roll), hop 160, 2 rows", 17.85, 34.4, 5041),
    "cu_train": Case("separation stage, standalone separator, hop 320, 2 rows", 8.50, 16.7, 3048),
    "ir_train": Case("ir stage, recognizer, 2 clips", 6.64, 13.0, 3174),
    "ts_train": Case("joint stage, narrow T + sum separator, 2 rows", 30.98, 57.7, 7740),
}
CLIPS = 2
ROWS_PER_CLIP = 1
TINY_CLIP_SECONDS = 1.0


def stage_config(case: str, *, tiny: bool, dtype: str) -> ml_collections.ConfigDict:
    """The stage config the trainer would use for ``case``, at the benchmark's batch shape."""
    local = "runlocal" if tiny else ""
    if case in ("t_train", "tw_train"):
        variant = "narrow" if case == "t_train" else "wide"
        config = transcription.get_config(f"variant={variant}" + (",runlocal" if tiny else ""))
    elif case in ("s_train", "cu_train"):
        config = separation.get_config(local)
        if case == "s_train":
            config.model.separator = defaults.separator_config("sum", "tiny" if tiny else "full")
    elif case == "ir_train":
        config = ir.get_config(local)
    elif case == "ts_train":
        config = joint_scratch.get_config(local)
    else:
        raise ValueError(f"unknown stage case {case!r}; choose from {', '.join(CASES)}")
    config.data.global_batch = CLIPS
    if config.stage != "ir":
        config.data.num_positive = ROWS_PER_CLIP
        config.data.num_negative = 0
    config.data.clip_seconds = TINY_CLIP_SECONDS if tiny else 10.0
    config.model.dtype = dtype
    return config


def case_stage(case: str, config: ml_collections.ConfigDict) -> stages.Stage:
    """The stage ``case`` trains: the config's registered stage, or the GT-roll separator for s_train."""
    return stages.GT_ROLL_SEPARATION if case == "s_train" else stages.get(config.stage)


def example_spec(case: str, config: ml_collections.ConfigDict) -> InputSpec:
    """The input spec of the case's stage (targets / stems as it trains): its ``fields()`` are the
    pipeline's per-clip outputs."""
    return input_spec(case_stage(case, config), config)


def random_batch(spec: InputSpec, clips: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch with the pipeline's keys, shapes and dtypes and plausible random values: audio in
    [-0.5, 0.5], distinct positive classes as one-hot conditions, binary rolls, all rows valid."""
    rng = np.random.default_rng(seed)
    batch = {}
    for key, dtype, shape in spec.fields():
        full = (clips,) + shape
        if key == "conditions":
            continue  # the one-hot of class_ids, below
        if key in ("waveform", "source"):
            value = rng.uniform(-0.5, 0.5, full)
        elif key == "class_ids":
            value = np.stack([rng.choice(instruments.NUM_CLASSES, shape[0], replace=False) for _ in range(clips)])
        elif key in ("is_positive", "source_valid", "mask_roll"):
            value = np.ones(full)
        elif key in ("onset_roll", "frame_roll", "instruments"):
            value = rng.random(full) < 0.1
        elif key == "reg_onset_roll":
            value = rng.random(full) * (rng.random(full) < 0.1)
        else:
            raise KeyError(f"random_batch: no generator for pipeline field {key!r}")
        batch[key] = value.astype(dtype)
    if "class_ids" in batch:
        batch["conditions"] = np.eye(instruments.CONDITION_SIZE, dtype=np.float32)[batch["class_ids"]]
    return batch


def benchmark_mesh(clips: int):
    """A data mesh over as many devices as evenly split the batch (all of them on one CPU device)."""
    devices = jax.devices()
    return distributed.data_mesh(devices[: math.gcd(len(devices), clips)])


def measure_case(case: str, *, steps: int, dtype: str, tiny: bool, peak_tflops: float | None) -> dict:
    """Builds the stage's step and state, compiles, counts FLOPs and times ``steps`` steps."""
    common.reset_peak_rss()
    config = stage_config(case, tiny=tiny, dtype=dtype)
    mesh = benchmark_mesh(config.data.global_batch)
    run = Run(config, mesh, stage=case_stage(case, config))
    step_fn = run.train_step
    spec = example_spec(case, config)
    batch = jax.device_put(random_batch(spec, config.data.global_batch, seed=config.seed),
                           distributed.batch_sharding(mesh))
    state = run.init_state()
    params = sum(x.size for x in jax.tree.leaves(state.params))

    compiled = common.compile_function(step_fn, state, batch)
    flops_matmul = common.matmul_flops(step_fn, state, batch)
    holder = {"state": state}

    def one_step():
        # The state is donated: every step must consume the previous step's output.
        holder["state"], metrics = compiled.executable(holder["state"], batch)
        return holder["state"], metrics

    timing = common.time_calls(one_step, repeats=steps, warmup=1)
    loss = float(jax.device_get(one_step()[1]["loss"]))
    if not np.isfinite(loss):
        raise FloatingPointError(f"{case}: non-finite loss {loss} after {steps + 2} steps")
    rows = config.data.global_batch * max(spec.rows, 1)
    seconds = timing.median_wall_s
    ref = CASES[case]
    result = {
        "case": case, "description": ref.description, "stage": config.stage, "params": int(params),
        "clips": config.data.global_batch, "rows": rows, "clip_samples": spec.clip_samples, "dtype": dtype,
        "devices": mesh.size, "steps": steps, "loss": loss,
        "step_s": seconds, "min_step_s": timing.min_wall_s, "cpu_s": timing.median_cpu_s,
        "step_s_all": timing.wall_s, "cpu_s_all": timing.cpu_s,
        "clips_per_s": config.data.global_batch / seconds, "rows_per_s": rows / seconds,
        "compile_s": compiled.compile_s,
        "gflops_xla": None if compiled.flops_xla is None else compiled.flops_xla / 1e9,
        "gflops_matmul": flops_matmul / 1e9,
        "xla_memory": compiled.memory, "xla_total_mb": compiled.memory.get("total_bytes", 0) / 2**20,
        "peak_rss_mb": common.peak_rss_mb(),
        "ref_s": None if tiny else ref.ref_s, "ref_cpu_s": None if tiny else ref.ref_cpu_s,
        "ref_rss_mb": None if tiny else ref.ref_rss_mb,
    }
    result["ratio"] = common.ratio(seconds, result["ref_s"])
    if peak_tflops is not None:
        result["peak_tflops"] = peak_tflops
        result["mfu"] = common.mfu(flops_matmul, seconds, peak_tflops)
        if compiled.flops_xla is not None:
            result["mfu_xla"] = common.mfu(compiled.flops_xla, seconds, peak_tflops)
    return result


COLUMNS = (("case", "case", ""), ("params_m", "params M", ".1f"), ("rows", "rows", "d"),
           ("compile_s", "compile s", ".1f"), ("step_s", "s/step", ".3f"), ("min_step_s", "min s", ".3f"),
           ("cpu_s", "CPU s", ".2f"), ("rows_per_s", "rows/s", ".3f"), ("gflops_xla", "GFLOP xla", ".0f"),
           ("gflops_matmul", "GFLOP mm", ".0f"), ("xla_total_mb", "XLA MB", ".0f"),
           ("peak_rss_mb", "RSS MB", ".0f"), ("ref_s", "ref s", ".2f"), ("ratio", "ours/ref", ".3f"),
           ("ref_cpu_s", "ref CPU s", ".1f"), ("ref_rss_mb", "ref RSS MB", ".0f"))
MFU_COLUMNS = (("mfu_pct", "MFU %", ".1f"), ("mfu_xla_pct", "MFU(xla) %", ".1f"))


def table_rows(results: list[dict]) -> list[dict]:
    """Results with the derived display fields (params in millions, MFU in percent)."""
    rows = []
    for r in results:
        row = dict(r, params_m=r["params"] / 1e6)
        for key in ("mfu", "mfu_xla"):
            if r.get(key) is not None:
                row[f"{key}_pct"] = 100 * r[key]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default="all", help=f"comma-separated from {', '.join(CASES)}, or all")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per stage (median), after 1 warm-up")
    parser.add_argument("--peak_tflops", type=float, default=None,
                        help="the device's peak TFLOP/s in the compute dtype: also report MFU")
    common.add_common_flags(parser)
    args = parser.parse_args(argv)
    stages = common.parse_csv(args.stages, tuple(CASES), "--stages")
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        parser.error("--peak_tflops must be > 0")

    env = common.environment()
    print(f"train-step benchmark: jax {env['jax']} on {env['devices']} {env['platform']} device(s), "
          f"{env['cpu_count']} CPUs, {args.dtype}, {'TINY models, 1-s clips' if args.tiny else '10-s clips'}",
          flush=True)
    results = []
    for case in stages:
        results.append(measure_case(case, steps=args.steps, dtype=args.dtype, tiny=args.tiny,
                                    peak_tflops=args.peak_tflops))
        print(f"  {case}: {results[-1]['step_s']:.3f} s/step", flush=True)
        gc.collect()
    columns = COLUMNS + (MFU_COLUMNS if args.peak_tflops is not None else ())
    print()
    print(common.format_table(table_rows(results), columns))
    print("\ns/step, CPU s: median over the timed steps after 1 warm-up. GFLOP xla: XLA cost analysis "
          "(scan bodies counted once);\nGFLOP mm: matmul+conv FLOPs with scan trip counts (used for MFU). "
          "XLA MB: argument+output+temp-alias bytes;\nRSS: process peak during the case. "
          "ours/ref < 1 = faster than the reference (docs/reference.md §11.3, torch CPU, 2 threads).")
    payload = {"benchmark": "train_step", "environment": env, "args": vars(args), "results": results}
    if args.json:
        common.write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
