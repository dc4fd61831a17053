r"""Real-time factor of whole-song inference: recognizer + transcriber + separator.

  python -m benchmarks.inference                          # full size, 60-s song, 1, 5 and 39 instruments
  python -m benchmarks.inference --max_rows 8 --instruments 5 --window_hops 80000,160000
      # the reference's 50 %-overlap windows beside none, alternately in one run
  python -m benchmarks.inference --max_rows 8             # on a 24-GiB CPU machine (39 in groups of 8)
  python -m benchmarks.inference --max_rows 8 --instruments 5 --window_hops 80000,160000 --compare_old
      # the new programs at each hop beside the old ones (training compile options, hop 80000), alternately
  python -m benchmarks.inference --no_separation          # transcriber alone: the reference's measured work
  python -m benchmarks.inference --seconds 12 --instruments 1 --size tiny   # quick check (~1 min)
  python -m benchmarks.inference --seconds 12 --instruments 1,2 --size tiny --window_hops 80000,160000 --compare_old
  /usr/bin/time -v python -m benchmarks.inference --memory_budget 4GB --seconds 300 --instruments 39
      # bounded memory: rows per call from the budget; decodes and writes the song as jointist-transcribe does

With ``--memory_budget`` each case runs once, without a warm-up (whose one-window song would choose
other rows per call), from the predictor to the song's folder written by
:func:`jointist_jax.inference.songs.transcribe_into` (one group of instruments in memory at a
time); it prints the rows per call the budget gave and the peak resident memory.

Freshly initialised weights (timing does not depend on them). Each case is compiled first on a
one-window song (the window batch shape is fixed, so the song reuses that compilation), then
timed once on the song with each ``--window_hops`` in turn (80000: the reference's 5-s hop,
50 % overlap; 160000: no overlap, docs/deviations.md 38), so the windowings share the machine's
load alike. Printed beside it: the reference's cost for the transcriber alone from
docs/reference.md §11.3 (1.92 s per instrument per 10-s clip, instruments one after another) both per
10 s of audio (the issue's yardstick: 60 s x 39 instruments = 449 s) and for the overlapping
windows its ``predict_probabilities`` actually runs (11 windows for 60 s). The reference's
recognizer and separator would come on top.

``--compare_old`` puts the programs as they were beside the programs as they are, in one process,
since the machine's load moves any figure recorded earlier by 10 % and more: **old** compiles with
:data:`jointist_jax.xla_flags.TRAINING_COMPILER_OPTIONS` (what the inference programs used before
they had flags of their own) and runs the reference's hop 80000; **new** compiles with
:data:`~jointist_jax.xla_flags.INFERENCE_COMPILER_OPTIONS` and runs each ``--window_hops`` (which
must hold 80000). For each K the variants run one after another in that order, each compiled
first; a row's ``new/old`` is its CPU seconds over the old row's, and the last lines give the
largest |new - old| of the recognizer's probabilities and of the posteriorgrams at hop 80000
(the same model; only XLA's fusions differ). It is a flag, not the default: the old programs
exist only to measure the change, and they add a compilation and a timed song per case. Without
it the programs compile under the process's ``XLA_FLAGS`` (variant "flags").
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

from jointist_jax import xla_flags

xla_flags.apply_cpu_flags(inference=True)  # this program's CPU XLA flags, before jax loads

from jointist_jax.inference.predictor import Predictor

import jax
import numpy as np
from flax import nnx

from configs import defaults
from jointist_jax.inference import memory, outputs, songs
from jointist_jax.inference.windows import WindowSpec
from jointist_jax.models.jointist import Jointist
from jointist_jax.music import SAMPLE_RATE
from jointist_jax import stages

REFERENCE_T_SECONDS_PER_CLIP = 1.92  # docs/reference.md §11.3 t_infer1: narrow f_T, one 10-s clip, one condition
OLD = ("old", WindowSpec().hop)  # --compare_old's old variant: the training compile options, the reference's hop


def build(size: str) -> Jointist:
    """Recognizer + transcriber (narrow) + separator (sum), freshly initialised by the package's
    model factory, eval mode."""
    rngs = nnx.Rngs(0)
    transcriber_size = "narrow" if size == "full" else "tiny"
    model = Jointist(
        recognizer=stages.recognizer(defaults.recognizer_config(size), rngs=rngs),
        transcriber=stages.transcriber(defaults.transcriber_config(transcriber_size), rngs=rngs),
        separator=stages.separator(defaults.separator_config("sum", size), rngs=rngs))
    model.eval()
    return model


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _cpu_timed(fn):
    """Wall seconds and the process's CPU seconds (all threads): on a shared machine the CPU
    seconds grow far less with the other jobs' load than the wall seconds."""
    cpu = time.process_time()
    result, wall = _timed(fn)
    return result, wall, time.process_time() - cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="song length")
    parser.add_argument("--instruments", default="1,5,39", help="comma-separated instrument counts")
    parser.add_argument("--batch_windows", type=int, default=1)
    parser.add_argument("--max_rows", type=int, default=0,
                        help="at most this many window x instrument rows per call (0: all K at once); "
                             "full size with 39 instruments needs 8 on a 24-GiB CPU machine")
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    parser.add_argument("--no_separation", action="store_true",
                        help="time the transcriber alone (the reference's measured work) instead of T+S")
    parser.add_argument("--window_hops", default="80000",
                        help="comma-separated samples between window starts, each timed in turn (80000: the "
                             "reference's 50 %% overlap; 160000: no overlap)")
    parser.add_argument("--memory_budget", default=None,
                        help="memory the process may use (e.g. 4GB): rows per call from it; each case then "
                             "runs once, decoded and written, and the peak RSS is printed")
    parser.add_argument("--compare_old", action="store_true",
                        help="time the old programs (training compile options, hop 80000) beside the new ones "
                             "(inference compile options, each --window_hops), alternately in this process")
    args = parser.parse_args(argv)
    if args.compare_old and args.memory_budget is not None:
        parser.error("--compare_old times the variants against each other; --memory_budget runs each case once")
    if args.memory_budget is not None:
        return bounded_memory(args)
    counts = [int(c) for c in args.instruments.split(",")]
    if any(not 1 <= c <= 39 for c in counts):
        parser.error("--instruments: counts must be in 1..39")
    try:
        specs = [WindowSpec(hop=int(h)) for h in args.window_hops.split(",")]
    except ValueError as error:
        parser.error(f"--window_hops: {error}")
    if args.compare_old and OLD[1] not in [window_spec.hop for window_spec in specs]:
        parser.error(f"--window_hops: --compare_old compares the new outputs with the old at hop {OLD[1]}, which "
                     f"it must hold")
    length = int(args.seconds * SAMPLE_RATE)
    spec = WindowSpec()  # the reference's windows: its cost column counts them
    windows = spec.num_windows(length)
    runs = variants(specs, args.compare_old)
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; size {args.size}; song {args.seconds:g} s "
          f"= {' / '.join(f'{s.num_windows(length)} windows at hop {s.hop}' for s in specs)}; batch_windows "
          f"{args.batch_windows}; max_rows {args.max_rows or 'all'}; XLA_FLAGS {os.environ.get('XLA_FLAGS')!r}"
          + ("; old: the training compile options at hop 80000, new: the inference ones" if args.compare_old else ""),
          flush=True)

    model, seconds = _timed(lambda: build(args.size))
    print(f"built the models in {seconds:.1f} s", flush=True)
    predictors = {name: Predictor(model, batch_windows=args.batch_windows, max_rows=args.max_rows or None,
                                  compiler_options=options) for name, options, _ in runs}
    rng = np.random.default_rng(0)
    song = 0.1 * rng.standard_normal(length).astype(np.float32)
    warm = song[: spec.window]

    compile_ir = {name: _timed(lambda: predictor.recognize(warm))[1] for name, predictor in predictors.items()}
    ir, ir_cpu, compared = {}, {}, {}  # compared: the outputs of the old and the new variant at the old hop
    for name, _, window_spec in runs:  # the variants alternately
        predictor, key = predictors[name], (name, window_spec.hop)
        predictor.spec = window_spec  # the same window shape: the compiled steps serve every hop
        probabilities, ir[key], ir_cpu[key] = _cpu_timed(lambda: predictor.recognize(song))
        if window_spec.hop == OLD[1]:
            compared[name] = [probabilities]
        print(f"recognizer, {name}, hop {window_spec.hop}: compile+first window {compile_ir[name]:.1f} s; song "
              f"{ir[key]:.2f} s (RTF {ir[key] / args.seconds:.3f})", flush=True)
    differences = []
    if args.compare_old:
        differences.append(f"recognizer probabilities {max_difference(compared['old'], compared['new']):.1e}")
    ours = "T" if args.no_separation else "T+S"
    header = (f"{'K':>3} {'variant':>7} {'hop':>6} {'windows':>7} {'compile s':>10} {'IR s':>6} {ours + ' s':>8} "
              f"{'IR+' + ours + ' s':>9} {'RTF':>7} {'CPU s':>7} {'new/old':>7} {'ref T /10s':>11} "
              f"{'ref T windows':>14} {'speed-up':>9}")
    rows = []
    for k in counts:
        class_ids = list(range(k))
        separate = not args.no_separation
        compile_s = {name: _timed(lambda: predictor.predict(warm, class_ids, separate=separate))[1]
                     for name, predictor in predictors.items()}
        cpu, compared = {}, {}
        for name, _, window_spec in runs:  # the variants alternately
            predictor, key = predictors[name], (name, window_spec.hop)
            predictor.spec = window_spec
            prediction, ts, ts_cpu = _cpu_timed(lambda: predictor.predict(song, class_ids, separate=separate))
            if window_spec.hop == OLD[1]:
                compared[name] = [prediction.reg_onset_output, prediction.frame_output]
            del prediction
            total, cpu[key] = ir[key] + ts, ir_cpu[key] + ts_cpu
            ratio = (f"{cpu[key] / cpu[OLD]:>7.2f}" if args.compare_old and name == "new" else f"{'-':>7}")
            ref_per_10s = REFERENCE_T_SECONDS_PER_CLIP * k * args.seconds / 10
            ref_windows = REFERENCE_T_SECONDS_PER_CLIP * k * windows
            # The reference numbers are for the full-size transcriber: a speed-up against a tiny model means nothing.
            speed_up = f"{ref_windows / total:>8.1f}x" if args.size == "full" else f"{'n/a':>9}"
            rows.append(f"{k:>3} {name:>7} {window_spec.hop:>6} {window_spec.num_windows(length):>7} "
                        f"{compile_s[name]:>10.1f} {ir[key]:>6.2f} {ts:>8.2f} {total:>9.2f} {total / args.seconds:>7.3f} "
                        f"{cpu[key]:>7.1f} {ratio} {ref_per_10s:>11.1f} {ref_windows:>14.1f} {speed_up}")
            print(rows[-1], flush=True)
        if args.compare_old:
            differences.append(f"K {k} posteriorgrams {max_difference(compared['old'], compared['new']):.1e}")
        del compared
    print()
    print(header)
    print("\n".join(rows))
    if differences:
        print(f"largest |new - old| at hop {OLD[1]}: {'; '.join(differences)}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"peak RSS {peak_mb:.0f} MB. CPU s: the process's CPU seconds of IR + {ours} (all threads); new/old: "
          f"a row's CPU s over the old row's of its K. 'ref' columns: the reference transcriber alone (no IR, no "
          f"separation), docs/reference.md §11.3; speed-up = ref T windows / our IR + {ours}.")
    return 0


def variants(specs: list[WindowSpec], compare_old: bool) -> list[tuple[str, dict | None, WindowSpec]]:
    """(name, compile options, windows) of each timed variant, in the order they alternate: with
    ``compare_old`` the old one (:data:`OLD`) then the new one, the inference compile options, at
    each hop; otherwise each hop under the process's XLA_FLAGS (named "flags")."""
    if not compare_old:
        return [("flags", None, window_spec) for window_spec in specs]
    return ([("old", xla_flags.TRAINING_COMPILER_OPTIONS, WindowSpec(hop=OLD[1]))]
            + [("new", xla_flags.INFERENCE_COMPILER_OPTIONS, window_spec) for window_spec in specs])


def max_difference(old: list[np.ndarray], new: list[np.ndarray]) -> float:
    """The largest |new - old| over pairs of arrays."""
    return max(float(np.max(np.abs(a - b))) for a, b in zip(old, new, strict=True))


def bounded_memory(args) -> int:
    """Each instrument count once under ``--memory_budget``: predict, decode and write the song."""
    budget = memory.parse_size(args.memory_budget)
    counts = [int(c) for c in args.instruments.split(",")]
    length = int(args.seconds * SAMPLE_RATE)
    separate = not args.no_separation
    spec = WindowSpec(hop=int(args.window_hops.split(",")[0]))  # the first hop only
    print(f"device: {jax.devices()[0].device_kind}; size {args.size}; song {args.seconds:g} s; separation "
          f"{separate}; batch_windows {args.batch_windows}; window hop {spec.hop}; memory budget "
          f"{budget / memory.MB:.0f} MB", flush=True)
    predictor = Predictor(build(args.size), batch_windows=args.batch_windows, max_rows=args.max_rows or None,
                          memory_budget=budget, spec=spec)
    song = 0.1 * np.random.default_rng(0).standard_normal(length).astype(np.float32)
    for k in counts:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            with outputs.SongWriter(out, "song", source="noise", num_samples=length) as writer:
                notes = songs.transcribe_into(writer, predictor, song, list(range(k)), separate=separate)
                writer.finish(notes)
            seconds = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"K {k:>2}: {predictor.rows_per_call} rows per call; {seconds:.1f} s with compiling and writing; "
              f"peak RSS so far {peak_mb:.0f} MB (budget {budget / memory.MB:.0f} MB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
