"""Shared measuring and reporting helpers of the model benchmarks (``forward.py``, ``train_step.py``).

What a benchmark case reports, and where each number comes from:
  * wall and process-CPU seconds per call: median over N calls after warm-up (:func:`time_calls`);
    process CPU time sums all threads of this process, so it is steadier than wall time on a
    shared machine;
  * compile seconds: ``lower`` + ``compile`` of the jitted function (:func:`compile_function`);
  * FLOPs: XLA's ``cost_analysis()`` of the compiled program (``flops_xla``). XLA counts the body
    of a ``while``/``scan`` loop ONCE, whatever its trip count, so for the GRUs (1001-step scans)
    it undercounts. :func:`matmul_flops` therefore also counts the matmul and convolution FLOPs of
    the traced jaxpr with every ``scan`` body multiplied by its length (``flops_matmul``): the
    usual "model FLOPs" for utilisation;
  * memory: XLA's ``memory_analysis()`` (argument / output / temp / alias bytes) and the process
    peak RSS (VmHWM), reset before each case where Linux allows it (:func:`reset_peak_rss`).

Every benchmark script applies the CPU XLA flags (``jointist_jax.xla_flags``) itself before jax loads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jointist_jax import stages

import jax
from jax.extend import core as jex_core



# --------------------------------------------------------------------------------- timing
@dataclasses.dataclass
class Timing:
    """Per-call wall and process-CPU seconds of the measured (post-warm-up) calls."""

    wall_s: list[float]
    cpu_s: list[float]

    @property
    def median_wall_s(self) -> float:
        return statistics.median(self.wall_s)

    @property
    def min_wall_s(self) -> float:
        return min(self.wall_s)

    @property
    def median_cpu_s(self) -> float:
        return statistics.median(self.cpu_s)


def time_calls(call: Callable[[], Any], *, repeats: int, warmup: int = 1) -> Timing:
    """Times ``call()`` (blocking on its result) ``repeats`` times after ``warmup`` untimed calls."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    for _ in range(warmup):
        jax.block_until_ready(call())
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(call())
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return Timing(wall, cpu)


# --------------------------------------------------------------------------------- compilation
@dataclasses.dataclass
class Compiled:
    """A compiled function with its compile time, XLA FLOPs and memory analysis."""

    executable: Any
    compile_s: float
    flops_xla: float | None
    memory: dict[str, int]


def xla_flops(executable) -> float | None:
    """FLOPs of one call from XLA's cost analysis (loop bodies counted once), or None if absent."""
    analysis = executable.cost_analysis()
    # Older jaxlibs return one dict per device program; 0.10 returns a dict.
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    flops = (analysis or {}).get("flops")
    return None if flops is None or flops < 0 else float(flops)


_MEMORY_FIELDS = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
                  "alias_size_in_bytes", "generated_code_size_in_bytes")


def memory_stats(executable) -> dict[str, int]:
    """XLA's memory analysis of a compiled program: argument/output/temp/alias/code bytes.

    ``total_bytes`` = argument + output + temp - alias (donated inputs alias outputs), the
    program's live device memory without the runtime's own overhead.
    """
    analysis = executable.memory_analysis()
    if analysis is None:
        return {}
    stats = {name.removesuffix("_size_in_bytes") + "_bytes": int(getattr(analysis, name))
             for name in _MEMORY_FIELDS}
    stats["total_bytes"] = (stats["argument_bytes"] + stats["output_bytes"] + stats["temp_bytes"]
                            - stats["alias_bytes"])
    return stats


def compile_function(jitted, *args) -> Compiled:
    """Lowers and compiles ``jitted`` for ``args`` (arrays or ShapeDtypeStructs), timing both."""
    start = time.perf_counter()
    executable = jitted.lower(*args).compile()
    compile_s = time.perf_counter() - start
    return Compiled(executable, compile_s, xla_flops(executable), memory_stats(executable))


# --------------------------------------------------------------------------------- model FLOPs
def _sub_jaxprs(params: dict) -> list:
    found = []
    for value in params.values():
        items = value if isinstance(value, (tuple, list)) else (value,)
        for item in items:
            if isinstance(item, jex_core.ClosedJaxpr):
                found.append(item.jaxpr)
            elif isinstance(item, jex_core.Jaxpr):
                found.append(item)
    return found


def _dot_flops(eqn) -> float:
    (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
    lhs_shape = eqn.invars[0].aval.shape
    depth = math.prod(lhs_shape[d] for d in lhs_contracting)
    return 2.0 * math.prod(eqn.outvars[0].aval.shape) * depth


def _conv_flops(eqn) -> float:
    # Each output element is a dot product over the kernel's spatial taps and its input channels
    # (already divided by the group count in the kernel's shape).
    rhs_shape = eqn.invars[1].aval.shape
    out_channel_dim = eqn.params["dimension_numbers"].rhs_spec[0]
    per_output = math.prod(rhs_shape) // rhs_shape[out_channel_dim]
    return 2.0 * math.prod(eqn.outvars[0].aval.shape) * per_output


def jaxpr_matmul_flops(jaxpr) -> float:
    """Matmul + convolution FLOPs of a jaxpr; ``scan`` bodies count ``length`` times, ``cond``
    its costliest branch, ``while`` bodies once (unknown trip count)."""
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "cond":
            total += max((jaxpr_matmul_flops(b.jaxpr) for b in eqn.params["branches"]), default=0.0)
        else:
            inner = sum(jaxpr_matmul_flops(sub) for sub in _sub_jaxprs(eqn.params))
            total += inner * (eqn.params["length"] if name == "scan" else 1)
    return total


def matmul_flops(fn: Callable, *args) -> float:
    """Matmul + convolution FLOPs of one call of ``fn(*args)`` (arrays or ShapeDtypeStructs)."""
    return jaxpr_matmul_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def mfu(flops_per_step: float, seconds_per_step: float, peak_tflops: float) -> float:
    """Model FLOP utilisation: achieved FLOP/s over the device's peak (``peak_tflops`` x 1e12)."""
    if peak_tflops <= 0 or seconds_per_step <= 0:
        raise ValueError(f"peak_tflops and seconds_per_step must be > 0, got {peak_tflops}, {seconds_per_step}")
    return flops_per_step / seconds_per_step / (peak_tflops * 1e12)


# --------------------------------------------------------------------------------- memory
def reset_peak_rss() -> bool:
    """Resets this process's peak RSS (Linux ``clear_refs`` 5); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (VmHWM; since the last reset on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KB on Linux


# --------------------------------------------------------------------------------- reporting
def ratio(value: float | None, reference: float | None) -> float | None:
    """value / reference, or None when either is missing."""
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    devices = jax.devices()
    return {"jax": jax.__version__, "platform": devices[0].platform, "device_kind": devices[0].device_kind,
            "devices": len(devices), "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


def _cell(value, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return format(value, fmt)


def format_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """A fixed-width text table: ``columns`` are ``(key, header, format spec)``; None prints '-'."""
    cells = [[header for _, header, _ in columns]]
    cells += [[_cell(row.get(key), fmt) for key, _, fmt in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = []
    for n, line in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: str, payload: dict) -> None:
    """Writes ``payload`` as indented JSON to ``path`` (parent folders created)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """``--dtype``, ``--json`` and ``--tiny``, shared by the model benchmarks."""
    parser.add_argument("--dtype", choices=sorted(stages.DTYPES), default="float32",
                        help="compute dtype of the models (parameters stay float32)")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write every number to this JSON file")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny widths and a 1-s clip: checks the code path in seconds (numbers meaningless)")


def parse_csv(text: str, choices: Sequence[str], flag: str) -> list[str]:
    """Comma-separated names, each checked against ``choices`` (``all`` = every choice)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(choices)
    unknown = [n for n in names if n not in choices]
    if unknown or not names:
        raise SystemExit(f"{flag}: unknown or empty {unknown or text!r}; choose from {', '.join(choices)} or 'all'")
    return names
