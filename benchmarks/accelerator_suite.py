r"""Every training stage's throughput, utilisation and memory on one accelerator, in one run.

For each case of ``benchmarks/train_step.py`` (the trainer's own jitted step, full model size,
random batches with the input pipeline's fields, one 10-s clip and one condition per example):

  * per-device batches of ``--batches`` (default 2, 8, 32 and ``max``: the largest that fits,
    found by doubling then bisection), in bfloat16 and float32;
  * step time (median after a warm-up), examples/s, model FLOP utilisation (matmul and conv
    FLOPs of the step's jaxpr with every scan body counted ``length`` times, over the card's peak:
    ``--peak_tflops`` or the table below), the device's peak memory, XLA's memory analysis and the
    compile time;
  * a batch that does not fit (out of memory at compile or run time, or over ``--memory_limit_gb``
    by XLA's memory analysis) is retried with ``config.model.remat``; both are reported.

Then a ``jax.profiler`` trace of the joint step (``ts_train``) at its largest fitting batch,
summarised by ``benchmarks/profile_summary.py`` (top ops; shares of the GRU scans' while loops,
convolutions, FFTs and the optimiser); optionally the joint step with the GRU scans unrolled
(``--gru_unroll N``, same numerics); and the input pipeline's examples/s at the joint stage's
shapes on this host's CPUs (``--data_dir``), beside the fastest joint step's consumption.

Order and budget: the work runs most-wanted first (bfloat16 before float32; ``ts_train`` at
batch 32, its largest batch and its profile first; then the other cases at batch 32, their
largest batches, the remat retries, and batches 8 and 2; see ``Suite.plan``) and each item is
started only if the time it is expected to take (the case's last measurement) is left of
``--budget_seconds``, counted from the start; what is not started is recorded under ``skipped``. The JSON (``--out``) is rewritten after
every item, so a run that is killed still leaves valid JSON of what it finished.

    python -m benchmarks.accelerator_suite --out /tmp/accel.json                 # on a GPU host
    python -m benchmarks.accelerator_suite --tiny --cases ir_train --dtypes float32 --batches 2,max \
        --max_batch 4 --memory_limit_gb 0.012 --profile_case ir_train --out /tmp/tiny.json  # CPU smoke

Peak TFLOP/s looked up from the device kind (dense, no sparsity; float32 matmuls on these GPUs run
as TF32 under JAX's default precision, so the float32 peak is the TF32 one): H100 SXM / H200 /
GH200 989.4 bf16, 494.7 fp32; H100 PCIe 756, 378; H100 NVL / H200 NVL 835.5, 417.5.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from jointist_jax import xla_flags

xla_flags.apply_cpu_flags()  # this program's CPU XLA flags, before jax loads

from jointist_jax.models import gru

import jax
import numpy as np
from flax import nnx

from benchmarks import common, profile_summary, train_step
from jointist_jax import stages
from jointist_jax.train import distributed
from jointist_jax.train.trainer import Run

CASE_ORDER = ("ts_train", "t_train", "tw_train", "s_train", "cu_train", "ir_train")  # most wanted first
DTYPE_ORDER = ("bfloat16", "float32")
MAX = "max"

# (substrings of the lower-cased device kind, bf16 dense TFLOP/s, fp32 (TF32) dense TFLOP/s);
# the first entry whose substrings all occur wins, so the specific variants come first.
PEAK_TFLOPS = (
    (("h200", "nvl"), 835.5, 417.5),
    (("h100", "nvl"), 835.5, 417.5),
    (("h100", "pcie"), 756.0, 378.0),
    (("gh200",), 989.4, 494.7),
    (("h200",), 989.4, 494.7),
    (("h100",), 989.4, 494.7),
)


def peak_tflops_for(device_kind: str, dtype: str) -> float | None:
    """The dense peak TFLOP/s of ``device_kind`` in ``dtype``, or None for an unknown device."""
    kind = device_kind.lower()
    for needles, bf16, fp32 in PEAK_TFLOPS:
        if all(n in kind for n in needles):
            return {"bfloat16": bf16, "float32": fp32}[dtype]
    return None


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is XLA's out-of-memory (RESOURCE_EXHAUSTED) at compile or run time."""
    text = f"{type(error).__name__}: {error}"
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


class Budget:
    """Seconds since the start against a limit."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.perf_counter):
        self.seconds = seconds
        self.clock = clock
        self.start = clock()

    def used(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        return self.seconds - self.used()


# ------------------------------------------------------------------------------ largest batch
@dataclasses.dataclass
class Search:
    """State and outcome of a largest-fitting-batch search."""

    largest: int  # largest batch known to fit (0: none)
    smallest_failing: int | None  # smallest batch known not to fit
    probes: list[dict]
    complete: bool
    stopped: str


def predicted_batch(points: list[tuple[int, float]], limit_bytes: float, *, headroom: float = 0.9) -> int | None:
    """The batch whose memory a line through the two largest ``(batch, bytes)`` points puts at
    ``headroom`` x ``limit_bytes`` (multiples of 8 from 16 up), or None without a rising line."""
    points = sorted(set(points))
    if len(points) < 2:
        return None
    (b1, m1), (b2, m2) = points[-2:]
    slope = (m2 - m1) / (b2 - b1)
    if slope <= 0:
        return None
    guess = int((headroom * limit_bytes - (m2 - slope * b2)) / slope)
    return guess - guess % 8 if guess >= 16 else guess


def largest_fitting(fits: Callable[[int], bool], *, fitting: int = 0, failing: int | None = None,
                    start: int = 2, max_batch: int = 4096, tolerance: float = 0.1,
                    guess: int | None = None, may_probe: Callable[[], str | None] = lambda: None) -> Search:
    """The largest batch for which ``fits(batch)`` holds: an optional ``guess`` first (and, if it
    fits, the batch one tolerance step above it), then doubling from the largest known fitting
    batch until one fails, then bisection until the gap is at most ``tolerance`` x the fitting
    batch (and at least 1). Every probe is a compile, so a good guess saves most of them.

    ``fitting`` / ``failing``: batches already known to fit / not to fit (0 / None: none).
    ``may_probe()`` is asked before every probe and returns why not (budget) or None.
    """
    probes: list[dict] = []
    lo, hi = fitting, failing

    def probe(batch: int) -> str | None:
        nonlocal lo, hi
        why_not = may_probe()
        if why_not:
            return why_not
        ok = fits(batch)
        probes.append({"batch": batch, "fits": ok})
        if ok:
            lo = max(lo, batch)
        else:
            hi = batch if hi is None else min(hi, batch)
        return None

    def done(stopped: str, complete: bool) -> Search:
        return Search(lo, hi, probes, complete, stopped)

    if lo == 0 and (hi is None or start < hi):
        if (why := probe(min(start, max_batch))):
            return done(why, False)
    if guess is not None and lo < guess <= max_batch and (hi is None or guess < hi):
        if (why := probe(guess)):
            return done(why, False)
        step = max(1, int(lo * tolerance))
        if lo == guess and lo + step <= max_batch and (hi is None or lo + step < hi):
            # A guess that fits is usually just under the limit: one step above it may settle it.
            if (why := probe(lo + step)):
                return done(why, False)
    while hi is None:
        if lo >= max_batch:
            return done(f"max_batch {max_batch} fits", True)
        if (why := probe(min(2 * lo, max_batch))):
            return done(why, False)
    while hi - lo > max(1, int(lo * tolerance)):
        if (why := probe((lo + hi) // 2 if lo else max(1, hi // 2))):
            return done(why, False)
    return done("converged" if lo else "nothing fits", True)


# ------------------------------------------------------------------------------ GRU unroll
@contextlib.contextmanager
def gru_unroll(unroll: int | None):
    """While active, models built for a run have their GRU scans unrolled ``unroll`` times.

    The unroll factor changes only how the loop is compiled, not the numbers it computes; a run's
    step captures the graph definition at construction, so this is needed only around ``Run``.
    """
    if unroll is None:
        yield
        return
    original = stages.build_model

    def build(config, rngs, stage=None):
        model = original(config, rngs, stage=stage)
        for _, node in nnx.iter_graph(model):
            if isinstance(node, gru.BiGRU):
                node.unroll = unroll
        return model

    stages.build_model = build
    try:
        yield
    finally:
        stages.build_model = original


# ------------------------------------------------------------------------------ measuring
def add_throughput(record: dict, seconds: float, peak_tflops: float | None) -> dict:
    """Adds step seconds, examples/s (global and per device), achieved TFLOP/s and MFU (against
    ``peak_tflops`` per device, None if unknown) to a record with ``gflops_matmul``."""
    record.update(step_s=seconds, examples_per_s=record["global_batch"] / seconds,
                  examples_per_s_per_device=record["batch"] / seconds,
                  tflops_per_s=record["gflops_matmul"] / 1e3 / seconds, peak_tflops=peak_tflops)
    record["mfu"] = None if peak_tflops is None else common.mfu(
        record["gflops_matmul"] * 1e9, seconds, peak_tflops * record["devices"])
    return record


@dataclasses.dataclass
class Built:
    """One case's run (model, optimiser, shardings) and jitted step at one dtype / remat / unroll."""

    config: object
    run: Run
    step_fn: Callable
    spec: object
    mesh: object


@dataclasses.dataclass
class Prepared:
    """A compiled step for one batch, ready to run, with the batch it was compiled for."""

    built: Built
    compiled: object
    batch: dict


def device_memory(device) -> dict:
    """The device's allocator statistics (bytes), or {} where the backend has none (CPU)."""
    stats = device.memory_stats() or {}
    return {k: int(stats[k]) for k in ("bytes_in_use", "peak_bytes_in_use", "bytes_limit") if k in stats}


class Suite:
    """Runs the plan (module docstring), keeping every number in ``self.payload``."""

    def __init__(self, args, budget: Budget):
        self.args = args
        self.budget = budget
        self.devices = jax.devices()[: args.devices]
        self.device = self.devices[0]
        self.mesh = distributed.data_mesh(self.devices)
        self.built: dict[tuple, Built] = {}
        self.kept: dict[tuple, Prepared] = {}
        self.compiled: dict[tuple, tuple] = {}  # compiled steps (code only) and their analyses
        self.deferred: list[tuple[str, str, int]] = []  # (case, dtype, batch) to retry with remat
        self.wall_by_case: dict[str, float] = {}
        env = common.environment()
        env["device_memory"] = device_memory(self.device)
        self.payload = {"benchmark": "accelerator_suite", "environment": env, "args": vars(args),
                        "peak_tflops": {}, "results": [], "searches": [], "profile": None,
                        "gru_unroll": None, "input_pipeline": None, "skipped": [], "complete": False}
        for dtype in args.dtypes:
            flag = args.peak_tflops
            value = flag if flag is not None else peak_tflops_for(env["device_kind"], dtype)
            self.payload["peak_tflops"][dtype] = {
                "tflops": value, "source": "--peak_tflops" if flag is not None else
                ("device table" if value is not None else f"unknown device kind {env['device_kind']!r}")}

    # -------------------------------------------------------------------------- output
    def write(self) -> None:
        """Rewrites ``--out`` (atomically: a killed run leaves the previous complete file)."""
        self.payload["budget"] = {"seconds": self.budget.seconds, "used_s": self.budget.used()}
        self.payload["table_markdown"] = markdown_table(self.payload)
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(self.payload, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, out)

    def skip(self, item: str, reason: str) -> None:
        self.payload["skipped"].append({"item": item, "reason": reason})
        print(f"  skip {item}: {reason}", flush=True)

    def estimate(self, case: str) -> float:
        """Expected seconds of one measurement of ``case``: its last one, else the slowest seen."""
        if case in self.wall_by_case:
            return self.wall_by_case[case]
        return max(self.wall_by_case.values(), default=0.0)

    def budget_refusal(self, seconds: float) -> str | None:
        left = self.budget.left()
        if left < seconds or left <= 0:
            return f"budget: needs ~{seconds:.0f} s, {max(left, 0):.0f} s of {self.budget.seconds:.0f} s left"
        return None

    # -------------------------------------------------------------------------- one measurement
    def build(self, case: str, dtype: str, remat: bool, unroll: int | None = None) -> Built:
        key = (case, dtype, remat, unroll)
        if key not in self.built:
            config = train_step.stage_config(case, tiny=self.args.tiny, dtype=dtype)
            config.model.remat = remat
            with gru_unroll(unroll):
                run = Run(config, self.mesh, stage=train_step.case_stage(case, config))
            self.built[key] = Built(config, run, run.train_step, train_step.example_spec(case, config), self.mesh)
        return self.built[key]

    def memory_limit(self) -> int | None:
        if self.args.memory_limit_gb is not None:
            return int(self.args.memory_limit_gb * 2**30)
        return device_memory(self.device).get("bytes_limit")

    def prepare(self, case: str, dtype: str, batch: int, *, remat: bool,
                unroll: int | None = None) -> tuple[Prepared | None, dict]:
        """Traces and compiles the step for a per-device ``batch``: (prepared or None, record)."""
        start = time.perf_counter()
        built = self.build(case, dtype, remat, unroll)
        clips = batch * len(self.devices)
        record = {"case": case, "dtype": dtype, "batch": batch, "global_batch": clips, "remat": remat,
                  "gru_unroll": gru.DEFAULT_UNROLL if unroll is None else unroll,
                  "devices": len(self.devices), "stage": built.config.stage,
                  "clip_samples": built.spec.clip_samples, "rows_per_clip": max(built.spec.rows, 1)}
        host_batch = train_step.random_batch(built.spec, clips, seed=built.config.seed)
        abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in host_batch.items()}
        key = (case, dtype, batch, remat, unroll)
        if key in self.compiled:  # e.g. a fixed batch that the search probed: compile once
            compiled, fields = self.compiled[key]
            record.update(fields, compile_cached=True)
        else:
            try:
                traced = built.step_fn.trace(built.run.abstract_state, abstract_batch)
                record["gflops_matmul"] = common.jaxpr_matmul_flops(traced.jaxpr.jaxpr) / 1e9
                compile_start = time.perf_counter()
                compiled = traced.lower().compile()
                record["compile_s"] = time.perf_counter() - compile_start
            except Exception as error:  # noqa: BLE001 (only out-of-memory is expected; others re-raise)
                if not is_out_of_memory(error):
                    raise
                record.update(fits=False, reason=f"out of memory at compile: {str(error)[:300]}",
                              wall_s=time.perf_counter() - start)
                return None, record
            record["gflops_xla"] = None if (f := common.xla_flops(compiled)) is None else f / 1e9
            record["xla_memory"] = common.memory_stats(compiled)
            self.compiled[key] = (compiled, {k: record[k] for k in ("gflops_matmul", "compile_s", "gflops_xla",
                                                                      "xla_memory")})
        total = record["xla_memory"].get("total_bytes")
        limit = self.memory_limit()
        record["memory_limit_bytes"] = limit
        record["wall_s"] = time.perf_counter() - start
        if limit is not None and total is not None and total > limit:
            record.update(fits=False, reason=f"XLA memory analysis {total / 2**30:.3f} GiB > "
                                             f"limit {limit / 2**30:.3f} GiB")
            return None, record
        return Prepared(built, compiled, host_batch), record

    def execute(self, prepared: Prepared, record: dict, *, steps: int, profile_dir: str | None = None) -> dict:
        """Runs the prepared step: a warm-up, then ``steps`` timed steps (0: the warm-up only, to
        check that it fits), or with ``profile_dir`` ``steps`` steps under ``jax.profiler``."""
        start = time.perf_counter()
        built = prepared.built
        before = device_memory(self.device)
        holder = {}
        try:
            holder["state"] = built.run.init_state()
            batch = jax.device_put(prepared.batch, distributed.batch_sharding(built.mesh))

            def one_step():
                holder["state"], holder["metrics"] = prepared.compiled(holder["state"], batch)
                return holder["state"], holder["metrics"]

            if profile_dir is not None:
                jax.block_until_ready(one_step())
                with jax.profiler.trace(profile_dir, create_perfetto_trace=True):
                    for _ in range(steps):
                        jax.block_until_ready(one_step())
                timing = None
            elif steps == 0:
                jax.block_until_ready(one_step())
                timing = None
            else:
                timing = common.time_calls(one_step, repeats=steps, warmup=1)
            loss = float(jax.device_get(holder["metrics"]["loss"]))
        except Exception as error:  # noqa: BLE001
            if not is_out_of_memory(error):
                raise
            record.update(fits=False, reason=f"out of memory at run time: {str(error)[:300]}")
            return record
        finally:
            holder.clear()
            gc.collect()
        if not np.isfinite(loss):
            raise FloatingPointError(f"{record['case']} batch {record['batch']}: non-finite loss {loss}")
        after = device_memory(self.device)
        record.update(fits=True, loss=loss)
        if "peak_bytes_in_use" in after:
            # The allocator's peak is a process-wide high-water mark: it belongs to this step
            # only if the step raised it.
            record["device_peak_bytes"] = after["peak_bytes_in_use"]
            record["device_peak_is_this_step"] = after["peak_bytes_in_use"] > before.get("peak_bytes_in_use", 0)
        if timing is not None:
            record.update(steps=steps, min_step_s=timing.min_wall_s, step_s_all=timing.wall_s)
            add_throughput(record, timing.median_wall_s,
                           self.payload["peak_tflops"].get(record["dtype"], {}).get("tflops"))
            self.wall_by_case[record["case"]] = record.get("wall_s", 0.0) + time.perf_counter() - start
        record["wall_s"] = record.get("wall_s", 0.0) + time.perf_counter() - start
        return record

    def measure(self, case: str, dtype: str, batch: int, *, remat: bool, role: str,
                unroll: int | None = None, keep: bool = False) -> dict:
        """Compiles, runs and times one (case, dtype, batch, remat); appends the record."""
        prepared, record = self.prepare(case, dtype, batch, remat=remat, unroll=unroll)
        if prepared is not None:
            record = self.execute(prepared, record, steps=self.args.steps)
            if keep and record["fits"]:
                self.kept[(case, dtype, remat, batch, unroll)] = prepared
        record["role"] = role
        self.wall_by_case.setdefault(case, record["wall_s"])
        self.payload["results"].append(record)
        self.report(record)
        self.write()
        return record

    def report(self, r: dict) -> None:
        what = f"{r['case']} {r['dtype']} batch {r['batch']}{' remat' if r['remat'] else ''} ({r['role']})"
        if not r.get("fits"):
            print(f"  {what}: does not fit: {r['reason'][:120]}", flush=True)
        elif r["role"] == "search_probe":
            print(f"  {what}: fits", flush=True)
        elif "step_s" in r:
            mfu = "-" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%"
            print(f"  {what}: {r['step_s']:.4f} s/step, {r['examples_per_s']:.1f} examples/s, MFU {mfu}, "
                  f"compile {r['compile_s']:.1f} s", flush=True)

    # -------------------------------------------------------------------------- plan items
    def fixed_batch(self, case: str, dtype: str, batch: int) -> None:
        item = f"{case} {dtype} batch {batch}"
        if (why := self.budget_refusal(self.estimate(case))):
            return self.skip(item, why)
        record = self.measure(case, dtype, batch, remat=False, role="fixed", keep=case == self.args.profile_case)
        if not record["fits"]:
            if (why := self.budget_refusal(self.estimate(case))):
                return self.skip(item + " remat", why)
            self.measure(case, dtype, batch, remat=True, role="remat_retry")

    def largest_batch(self, case: str, dtype: str) -> None:
        """Searches the largest fitting per-device batch, times it, and retries the first batch
        that did not fit with remat."""
        item = f"{case} {dtype} largest batch"
        done = [r for r in self.payload["results"]
                if (r["case"], r["dtype"], r["remat"], r["gru_unroll"]) == (case, dtype, False, gru.DEFAULT_UNROLL)]
        fitting = max((r["batch"] for r in done if r["fits"]), default=0)
        failing = min((r["batch"] for r in done if not r["fits"]), default=None)
        limit = self.memory_limit()
        fitted = [r for r in done if r["fits"] and r.get("xla_memory", {}).get("total_bytes")]
        points = [(r["batch"], r["xla_memory"]["total_bytes"]) for r in fitted]
        if len(points) == 1 and fitted[0]["xla_memory"].get("alias_bytes"):
            # One measured batch: the donated state (the aliased bytes) is the memory at batch 0.
            points.append((0, fitted[0]["xla_memory"]["alias_bytes"]))
        guess = None if limit is None else predicted_batch(points, limit)
        probes: dict[int, dict] = {}
        best: dict = {}

        def fits(batch: int) -> bool:
            prepared, record = self.prepare(case, dtype, batch, remat=False)
            if prepared is not None:
                record = self.execute(prepared, record, steps=0)
            record.setdefault("role", "search_probe")
            self.wall_by_case[case] = max(self.wall_by_case.get(case, 0.0), record["wall_s"])
            probes[batch] = record
            self.report(record)
            if record["fits"] and batch > best.get("batch", 0):
                best.update(batch=batch, prepared=prepared)
            return record["fits"]

        search = largest_fitting(fits, fitting=fitting, failing=failing, start=min(self.args.batches_fixed or [2]),
                                 max_batch=self.args.max_batch, tolerance=self.args.search_tolerance, guess=guess,
                                 may_probe=lambda: self.budget_refusal(self.estimate(case)))
        entry = {"case": case, "dtype": dtype, "largest_fitting": search.largest,
                 "smallest_not_fitting": search.smallest_failing, "complete": search.complete,
                 "stopped": search.stopped, "guess": guess, "memory_limit_bytes": limit,
                 "known_fitting": fitting, "known_failing": failing,
                 "probes": [{k: probes[p["batch"]].get(k) for k in ("batch", "fits", "reason", "wall_s", "compile_s")}
                            | {"xla_total_bytes": probes[p["batch"]].get("xla_memory", {}).get("total_bytes")}
                            for p in search.probes]}
        self.payload["searches"].append(entry)
        self.write()
        print(f"  {item}: {search.largest} ({search.stopped})", flush=True)
        if not search.complete and not search.probes:
            self.skip(item, search.stopped)
        if search.largest > 0 and not search.complete:
            self.skip(f"{item}: timing {search.largest}", f"search stopped: {search.stopped}")
        elif search.largest > 0:
            if best.get("batch") == search.largest:
                # Time the probe's compiled step instead of compiling it again.
                record = dict(probes[search.largest])
                record.pop("reason", None)
                record = self.execute(best["prepared"], record, steps=self.args.steps)
                record["role"] = "largest"
                self.payload["results"].append(record)
                self.report(record)
                if case == self.args.profile_case:
                    self.kept[(case, dtype, False, search.largest, None)] = best["prepared"]
            else:  # a fixed batch, already timed
                timed = next(r for r in done if r["batch"] == search.largest and r["fits"])
                self.payload["results"].append(dict(timed, role="largest"))
            best.clear()
            self.write()
        if search.smallest_failing is not None:
            self.deferred.append((case, dtype, search.smallest_failing))

    def remat_retries(self, dtype: str) -> None:
        """The first batch each search found not to fit, with remat."""
        for case, batch_dtype, batch in [d for d in self.deferred if d[1] == dtype]:
            if (why := self.budget_refusal(self.estimate(case))):
                self.skip(f"{case} {dtype} batch {batch} remat", why)
            else:
                self.measure(case, dtype, batch, remat=True, role="remat_retry")

    def largest_timed(self, case: str, dtype: str) -> dict | None:
        rows = [r for r in self.payload["results"] if (r["case"], r["dtype"], r["remat"]) == (case, dtype, False)
                and r.get("step_s") is not None and r["gru_unroll"] == gru.DEFAULT_UNROLL]
        return max(rows, key=lambda r: r["batch"], default=None)

    def profile(self, case: str, dtype: str) -> None:
        target = self.largest_timed(case, dtype)
        item = f"profile {case} {dtype}"
        if target is None:
            return self.skip(item, f"no timed {case} {dtype} step to profile")
        # Tracing, writing and parsing the trace of a GRU step (a few kernels per scan step) is
        # slower than the step itself: allow half a minute.
        if (why := self.budget_refusal(target["step_s"] * (self.args.profile_steps + 1) + 30)):
            return self.skip(item, why)
        prepared = self.kept.get((case, dtype, False, target["batch"], None))
        if prepared is None:
            prepared, _ = self.prepare(case, dtype, target["batch"], remat=False)
        if prepared is None:
            return self.skip(item, f"batch {target['batch']} no longer compiles within the memory limit")
        trace_dir = str(Path(self.args.out).with_suffix("").as_posix() + "_trace")
        record = {"case": case, "dtype": dtype, "batch": target["batch"], "trace_dir": trace_dir,
                  "steps": self.args.profile_steps}
        try:
            self.execute(prepared, dict(target), steps=self.args.profile_steps, profile_dir=trace_dir)
            record.update(profile_summary.summarize(trace_dir, prepared.compiled.as_text(),
                                                    steps=self.args.profile_steps, top=self.args.profile_top))
            print(profile_summary.format_summary(record), flush=True)
        except Exception as error:  # noqa: BLE001 (a missing profiler must not lose the other numbers)
            record["error"] = f"{type(error).__name__}: {error}"
            print(f"  {item}: failed: {record['error'][:300]}", flush=True)
        self.payload["profile"] = record
        self.write()

    def unroll_comparison(self, case: str, dtype: str) -> None:
        target = self.largest_timed(case, dtype)
        item = f"{case} {dtype} gru_unroll {self.args.gru_unroll}"
        if target is None:
            return self.skip(item, f"no timed {case} {dtype} step to compare with")
        if (why := self.budget_refusal(self.estimate(case))):
            return self.skip(item, why)
        record = self.measure(case, dtype, target["batch"], remat=False, role="gru_unroll",
                              unroll=self.args.gru_unroll)
        self.payload["gru_unroll"] = {
            "case": case, "dtype": dtype, "batch": target["batch"],
            "before": {"gru_unroll": target["gru_unroll"], "step_s": target["step_s"], "mfu": target.get("mfu")},
            "after": {"gru_unroll": record["gru_unroll"], "step_s": record.get("step_s"), "mfu": record.get("mfu")},
            "speedup": (target["step_s"] / record["step_s"]) if record.get("step_s") else None}
        self.write()

    def input_pipeline(self) -> None:
        args = self.args
        if not args.data_dir:
            self.payload["input_pipeline"] = {"skipped": "no --data_dir (a dataset built with "
                                                         "`python -m data_pipelines.build_slakh`)"}
            return self.skip("input pipeline", self.payload["input_pipeline"]["skipped"])
        if (why := self.budget_refusal(args.input_seconds_estimate)):
            self.payload["input_pipeline"] = {"skipped": why}
            return self.skip("input pipeline", why)
        config = train_step.stage_config("ts_train", tiny=args.tiny, dtype=DTYPE_ORDER[0])
        workers = args.input_workers or os.cpu_count() or 1
        try:
            from benchmarks import input_pipeline

            numbers = input_pipeline.measure_pipeline(
                args.data_dir, args.input_split, clips=args.input_clips, num_positive=train_step.ROWS_PER_CLIP,
                num_negative=0, steps=args.input_batches, warmup=2, workers=workers,
                clip_seconds=config.data.clip_seconds)
        except Exception as error:  # noqa: BLE001 (a bad dataset must not lose the step numbers)
            self.payload["input_pipeline"] = {"error": f"{type(error).__name__}: {error}", "data_dir": args.data_dir}
            print(f"  input pipeline failed: {self.payload['input_pipeline']['error'][:300]}", flush=True)
            return self.write()
        self.payload["input_pipeline"] = dict(numbers, clips=args.input_clips, workers=workers,
                                              rows_per_clip=train_step.ROWS_PER_CLIP,
                                              clip_seconds=config.data.clip_seconds, data_dir=args.data_dir)
        print(f"  input pipeline (joint shapes, {args.input_clips} clips x {train_step.ROWS_PER_CLIP} row, "
              f"{workers} workers): {numbers['clips_per_s']:.1f} examples/s", flush=True)
        self.write()

    def compare_input(self) -> None:
        """Input examples/s beside the fastest timed joint step's consumption (the fastest timed
        step of any case where no joint step was timed)."""
        pipe = self.payload["input_pipeline"] or {}
        timed = [r for r in self.payload["results"] if r.get("step_s") is not None]
        joint = [r for r in timed if r["case"] == "ts_train"]
        fastest = max(joint or timed, key=lambda r: r["examples_per_s"], default=None)
        comparison = {"input_examples_per_s": pipe.get("clips_per_s"),
                      "step": None if fastest is None else {
                          k: fastest[k] for k in ("case", "dtype", "batch", "remat", "examples_per_s")}}
        if comparison["input_examples_per_s"] and fastest is not None:
            ratio = comparison["input_examples_per_s"] / fastest["examples_per_s"]
            comparison.update(input_over_step=ratio, keeps_up_2x=ratio >= 2.0)
            print(f"input {comparison['input_examples_per_s']:.1f} examples/s vs the fastest "
                  f"{fastest['case']} step {fastest['examples_per_s']:.1f} examples/s (batch {fastest['batch']}, "
                  f"{fastest['dtype']}): {ratio:.2f}x", flush=True)
        self.payload["input_vs_step"] = comparison

    # -------------------------------------------------------------------------- the plan
    def plan(self) -> list[tuple[str, Callable[[], None]]]:
        """(name, action) in priority order. Per dtype: the profiled case at the large batches
        (>= 32) and its largest batch, then (first dtype only) its profile and the input pipeline;
        the other cases at the large batches; the GRU-unroll comparison (first dtype); the other
        cases' largest batches; remat retries of the batches the searches found not to fit; the
        small batches (< 32) of every case."""
        args = self.args
        items: list[tuple[str, Callable[[], None]]] = []
        large = [b for b in args.batches_fixed if b >= 32]
        small = [b for b in args.batches_fixed if b < 32]
        lead = args.profile_case if args.profile_case in args.cases else args.cases[0]
        others = [c for c in args.cases if c != lead]

        def fixed(case, dtype, batches):
            for b in batches:
                items.append((f"{case} {dtype} batch {b}", lambda c=case, t=dtype, b=b: self.fixed_batch(c, t, b)))

        def largest(case, dtype):
            if args.search:
                items.append((f"{case} {dtype} largest batch", lambda c=case, t=dtype: self.largest_batch(c, t)))

        for d, dtype in enumerate(args.dtypes):
            fixed(lead, dtype, large)
            largest(lead, dtype)
            if d == 0:
                if args.profile:
                    items.append((f"profile {lead} {dtype}", lambda c=lead, t=dtype: self.profile(c, t)))
                items.append(("input pipeline", self.input_pipeline))
            for case in others:
                fixed(case, dtype, large)
            if d == 0 and args.gru_unroll is not None:
                items.append((f"{lead} {dtype} gru_unroll", lambda c=lead, t=dtype: self.unroll_comparison(c, t)))
            for case in others:
                largest(case, dtype)
            if args.search:
                items.append((f"{dtype} remat retries", lambda t=dtype: self.remat_retries(t)))
            for case in args.cases:
                fixed(case, dtype, small)
        return items

    def run(self) -> dict:
        for name, action in self.plan():
            print(f"[{self.budget.used():6.1f} s] {name}", flush=True)
            action()
        self.compare_input()
        self.payload["complete"] = not self.payload["skipped"]
        self.write()
        return self.payload


# ------------------------------------------------------------------------------ table
TABLE_COLUMNS = ("card", "jax", "case", "batch", "dtype", "remat", "step s", "examples/s", "MFU %",
                 "peak memory GiB", "compile s")


def _gib(value) -> str:
    return f"{value / 2**30:.2f}"


def table_rows(payload: dict) -> list[list[str]]:
    """One row per timed or not-fitting measurement (search probes are in ``searches``)."""
    env = payload["environment"]
    rows = []
    for r in payload["results"]:
        if r["role"] == "search_probe":
            continue
        batch = f"{r['batch']}" + (" (largest)" if r["role"] == "largest" else "")
        if r["gru_unroll"] != gru.DEFAULT_UNROLL:
            batch += f" unroll {r['gru_unroll']}"
        if not r.get("fits"):
            rows.append([env["device_kind"], env["jax"], r["case"], batch, r["dtype"], "yes" if r["remat"] else "no",
                         "does not fit", "-", "-", "-", "-" if r.get("compile_s") is None else f"{r['compile_s']:.1f}"])
            continue
        if r.get("device_peak_bytes") is not None and r.get("device_peak_is_this_step"):
            memory = _gib(r["device_peak_bytes"])
        elif r.get("xla_memory", {}).get("total_bytes") is not None:
            memory = _gib(r["xla_memory"]["total_bytes"]) + " (XLA)"  # the allocator's peak is another step's
        else:
            memory = "-"
        rows.append([env["device_kind"], env["jax"], r["case"], batch, r["dtype"], "yes" if r["remat"] else "no",
                     f"{r['step_s']:.4f}", f"{r['examples_per_s']:.2f}",
                     "-" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}", memory, f"{r['compile_s']:.1f}"])
    return rows


def markdown_table(payload: dict) -> str:
    """The results as a markdown table (columns: :data:`TABLE_COLUMNS`)."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(payload)]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the JSON file to write (rewritten after every item)")
    parser.add_argument("--cases", default="all", help=f"comma-separated from {', '.join(CASE_ORDER)}, or all")
    parser.add_argument("--dtypes", default=",".join(DTYPE_ORDER), help="comma-separated compute dtypes, in order")
    parser.add_argument("--batches", default="2,8,32,max", help="per-device batches; 'max' = the largest that fits")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement (median), after 1 warm-up")
    parser.add_argument("--budget_seconds", type=float, default=420.0,
                        help="start no item expected to end later than this many seconds after the start")
    parser.add_argument("--peak_tflops", type=float, default=None,
                        help="the device's peak TFLOP/s (overrides the device table, used for every dtype)")
    parser.add_argument("--devices", type=int, default=1, help="devices of the data mesh (batches are per device)")
    parser.add_argument("--max_batch", type=int, default=1024, help="largest per-device batch the search tries")
    parser.add_argument("--search_tolerance", type=float, default=0.125,
                        help="the search stops when the gap between fitting and not fitting is <= this x batch")
    parser.add_argument("--memory_limit_gb", type=float, default=None,
                        help="treat steps whose XLA memory analysis exceeds this many GiB as not fitting "
                             "(default: the device allocator's limit, where it has one)")
    parser.add_argument("--no_profile", dest="profile", action="store_false", help="skip the profile")
    parser.add_argument("--profile_case", default="ts_train", help="the case to profile")
    parser.add_argument("--profile_steps", type=int, default=1,
                        help="steps inside the profiler trace (after an untraced warm-up)")
    parser.add_argument("--profile_top", type=int, default=15, help="top ops listed")
    parser.add_argument("--gru_unroll", type=int, default=None,
                        help=f"also time the profiled case with the GRU scans unrolled this many times "
                             f"(default {gru.DEFAULT_UNROLL}; same numerics)")
    parser.add_argument("--data_dir", default=None, help="a built slakh2100 dataset: measure the input pipeline")
    parser.add_argument("--input_split", default="train")
    parser.add_argument("--input_clips", type=int, default=32, help="clips per input batch")
    parser.add_argument("--input_batches", type=int, default=10, help="input batches timed after 2 warm-up")
    parser.add_argument("--input_workers", type=int, default=None, help="example builders (default: CPU count)")
    parser.add_argument("--input_seconds_estimate", type=float, default=30.0,
                        help="seconds the input measurement needs from the budget")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny widths and 1-s clips: checks the code path on CPU (numbers meaningless)")
    args = parser.parse_args(argv)
    args.cases = common.parse_csv(args.cases, CASE_ORDER, "--cases")
    args.dtypes = common.parse_csv(args.dtypes, DTYPE_ORDER, "--dtypes")
    fixed, search = [], False
    for item in filter(None, (x.strip() for x in args.batches.split(","))):
        if item == MAX:
            search = True
        elif item.isdigit() and int(item) > 0:
            fixed.append(int(item))
        else:
            parser.error(f"--batches: {item!r} is neither a positive integer nor 'max'")
    if not fixed and not search:
        parser.error("--batches: give at least one batch or 'max'")
    args.batches_fixed, args.search = sorted(set(fixed)), search
    for name in ("steps", "devices", "max_batch", "profile_steps", "input_clips", "input_batches"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.devices > jax.device_count():
        parser.error(f"--devices {args.devices}: only {jax.device_count()} device(s)")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        parser.error("--peak_tflops must be > 0")
    if args.gru_unroll is not None and args.gru_unroll < 1:
        parser.error("--gru_unroll must be >= 1")
    if args.profile and args.profile_case not in args.cases:
        parser.error(f"--profile_case {args.profile_case} is not among --cases (or pass --no_profile)")
    return args


def main(argv: list[str] | None = None, *, clock: Callable[[], float] = time.perf_counter) -> dict:
    """Runs the suite; returns the payload written to ``--out``."""
    budget = Budget(float("inf"), clock)  # replaced below; the clock starts before argument checks
    args = parse_args(argv)
    budget.seconds = args.budget_seconds
    suite = Suite(args, budget)
    env = suite.payload["environment"]
    print(f"accelerator suite: {env['device_kind']} x{len(suite.devices)} ({env['platform']}), jax {env['jax']}, "
          f"{env['cpu_count']} CPUs, budget {args.budget_seconds:.0f} s, "
          f"{'TINY models, 1-s clips' if args.tiny else '10-s clips'}", flush=True)
    for dtype, peak in suite.payload["peak_tflops"].items():
        print(f"  peak {dtype}: {peak['tflops']} TFLOP/s ({peak['source']})", flush=True)
    payload = suite.run()
    print()
    print(payload["table_markdown"])
    print(f"\nstep s: median of {args.steps} steps after a warm-up; examples/s: global batch / step s; MFU: "
          "matmul+conv FLOPs (scan bodies x trip count) / step s / peak; peak memory: the device allocator's "
          "peak during the step, else (XLA) XLA's memory analysis of the step: on CPU, or where the allocator's "
          "process-wide peak came from an earlier, larger step.")
    if payload["skipped"]:
        print(f"skipped ({len(payload['skipped'])}): " + "; ".join(s["item"] for s in payload["skipped"]))
    print(f"wrote {args.out} ({payload['budget']['used_s']:.0f} s of {args.budget_seconds:.0f} s)")
    return payload


if __name__ == "__main__":
    main()
