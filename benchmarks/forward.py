r"""Eval-mode forward speed of every jointist-jax module on one 10-s clip.

For each module at full size: compile seconds, seconds per forward (median of N calls after one
warm-up; wall and process CPU), FLOPs per call (XLA cost analysis, and matmul/conv FLOPs with
scan trip counts, see ``benchmarks/common.py``), XLA memory analysis and the process peak RSS of
the case. Conditioned modules (transcribers, separators) run K conditions of the one clip in ONE
batched call: the log-mel / STFT is computed once per clip and broadcast inside the model. The
``sum`` separator is fed a random frame posteriorgram as its roll input. The reference's CPU times
(docs/reference.md §11.3: t_infer1, t_infer39 / t_infer39b, tw_infer1) are printed beside ours with the
ratio ours / reference (< 1 is faster).

    .venv/bin/python -m benchmarks.forward                                   # everything, fp32
    .venv/bin/python -m benchmarks.forward --modules transcriber_narrow --conditions 1 --repeats 5
    .venv/bin/python -m benchmarks.forward --dtype bfloat16 --json /tmp/forward.json
    .venv/bin/python -m benchmarks.forward --tiny                            # smoke run, seconds
    .venv/bin/python -m benchmarks.forward --modules transcriber_narrow,separator_sum --conditions 5 --repeats 1 --profile
        # plus one traced call per case: where the time goes, per XLA op (benchmarks/profile_summary.py)

K = 39 calls take about a minute each on a 2-core CPU, so those cases use ``--repeats_large``
(default 1) timed calls instead of ``--repeats``; the table's ``N`` column says which.
"""

from __future__ import annotations

import argparse
import gc
import tempfile

from jointist_jax import xla_flags

xla_flags.apply_cpu_flags()  # this program's CPU XLA flags, before jax loads

from jointist_jax import audio, instruments
from jointist_jax.music import SAMPLE_RATE

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import common, profile_summary
from configs import defaults
from jointist_jax import stages

MODULES = ("recognizer", "transcriber_narrow", "transcriber_wide", "separator_sum", "separator_standalone")
CONDITIONED = frozenset(MODULES) - {"recognizer"}
FULL_CLIP_SAMPLES = 10 * SAMPLE_RATE
TINY_CLIP_SAMPLES = SAMPLE_RATE
# K at or above this uses --repeats_large timed calls (39 conditions: about a minute per call).
LARGE_K = 20

# docs/reference.md §11.3, torch 2 threads fp32 on a 2-core machine of the same kind:
# (case, median wall s, median CPU s or None where it was not measured).
# For K = 39 the first entry is the comparable one (one batched call); the second is what the
# reference's inference actually does (39 sequential batch-1 forwards).
REFERENCE = {
    ("transcriber_narrow", 1): [("t_infer1", 1.92, None)],
    ("transcriber_narrow", 39): [("t_infer39b", 73.6, 134.1), ("t_infer39 (sequential)", 83.1, 148.6)],
    ("transcriber_wide", 1): [("tw_infer1", 6.33, 12.2)],
}


def build_module(name: str, *, tiny: bool, dtype, rngs: nnx.Rngs) -> nnx.Module:
    """The module ``name`` at full size (the reference's widths) or at the runlocal ``tiny`` size,
    built by the package's model factory from the configs' model sections."""
    if name == "recognizer":
        return stages.recognizer(defaults.recognizer_config("tiny" if tiny else "full"), dtype=dtype, rngs=rngs)
    if name.startswith("transcriber_"):
        size = "tiny" if tiny else name.removeprefix("transcriber_")
        return stages.transcriber(defaults.transcriber_config(size), dtype=dtype, rngs=rngs)
    if name.startswith("separator_"):
        section = defaults.separator_config(name.removeprefix("separator_"), "tiny" if tiny else "full")
        return stages.separator(section, dtype=dtype, rngs=rngs)
    raise ValueError(f"unknown module {name!r}; choose from {MODULES}")


def _in_row_chunks(call, per_row: tuple[jax.Array, ...], max_rows: int) -> jax.Array:
    """``call(*per_row)`` over the K axis (axis 1) in chunks of at most ``max_rows`` conditions,
    one ``lax.map`` step per chunk, so memory stays bounded for large K; K is padded with copies
    of the last condition and the padding is dropped from the result."""
    k = per_row[0].shape[1]
    if not max_rows or k <= max_rows:
        return call(*per_row)
    chunks = -(-k // max_rows)

    def split(x):
        x = jnp.concatenate([x, jnp.repeat(x[:, -1:], chunks * max_rows - k, axis=1)], axis=1)
        return jnp.moveaxis(x.reshape(x.shape[0], chunks, max_rows, *x.shape[2:]), 1, 0)

    out = jax.lax.map(lambda xs: call(*xs), tuple(split(x) for x in per_row))
    out = jnp.moveaxis(out, 0, 1)
    return out.reshape(out.shape[0], chunks * max_rows, *out.shape[3:])[:, :k]


def forward_function(name: str, graphdef: nnx.GraphDef, max_rows: int = 0):
    """The pure eval-mode forward ``f(state, *inputs)`` of module ``name`` from its waveform.

    With ``max_rows`` > 0, conditioned modules run their K conditions in chunks of that many
    (the log-mel is still computed once per clip)."""

    def run(state, waveform, *rest):
        model = nnx.merge(graphdef, state, copy=True)
        if name == "recognizer":
            return model(audio.log_mel(waveform))
        if name.startswith("transcriber_"):
            logmel = audio.log_mel(waveform)
            return _in_row_chunks(lambda c: model(logmel, c)["frame_output"], rest, max_rows)
        if name == "separator_sum":
            return _in_row_chunks(lambda c, r: model(waveform, c, r)["waveform"], rest, max_rows)
        return _in_row_chunks(lambda c: model(waveform, c, None)["waveform"], rest, max_rows)

    return run


def make_inputs(name: str, model: nnx.Module, *, samples: int, k: int, seed: int = 0) -> tuple[jax.Array, ...]:
    """One random clip (1, samples) and, for conditioned modules, K distinct one-hot conditions
    (1, K, 40) (and the ``sum`` separator's roll (1, K, T, 88), a random posteriorgram)."""
    rng = np.random.default_rng(seed)
    waveform = jnp.asarray(rng.uniform(-0.5, 0.5, (1, samples)).astype(np.float32))
    if name not in CONDITIONED:
        return (waveform,)
    if not 1 <= k <= instruments.CONDITION_SIZE:
        raise ValueError(f"--conditions: K must be in 1..{instruments.CONDITION_SIZE}, got {k}")
    conditions = jnp.asarray(np.eye(instruments.CONDITION_SIZE, dtype=np.float32)[None, :k])
    if name != "separator_sum":
        return waveform, conditions
    frames = samples // model.hop + 1
    roll = jnp.asarray(rng.uniform(0.0, 1.0, (1, k, frames, model.num_notes)).astype(np.float32))
    return waveform, conditions, roll


def profile_call(compiled, state, inputs, *, top: int = 12) -> dict:
    """One call of ``compiled`` under ``jax.profiler``, summarised per XLA op (top ops, categories)."""
    with tempfile.TemporaryDirectory(prefix="forward-profile-") as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            jax.block_until_ready(compiled(state, *inputs))
        return profile_summary.summarize(trace_dir, compiled.as_text(), steps=1, top=top)


def measure_case(name: str, graphdef, state, inputs, *, repeats: int, max_rows: int = 0,
                 profile: bool = False) -> dict:
    """Compile, count FLOPs and time one (module, K) case; numbers in a flat dict (with
    ``profile``, also :func:`profile_call`'s summary of one more call)."""
    common.reset_peak_rss()
    fn = forward_function(name, graphdef, max_rows)
    compiled = common.compile_function(jax.jit(fn), state, *inputs)
    flops_matmul = common.matmul_flops(fn, state, *inputs)
    timing = common.time_calls(lambda: compiled.executable(state, *inputs), repeats=repeats, warmup=1)
    return {
        "compile_s": compiled.compile_s,
        "wall_s": timing.median_wall_s,
        "min_wall_s": timing.min_wall_s,
        "cpu_s": timing.median_cpu_s,
        "wall_s_all": timing.wall_s,
        "cpu_s_all": timing.cpu_s,
        "repeats": repeats,
        "gflops_xla": None if compiled.flops_xla is None else compiled.flops_xla / 1e9,
        "gflops_matmul": flops_matmul / 1e9,
        "xla_memory": compiled.memory,
        "xla_total_mb": compiled.memory.get("total_bytes", 0) / 2**20,
        "peak_rss_mb": common.peak_rss_mb(),
        "profile": profile_call(compiled.executable, state, inputs) if profile else None,
    }


def run_benchmark(modules: list[str], conditions: list[int], *, repeats: int, repeats_large: int,
                  dtype_name: str, tiny: bool, max_rows: int = 0, profile: bool = False) -> list[dict]:
    """Every (module, K) case; one dict per case with the reference's time and the ratio."""
    dtype = stages.compute_dtype(dtype_name)
    samples = TINY_CLIP_SAMPLES if tiny else FULL_CLIP_SAMPLES
    results = []
    for name in modules:
        model = build_module(name, tiny=tiny, dtype=dtype, rngs=nnx.Rngs(0))
        model.eval()
        params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
        graphdef, state = nnx.split(model)
        for k in (conditions if name in CONDITIONED else [None]):
            inputs = make_inputs(name, model, samples=samples, k=k or 1)
            n = repeats_large if (k or 1) >= LARGE_K else repeats
            chunk = max_rows if name in CONDITIONED and max_rows and (k or 1) > max_rows else 0
            row = {"module": name, "K": k, "params": params, "samples": samples, "dtype": dtype_name,
                   "max_rows": chunk, **measure_case(name, graphdef, state, inputs, repeats=n, max_rows=chunk,
                                   profile=profile)}
            references = [] if tiny else REFERENCE.get((name, k or 1), [])
            row["reference"] = [{"case": case, "s": s, "ratio": common.ratio(row["wall_s"], s), "cpu_s": cpu_s}
                                for case, s, cpu_s in references]
            results.append(row)
            print(f"  {name} K={k or '-'}: {row['wall_s']:.3f} s/call", flush=True)
            if row["profile"] is not None:
                print(profile_summary.format_summary(row["profile"]), flush=True)
        del model, graphdef, state
        gc.collect()
    return results


COLUMNS = (("case", "case", ""), ("N", "N", "d"), ("compile_s", "compile s", ".1f"), ("wall_s", "wall s", ".3f"),
           ("min_wall_s", "min s", ".3f"), ("cpu_s", "CPU s", ".3f"), ("gflops_xla", "GFLOP xla", ".1f"),
           ("gflops_matmul", "GFLOP mm", ".1f"), ("xla_total_mb", "XLA MB", ".0f"),
           ("peak_rss_mb", "RSS MB", ".0f"), ("ref_case", "reference", ""), ("ref_s", "ref s", ".2f"),
           ("ratio", "ours/ref", ".3f"), ("ref_cpu_s", "ref CPU s", ".1f"))


def table_rows(results: list[dict]) -> list[dict]:
    """Flattens results for :func:`common.format_table`: one line per reference comparison."""
    rows = []
    for r in results:
        chunks = f" (chunks of {r['max_rows']})" if r.get("max_rows") else ""
        base = dict(r, case=f"{r['module']}" + (f" K={r['K']}" if r["K"] else "") + chunks, N=r["repeats"])
        if not r["reference"]:
            rows.append(base)
        for i, ref in enumerate(r["reference"]):
            line = base if i == 0 else {"case": ""}
            rows.append(dict(line, ref_case=ref["case"], ref_s=ref["s"], ratio=ref["ratio"], ref_cpu_s=ref["cpu_s"]))
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", default="all", help=f"comma-separated from {', '.join(MODULES)}, or all")
    parser.add_argument("--conditions", default="1,5,39", help="comma-separated K values for conditioned modules")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per case (median), after 1 warm-up")
    parser.add_argument("--max_rows", type=int, default=0,
                        help="run more than this many conditions in chunks of this size (0: all in one call; "
                             "K=39 of the wide transcriber or the separator needs more than 24 GB in one call)")
    parser.add_argument("--repeats_large", type=int, default=1,
                        help=f"timed calls for cases with K >= {LARGE_K} (about a minute each at full size)")
    parser.add_argument("--profile", action="store_true",
                        help="after timing, trace one more call per case and print its top XLA ops")
    common.add_common_flags(parser)
    args = parser.parse_args(argv)
    modules = common.parse_csv(args.modules, MODULES, "--modules")
    try:
        conditions = sorted({int(k) for k in args.conditions.split(",") if k.strip()})
    except ValueError:
        parser.error(f"--conditions must be comma-separated integers, got {args.conditions!r}")
    if not conditions or not all(1 <= k <= instruments.CONDITION_SIZE for k in conditions):
        parser.error(f"--conditions values must be in 1..{instruments.CONDITION_SIZE}, got {args.conditions!r}")
    if args.repeats < 1 or args.repeats_large < 1:
        parser.error("--repeats and --repeats_large must be >= 1")

    env = common.environment()
    print(f"forward benchmark: jax {env['jax']} on {env['devices']} {env['platform']} device(s), "
          f"{env['cpu_count']} CPUs, {args.dtype}, {'TINY 1-s clip' if args.tiny else '10-s clip'}", flush=True)
    results = run_benchmark(modules, conditions, repeats=args.repeats, repeats_large=args.repeats_large,
                            dtype_name=args.dtype, tiny=args.tiny, max_rows=args.max_rows,
                            profile=args.profile)
    print()
    print(common.format_table(table_rows(results), COLUMNS))
    print("\nwall/CPU s: median per call after 1 warm-up over N calls. GFLOP xla: XLA cost analysis (scan "
          "bodies counted once);\nGFLOP mm: matmul+conv FLOPs with scan trip counts. RSS: process peak "
          "during the case. ours/ref < 1 = faster than the reference.")
    payload = {"benchmark": "forward", "environment": env, "args": vars(args), "results": results}
    if args.json:
        common.write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
