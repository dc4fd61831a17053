r"""Where a compiled step spends its device time: a ``jax.profiler`` trace summarised by HLO op.

:func:`summarize` reads the trace that ``jax.profiler.trace(dir, create_perfetto_trace=True)``
wrote under ``dir`` and the optimised HLO text of the profiled program (``compiled.as_text()``),
and returns the top ops by time and the share of op time per category:

  while_loop    ops inside a ``while`` body or condition (the GRU scans: the only loops of the
                train steps) and the loops' own bookkeeping
  convolution   convolutions (HLO ``convolution`` ops, cuDNN convolution custom calls, and fusions
                that contain one)
  fft           ``fft`` ops (the STFT of the log-mel front end and the separator, the iSTFT)
  optimizer     ops under the ``optimizer`` name scope (``jointist_jax.train.steps``)
  other         everything else (dense matmuls, elementwise fusions, copies, reductions, ...)

A category is given by the first rule that matches, in the order optimizer, fft, convolution,
while_loop: the categories are disjoint and their shares sum to at most 100 %.

Trace sources, in order: the ``*.xplane.pb`` read with ``jax.profiler.ProfileData`` (part of
jaxlib), else the ``perfetto_trace.json.gz``. Device planes (``/device:GPU:n``) are used when they
hold op events (their ``Stream`` lines), else the host planes (the CPU backend runs ops on host
threads). Op time is exclusive: an op event that encloses others on the same line (a CPU
``while`` thunk around its body's ops) is charged only the time not spent in them.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import json
import re
from pathlib import Path

CATEGORIES = ("while_loop", "convolution", "fft", "optimizer", "other")
OPTIMIZER_SCOPE = "optimizer"

_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_OPCODE = re.compile(r"\s([a-z][\w\-]*)\(")
_CALLED = re.compile(r"\b(?:calls|to_apply|condition|body|branch_computations|called_computations)="
                     r"(\{[^}]*\}|%?[\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_TARGET = re.compile(r'custom_call_target="([^"]*)"')
_MODULE = re.compile(r"^HloModule\s+([\w.\-]+)")


@dataclasses.dataclass
class HloOp:
    """One instruction of the optimised HLO: its computation, opcode, op_name and callees."""

    name: str
    computation: str
    opcode: str
    op_name: str
    custom_call_target: str
    called: tuple[str, ...]


def parse_hlo(text: str) -> tuple[str | None, dict[str, HloOp]]:
    """(module name, instructions by name) of an HLO module's text (``Compiled.as_text()``)."""
    module = None
    ops: dict[str, HloOp] = {}
    computation = None
    for line in text.splitlines():
        if module is None and (m := _MODULE.match(line)):
            module = m.group(1)
            continue
        if computation is None:
            if not line.startswith((" ", "\t")) and (m := _COMPUTATION.match(line)):
                computation = m.group(1)
            continue
        if line.strip() == "}":
            computation = None
            continue
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        name, rest = m.groups()
        opcode = _OPCODE.search(" " + rest)
        called = []
        for group in _CALLED.findall(rest):
            called += [c.strip().lstrip("%") for c in group.strip("{}").split(",") if c.strip()]
        op_name = _OP_NAME.search(rest)
        target = _TARGET.search(rest)
        ops[name] = HloOp(name, computation, opcode.group(1) if opcode else "", op_name.group(1) if op_name else "",
                          target.group(1) if target else "", tuple(called))
    return module, ops


def _is_conv(op: HloOp) -> bool:
    return op.opcode == "convolution" or (op.opcode == "custom-call" and "conv" in op.custom_call_target.lower())


def categorize(ops: dict[str, HloOp]) -> dict[str, str]:
    """The category (module docstring) of every instruction of :func:`parse_hlo`'s output."""
    by_computation: dict[str, list[HloOp]] = collections.defaultdict(list)
    for op in ops.values():
        by_computation[op.computation].append(op)

    # Computations run inside a loop: while bodies/conditions and everything they call.
    in_loop: set[str] = set()
    stack = [c for op in ops.values() if op.opcode == "while" for c in op.called]
    while stack:
        computation = stack.pop()
        if computation in in_loop:
            continue
        in_loop.add(computation)
        stack += [c for op in by_computation.get(computation, ()) for c in op.called]

    def contents(op: HloOp, seen: set[str]) -> list[HloOp]:
        found = [op]
        if op.opcode in ("fusion", "call", "custom-call", "async-start"):
            for computation in op.called:
                if computation not in seen:
                    seen.add(computation)
                    for inner in by_computation.get(computation, ()):
                        found += contents(inner, seen)
        return found

    categories = {}
    for op in ops.values():
        inside = contents(op, set())
        if f"/{OPTIMIZER_SCOPE}/" in f"/{op.op_name}/" or any(f"/{OPTIMIZER_SCOPE}/" in f"/{i.op_name}/"
                                                            for i in inside if i.opcode != "parameter"):
            category = "optimizer"
        elif any(i.opcode == "fft" for i in inside):
            category = "fft"
        elif any(_is_conv(i) for i in inside):
            category = "convolution"
        elif op.computation in in_loop or op.opcode == "while":
            category = "while_loop"
        else:
            category = "other"
        categories[op.name] = category
    return categories


# ------------------------------------------------------------------------------ trace events
@dataclasses.dataclass
class OpEvent:
    """One timed op execution: which HLO op, of which module, on which (plane, line), when."""

    hlo_op: str
    hlo_module: str | None
    track: tuple[str, str]
    start_us: float
    duration_us: float


_ANNOTATED_OP = re.compile(r"hlo_op=([\w.\-]+)")
_ANNOTATED_MODULE = re.compile(r"hlo_module=([\w.\-]+)")


def _op_of(stats: dict) -> tuple[str | None, str | None]:
    """(hlo_op, hlo_module) of an event: its own stats, else parsed from an annotation stat such as
    ``fusion.3:#hlo_op=fusion.3,hlo_module=jit_step#`` (GPU kernels carry their launch's)."""
    if "hlo_op" in stats:
        return str(stats["hlo_op"]), (None if stats.get("hlo_module") is None else str(stats["hlo_module"]))
    for value in stats.values():
        if isinstance(value, str) and (m := _ANNOTATED_OP.search(value)):
            module = _ANNOTATED_MODULE.search(value)
            return m.group(1), module.group(1) if module else None
    return None, None


_DERIVED_LINES = ("XLA Modules", "XLA Ops", "Steps", "Framework", "Source code", "XLA TraceMe",
                  "Launch Stats", "SparseCore")


def _is_device_plane(name: str) -> bool:
    return name.startswith("/device:") and not name.startswith("/device:CPU")


def _select_tracks(events: list[OpEvent]) -> list[OpEvent]:
    """Device planes' stream lines if any hold ops, else the host's (see the module docstring)."""
    device = [e for e in events if _is_device_plane(e.track[0])]
    if not device:
        return events
    streams = [e for e in device if e.track[1].startswith("Stream")]
    if streams:
        return streams
    ops_line = [e for e in device if e.track[1] == "XLA Ops"]
    if ops_line:
        return ops_line
    return [e for e in device if not e.track[1].startswith(_DERIVED_LINES)]


def events_from_xplane(path: Path) -> list[OpEvent]:
    """Op events (those with an ``hlo_op`` stat) of an ``.xplane.pb`` file."""
    import jax

    data = jax.profiler.ProfileData.from_file(str(path))
    events = []
    for plane in data.planes:
        for line in plane.lines:
            for event in line.events:
                op, module = _op_of(dict(event.stats))
                if op is None:
                    continue
                events.append(OpEvent(op, module, (plane.name, line.name), event.start_ns / 1e3,
                                      event.duration_ns / 1e3))
    return events


def events_from_perfetto(path: Path) -> list[OpEvent]:
    """Op events (``X`` events with an ``hlo_op`` argument) of a ``perfetto_trace.json.gz``."""
    with gzip.open(path, "rt") as f:
        trace = json.load(f)
    raw = trace["traceEvents"] if isinstance(trace, dict) else trace
    processes, threads = {}, {}
    for e in raw:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            processes[e.get("pid")] = e["args"]["name"]
        elif e.get("ph") == "M" and e.get("name") == "thread_name":
            threads[(e.get("pid"), e.get("tid"))] = e["args"]["name"]
    events = []
    for e in raw:
        if e.get("ph") != "X":
            continue
        op, module = _op_of(e.get("args") or {})
        if op is None:
            continue
        pid, tid = e.get("pid"), e.get("tid")
        track = (processes.get(pid, str(pid)), threads.get((pid, tid), str(tid)))
        events.append(OpEvent(op, module, track, float(e["ts"]), float(e.get("dur", 0.0))))
    return events


def find_trace_files(trace_dir: str | Path) -> tuple[Path | None, Path | None]:
    """(newest ``*.xplane.pb``, newest ``perfetto_trace.json.gz``) under ``trace_dir``."""
    root = Path(trace_dir)
    newest = lambda paths: max(paths, key=lambda p: p.stat().st_mtime) if paths else None  # noqa: E731
    return newest(list(root.rglob("*.xplane.pb"))), newest(list(root.rglob("perfetto_trace.json.gz")))


def load_events(trace_dir: str | Path) -> tuple[list[OpEvent], str]:
    """Op events of the trace under ``trace_dir`` and which file they came from."""
    xplane, perfetto = find_trace_files(trace_dir)
    errors = []
    if xplane is not None:
        try:
            events = events_from_xplane(xplane)
            if events:
                return events, str(xplane)
            errors.append(f"{xplane}: no op events")
        except (AttributeError, ImportError, RuntimeError, ValueError) as error:  # older jaxlib: no ProfileData
            errors.append(f"{xplane}: {error}")
    if perfetto is not None:
        events = events_from_perfetto(perfetto)
        if events:
            return events, str(perfetto)
        errors.append(f"{perfetto}: no op events")
    raise FileNotFoundError(f"no profiler trace with op events under {trace_dir}"
                            + (f" ({'; '.join(errors)})" if errors else ""))


def exclusive_durations(events: list[OpEvent]) -> list[float]:
    """Each event's duration minus the time of the events it encloses on the same track."""
    exclusive = [e.duration_us for e in events]
    by_track: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
    for i, e in enumerate(events):
        by_track[e.track].append(i)
    for indices in by_track.values():
        indices.sort(key=lambda i: (events[i].start_us, -events[i].duration_us))
        open_events: list[int] = []
        for i in indices:
            start = events[i].start_us
            while open_events and events[open_events[-1]].start_us + events[open_events[-1]].duration_us <= start:
                open_events.pop()
            if open_events:
                exclusive[open_events[-1]] -= events[i].duration_us
            open_events.append(i)
    return [max(x, 0.0) for x in exclusive]


def summarize(trace_dir: str | Path, hlo_text: str, *, steps: int, top: int = 15) -> dict:
    """Top ops and per-category shares of the profiled program's op time (module docstring).

    ``steps``: how many calls the trace covers; times are reported per call (milliseconds).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    module, ops = parse_hlo(hlo_text)
    categories = categorize(ops)
    events, source = load_events(trace_dir)
    events = [e for e in events if module is None or e.hlo_module in (None, module)]
    if not events:
        raise ValueError(f"the trace under {trace_dir} has no op events of module {module!r}")
    events = _select_tracks(events)
    per_op: dict[str, float] = collections.defaultdict(float)
    for e, us in zip(events, exclusive_durations(events)):
        per_op[e.hlo_op] += us
    total = sum(per_op.values())
    by_category = dict.fromkeys(CATEGORIES, 0.0)
    unmatched = 0.0
    lookup = lambda name: categories.get(name) or categories.get(name.replace("_", "."))  # noqa: E731
    for name, us in per_op.items():
        category = lookup(name)
        if category is None:
            unmatched += us
            category = "other"
        by_category[category] += us
    ranked = sorted(per_op.items(), key=lambda kv: -kv[1])[:top]
    top_ops = [{"op": name, "category": lookup(name) or "other",
                "opcode": ops[name].opcode if name in ops else "",
                "op_name": ops[name].op_name if name in ops else "",
                "ms_per_step": us / 1e3 / steps, "share": us / total if total else 0.0}
               for name, us in ranked]
    return {
        "source": source, "module": module, "steps": steps, "events": len(events),
        "tracks": sorted({" / ".join(e.track) for e in events}),
        # False: host threads' op events (the CPU backend; on an accelerator, launch times only).
        "device_time": any(_is_device_plane(e.track[0]) for e in events),
        "op_ms_per_step": total / 1e3 / steps,
        "category_ms_per_step": {k: v / 1e3 / steps for k, v in by_category.items()},
        "category_share": {k: (v / total if total else 0.0) for k, v in by_category.items()},
        "unmatched_share": unmatched / total if total else 0.0,
        "top_ops": top_ops,
    }


def format_summary(summary: dict) -> str:
    """A short text table of :func:`summarize`'s result."""
    lines = [f"profile ({summary['source'].rsplit('/', 1)[-1]}, {summary['events']} op events): "
             f"{summary['op_ms_per_step']:.2f} ms of {'device' if summary['device_time'] else 'host'} op time "
             f"per step; {100 * summary['unmatched_share']:.1f}% in ops not in the program's HLO"]
    lines.append("  " + "  ".join(f"{k} {100 * summary['category_share'][k]:.1f}%" for k in CATEGORIES))
    lines.append(f"  {'op':<40} {'category':<12} {'ms/step':>9} {'share':>7}  op_name")
    for row in summary["top_ops"]:
        lines.append(f"  {row['op'][:40]:<40} {row['category']:<12} {row['ms_per_step']:9.3f} "
                     f"{100 * row['share']:6.1f}%  {row['op_name'][-60:]}")
    return "\n".join(lines)
