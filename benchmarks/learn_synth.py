r"""Learning check on the synthetic data: does ``transcription:runlocal`` learn to transcribe?

Trains the tiny ``transcription:runlocal`` model for a fixed number of steps on CPU, then
evaluates whole held-out songs (``launch/eval.py``'s evaluator, ground-truth instruments,
default thresholds 0.1) for the trained model and for the same model untrained (the trainer's
initialisation: same seed), and prints both side by side.

  make demo                                   # renders and packs demo/tfds first
  .venv/bin/python benchmarks/learn_synth.py  # 3000 steps, ~25 min on a 2-core CPU
  .venv/bin/python benchmarks/learn_synth.py --steps 300 --split validation   # quicker, weaker

runlocal's training settings apply, with ``--lr`` and ``--warmup_steps`` as given (the runlocal
defaults) and the learning-rate decay off (one fixed budget). ``--workdir`` keeps the run (and
resumes it when run again); by default a temporary folder is used and removed.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jointist_jax import xla_flags  # noqa: E402

xla_flags.apply_cpu_flags()

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HEADLINE = ("note_f1/flat", "note_f1/instrument_wise", "note_f1/piece_wise", "note_precision/flat",
            "note_recall/flat", "note_with_offset_f1/flat", "frame_f1/flat", "frame_f1/instrument_wise",
            "mt3/onset_offset_program_f1/full_program")


def build_config(args):
    import configs.transcription

    config = configs.transcription.get_config("runlocal")
    config.data.data_dir = args.data_dir
    config.total_steps = args.steps
    config.checkpoint_every = max(args.steps // 4, 1)
    config.keep_checkpoints = 1
    config.data.eval_batches = 0
    config.log_every = max(args.steps // 20, 1)
    if args.global_batch is not None:
        config.data.global_batch = args.global_batch
    if args.lr is not None:
        config.optimizer.lr = args.lr
    if args.warmup_steps is not None:
        config.optimizer.warmup_steps = args.warmup_steps
    config.optimizer.decay_every = max(args.steps * 10, 1)  # no decay within the budget
    return config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default="demo/tfds", help="TFDS dir of the synthetic dataset (make demo)")
    parser.add_argument("--steps", type=int, default=3000, help="training steps (the fixed budget)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: runlocal's)")
    parser.add_argument("--warmup_steps", type=int, default=None, help="warm-up steps (default: runlocal's)")
    parser.add_argument("--split", default="test", help="held-out split of whole songs")
    parser.add_argument("--global_batch", type=int, default=None, help="clips per step (default: runlocal's)")
    parser.add_argument("--workdir", default=None, help="keep the run here (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    if not Path(args.data_dir).expanduser().exists():
        parser.error(f"--data_dir {args.data_dir!r} does not exist: run `make demo` first (it builds demo/tfds)")
    logging.basicConfig(level=logging.WARNING)

    from flax import nnx

    from benchmarks import common
    from jointist_jax.evaluator import EvalOptions, evaluate_run
    from jointist_jax.train import checkpoints, model_factory, trainer

    config = build_config(args)
    temp = None if args.workdir else tempfile.TemporaryDirectory(prefix="learn_synth-")
    root = Path(args.workdir or temp.name)
    untrained_dir, trained_dir = root / "untrained", root / "trained"
    print(f"learn_synth: transcription:runlocal, {args.steps} steps, lr {config.optimizer.lr:g}, "
          f"warm-up {config.optimizer.warmup_steps}, {config.data.global_batch} clips x "
          f"{config.data.num_positive + config.data.num_negative} rows of {config.data.clip_seconds:g} s; "
          f"data {args.data_dir}; {common.environment()}", flush=True)

    # The trainer's own initialisation (same seeds), saved as step 0.
    init = model_factory.build_model(config, nnx.Rngs(params=config.seed, dropout=config.seed))
    checkpoints.save_model(untrained_dir, config, init)
    start = time.perf_counter()
    trainer.train_and_evaluate(config, str(trained_dir))
    train_seconds = time.perf_counter() - start

    options = EvalOptions(split=args.split, media_songs=0)
    results = {}
    for name, path in (("untrained", untrained_dir), ("trained", trained_dir)):
        results[name] = evaluate_run(path, args.data_dir, options)
    songs = int(results["trained"].scalars["num_songs"])
    print(f"\ntrained {args.steps} steps in {train_seconds:.0f} s ({args.steps / train_seconds:.2f} steps/s); "
          f"held-out split {args.split!r}: {songs} songs, ground-truth instruments, thresholds 0.1")
    print(f"{'metric':<44} {'untrained':>10} {'trained':>10}")
    rows = {}
    for metric in HEADLINE:
        key = f"gt_instruments/{metric}"
        rows[metric] = {name: results[name].scalars.get(key) for name in results}
        print(f"{metric:<44} {rows[metric]['untrained']:>10.4f} {rows[metric]['trained']:>10.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": args.steps, "train_seconds": train_seconds, "songs": songs,
                                               "split": args.split, "metrics": rows,
                                               "environment": common.environment()}, indent=1))
    if temp is not None:
        temp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
