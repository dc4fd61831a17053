r"""Learning curves on the synthetic data: held-out scores against training steps, on CPU.

Three stages, each trained with its ``runlocal`` recipe on the demo's synthetic dataset and
evaluated on whole held-out songs (``launch/eval.py``'s evaluator, ground-truth instruments,
thresholds 0.1) at its checkpoints:

* ``transcription``: note and frame F1 (flat) from the untrained model (step 0, the trainer's
  own initialisation) to ``--steps``, with the recipe's learning-rate schedule (``make demo``'s
  transcriber when the defaults are kept). ``--transcriber narrow`` trains the full-size narrow
  model with the same recipe, and ``--train_seconds`` stops it after a fixed time budget as a
  preempted run stops (SIGTERM: the step ends, a checkpoint is saved);
* ``joint``: the paper's pTS, ``joint_pretrained:runlocal`` started from the transcriber just
  trained: SDR (and note F1) from step 1 (learning rate 0 at step 0: the untrained separator) to
  ``--joint_steps``;
* ``ir``: the recognizer, ``ir:runlocal``: held-out mAP over songs, untrained and after
  ``--ir_steps``.

  make demo                                   # renders and packs demo/tfds first
  .venv/bin/python -m benchmarks.learn_synth  # numbers in README.md ("Learning")
  .venv/bin/python -m benchmarks.learn_synth --stages transcription --steps 300 --split validation
  # On a GPU: the full-size narrow transcriber for 5 minutes (compilation included), a point
  # every 500 steps.
  python -m benchmarks.learn_synth --stages transcription --transcriber narrow --steps 1000000 \
      --train_seconds 300 --checkpoint_every 500

``--workdir`` keeps the runs (and resumes them when run again); by default a temporary folder is
used and removed. ``--data_dir``, ``--workdir`` and ``--json`` are local paths: a ``gs://`` one is
refused (copy a bucket dataset to local disk first).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from jointist_jax import xla_flags

xla_flags.apply_cpu_flags()  # this program's CPU XLA flags, before jax loads

from jointist_jax import runs, stages
from jointist_jax.train import trainer

from flax import nnx

from benchmarks import common
from jointist_jax import storage
from jointist_jax.evaluation import EvalOptions, evaluate_run

STAGES = ("transcription", "joint", "ir")
HEADLINE = ("note_f1/flat", "note_f1/instrument_wise", "note_precision/flat", "note_recall/flat",
            "note_with_offset_f1/flat", "frame_f1/flat", "frame_f1/instrument_wise",
            "mt3/onset_offset_program_f1/full_program")
CURVE = ("note_f1/flat", "frame_f1/flat", "sdr/source_wise")


def _common(config, args, steps: int) -> None:
    config.data.data_dir = args.data_dir
    if args.global_batch is not None:
        config.data.global_batch = args.global_batch
    config.total_steps = steps
    config.checkpoint_every = args.checkpoint_every or max(steps // args.points, 1)
    config.keep_checkpoints = steps // config.checkpoint_every + 2
    config.data.eval_batches = 0
    config.log_every = max(steps // 10, 1)


def build_config(args, stage: str):
    """The stage's runlocal config for a fixed budget.

    The transcriber keeps its recipe's learning-rate schedule; the joint stage and the recognizer
    train at one rate (no decay within the budget).
    """
    import configs.defaults
    import configs.ir
    import configs.joint_pretrained
    import configs.transcription

    if stage == "transcription":
        config = configs.transcription.get_config("runlocal")
        if args.transcriber != "tiny":
            config.model.transcriber = configs.defaults.transcriber_config(args.transcriber)
            configs.defaults.apply_runlocal_transcriber(config.model.transcriber)
        if args.clip_seconds is not None:
            config.data.clip_seconds = args.clip_seconds
        _common(config, args, args.steps)
        if args.lr is not None:
            config.optimizer.lr = args.lr
        if args.warmup_steps is not None:
            config.optimizer.warmup_steps = args.warmup_steps
        if args.output_prior is not None:
            config.model.transcriber.output_prior = args.output_prior
    elif stage == "joint":
        config = configs.joint_pretrained.get_config("runlocal")
        _common(config, args, args.joint_steps)
        config.optimizer.decay_every = max(args.joint_steps * 10, 1)
    else:
        config = configs.ir.get_config("runlocal")
        _common(config, args, args.ir_steps)
        config.optimizer.decay_every = max(args.ir_steps * 10, 1)
    return config


def _preempt_after(deadline: float, finished: threading.Event) -> None:
    """Sends this process SIGTERM at ``deadline`` (``time.perf_counter``), as a preemption would.

    Waits first for the trainer's own SIGTERM handler (before it, the signal would end the
    process); does nothing once ``finished`` is set.
    """
    before = signal.getsignal(signal.SIGTERM)
    while signal.getsignal(signal.SIGTERM) is before:
        if finished.wait(0.05):
            return
    if not finished.wait(max(deadline - time.perf_counter(), 0.0)):
        os.kill(os.getpid(), signal.SIGTERM)


def _checkpoint_steps(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _row(result, keys) -> dict[str, float | None]:
    return {k: result.scalars.get(f"gt_instruments/{k}") for k in keys}


def _fmt(value) -> str:
    return f"{value:>9.4f}" if value is not None else f"{'-':>9}"


def _print_curve(title: str, curve: list[dict]) -> None:
    print(f"\n{title}")
    print(f"{'step':>6} {'train s':>8} " + " ".join(f"{k:>16}" for k in CURVE))
    for point in curve:
        print(f"{point['step']:>6} {point['train_seconds']:>8.0f} "
              + " ".join(f"{_fmt(point['metrics'].get(k)):>16}" for k in CURVE))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default="demo/tfds", help="TFDS dir of the synthetic dataset (make demo)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {STAGES}")
    parser.add_argument("--steps", type=int, default=800,
                        help="transcriber training steps (the fixed budget; default: make demo's)")
    parser.add_argument("--joint_steps", type=int, default=200, help="joint (pTS) training steps (default: make demo's)")
    parser.add_argument("--ir_steps", type=int, default=300, help="recognizer training steps")
    parser.add_argument("--points", type=int, default=4, help="evaluated checkpoints per stage (besides step 0)")
    parser.add_argument("--transcriber", default="tiny", choices=("tiny", "small", "narrow", "wide"),
                        help="transcriber size (default: runlocal's tiny); any size gets the runlocal "
                             "output_prior and bn_momentum")
    parser.add_argument("--clip_seconds", type=float, default=None, help="transcriber crop length (default: runlocal's)")
    parser.add_argument("--train_seconds", type=float, default=None,
                        help="stop the transcriber after this many seconds of training (compilation included) "
                             "as a preempted run stops; --steps is then an upper bound")
    parser.add_argument("--checkpoint_every", type=int, default=None,
                        help="steps between evaluated checkpoints (default: steps / points)")
    parser.add_argument("--lr", type=float, default=None, help="transcriber learning rate (default: runlocal's)")
    parser.add_argument("--warmup_steps", type=int, default=None, help="transcriber warm-up (default: runlocal's)")
    parser.add_argument("--output_prior", type=float, default=None,
                        help="transcriber output_prior (default: runlocal's; 0 = the reference's initialisation)")
    parser.add_argument("--split", default="test", help="held-out split of whole songs")
    parser.add_argument("--global_batch", type=int, default=None, help="clips per step of every stage (default: each runlocal's)")
    parser.add_argument("--workdir", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    chosen = [s for s in args.stages.split(",") if s]
    if not chosen or any(s not in STAGES for s in chosen):
        parser.error(f"--stages must be a comma-separated subset of {STAGES}, got {args.stages!r}")
    if "joint" in chosen and "transcription" not in chosen:
        parser.error("--stages joint starts from the transcriber trained here: add transcription")
    if min(args.steps, args.joint_steps, args.ir_steps, args.points, args.checkpoint_every or 1) < 1:
        parser.error("--steps, --joint_steps, --ir_steps, --points and --checkpoint_every must be >= 1")
    if args.train_seconds is not None and args.train_seconds <= 0:
        parser.error(f"--train_seconds must be > 0, got {args.train_seconds}")
    for flag, value in (("--data_dir", args.data_dir), ("--workdir", args.workdir), ("--json", args.json)):
        if value is not None and storage.is_remote(value):
            parser.error(f"{flag} {value!r} is a bucket path; learn_synth reads its dataset and writes its runs "
                         f"and numbers on local disk (copy a bucket dataset to a local folder first)")
    if not Path(args.data_dir).expanduser().exists():
        parser.error(f"--data_dir {args.data_dir!r} does not exist: run `make demo` first (it builds demo/tfds)")
    logging.basicConfig(level=logging.WARNING)

    temp = None if args.workdir else tempfile.TemporaryDirectory(prefix="learn_synth-")
    root = Path(args.workdir or temp.name)
    options = EvalOptions(split=args.split, media_songs=0)
    report: dict = {"split": args.split, "environment": common.environment()}
    print(f"learn_synth: stages {','.join(chosen)}; data {args.data_dir}, held-out split {args.split!r}; "
          f"{common.environment()}", flush=True)

    def train(config, workdir: Path, seconds: float | None = None) -> float:
        """Trains to ``config.total_steps`` or, given ``seconds``, until a SIGTERM sent then."""
        start = time.perf_counter()
        finished = threading.Event()
        if seconds:
            threading.Thread(target=_preempt_after, args=(start + seconds, finished), daemon=True).start()
        try:
            trainer.train_and_evaluate(config, str(workdir))
        finally:
            finished.set()
        return time.perf_counter() - start

    def untrained(config, workdir: Path) -> Path:
        """The trainer's initialisation (same seeds), saved as step 0."""
        init = stages.build_model(config, nnx.Rngs(params=config.seed, dropout=config.seed))
        runs.save_model(workdir, config, init)
        return workdir

    if "transcription" in chosen:
        config = build_config(args, "transcription")
        t = config.model.transcriber
        o = config.optimizer
        budget = f"{args.train_seconds:g} s (at most {args.steps} steps)" if args.train_seconds else f"{args.steps} steps"
        print(f"\n== transcription:runlocal, {args.transcriber} transcriber, {budget}, lr {o.lr:g} x{o.decay_rate:g} "
              f"every {o.decay_every} steps, warm-up {o.warmup_steps}, output_prior {t.output_prior:g}, "
              f"{config.data.global_batch} clips x {config.data.num_positive + config.data.num_negative} rows of "
              f"{config.data.clip_seconds:g} s", flush=True)
        init_result = evaluate_run(untrained(config, root / "untrained"), args.data_dir, options)
        seconds = train(config, root / "trained", args.train_seconds)
        saved = _checkpoint_steps(root / "trained")
        trained_steps = saved[-1]
        curve = [dict(step=0, train_seconds=0.0, metrics=_row(init_result, CURVE))]
        results = {}
        for step in saved:
            results[step] = evaluate_run(root / "trained" / "checkpoints" / str(step), args.data_dir, options)
            curve.append(dict(step=step, train_seconds=seconds * step / trained_steps,
                              metrics=_row(results[step], CURVE)))
        final = results[trained_steps]
        songs = int(final.scalars["num_songs"])
        _print_curve(f"transcriber: {songs} held-out songs, ground-truth instruments; trained {trained_steps} "
                     f"steps in {seconds:.0f} s ({trained_steps / seconds:.2f} steps/s; train s interpolated)", curve)
        print(f"\n{'metric':<44} {'untrained':>10} {'trained':>10}")
        rows = {}
        for metric in HEADLINE:
            before, after = _row(init_result, [metric])[metric], _row(final, [metric])[metric]
            rows[metric] = {"untrained": before, "trained": after}
            print(f"{metric:<44} {_fmt(before):>10} {_fmt(after):>10}")
        report.update(steps=trained_steps, train_seconds=seconds, songs=songs, metrics=rows, curve=curve,
                      transcriber=args.transcriber)

    if "joint" in chosen:
        config = build_config(args, "joint")
        config.init_from = str(root / "trained")
        print(f"\n== joint_pretrained:runlocal from that transcriber, {args.joint_steps} steps, lr "
              f"{config.optimizer.lr:g}", flush=True)
        # Step 1 first: step 0's learning rate is 0, so checkpoint 1 is the pretrained transcriber
        # beside the untrained separator.
        first = config.copy_and_resolve_references()
        first.total_steps = 1
        seconds = train(first, root / "joint")
        seconds += train(config, root / "joint")
        curve = []
        for step in _checkpoint_steps(root / "joint"):
            result = evaluate_run(root / "joint" / "checkpoints" / str(step), args.data_dir, options)
            curve.append(dict(step=step, train_seconds=seconds * step / args.joint_steps,
                              metrics=_row(result, CURVE)))
        _print_curve(f"joint (pTS): SDR and F1 on the held-out songs; trained {args.joint_steps} steps in "
                     f"{seconds:.0f} s", curve)
        report["joint"] = dict(steps=args.joint_steps, train_seconds=seconds, curve=curve)

    if "ir" in chosen:
        config = build_config(args, "ir")
        print(f"\n== ir:runlocal, {args.ir_steps} steps, lr {config.optimizer.lr:g}, "
              f"{config.data.global_batch} clips of {config.data.clip_seconds:g} s", flush=True)
        before = evaluate_run(untrained(config, root / "ir_untrained"), args.data_dir, options)
        seconds = train(config, root / "ir")
        after = evaluate_run(root / "ir", args.data_dir, options)
        keys = sorted(k for k in after.scalars if k.startswith("recognition/") and "mAP" in k)
        print(f"\nrecognizer: trained {args.ir_steps} steps in {seconds:.0f} s")
        print(f"{'metric':<44} {'untrained':>10} {'trained':>10}")
        rows = {}
        for key in keys + ["recognition/f1/macro"] if "recognition/f1/macro" in after.scalars else keys:
            rows[key] = {"untrained": before.scalars.get(key), "trained": after.scalars.get(key)}
            print(f"{key:<44} {_fmt(rows[key]['untrained']):>10} {_fmt(rows[key]['trained']):>10}")
        report["ir"] = dict(steps=args.ir_steps, train_seconds=seconds, metrics=rows)

    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if temp is not None:
        temp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
