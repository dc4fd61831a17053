r"""Prints a run's held-out scores beside those of the same model untrained (the trainer's seeds).

  .venv/bin/python scripts/compare_untrained.py --run demo/workdirs/pts --data_dir demo/tfds

The untrained model is the run's config built with its seeds (what the trainer starts from); both
are evaluated by ``jointist-eval``'s evaluator (:func:`jointist_jax.evaluation.evaluate_run`) on
whole songs of ``--split`` with the ground-truth instruments and the default thresholds (0.1).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile

from jointist_jax import xla_flags

METRICS = ("note_f1/flat", "note_precision/flat", "note_recall/flat", "frame_f1/flat", "note_f1/instrument_wise",
           "mt3/onset_offset_program_f1/full_program", "sdr/source_wise")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a training workdir (its latest checkpoint is scored)")
    parser.add_argument("--data_dir", required=True, help="TFDS dir of the dataset")
    parser.add_argument("--split", default="test", help="held-out split of whole songs")
    parser.add_argument("--trained_metrics", default=None,
                        help="the run's metrics.json from launch/eval.py on the same split (not evaluated again)")
    args = parser.parse_args(argv)
    xla_flags.apply_cpu_flags()  # before jax loads
    logging.basicConfig(level=logging.WARNING)

    from flax import nnx

    from jointist_jax import storage
    from jointist_jax.evaluation import EvalOptions, evaluate_run
    from jointist_jax import runs, stages

    config = runs.open(args.run, role="--run").config
    options = EvalOptions(split=args.split, media_songs=0)
    if args.trained_metrics:
        saved = json.loads(storage.path(args.trained_metrics).read_text())
        if saved.get("split") != args.split:
            parser.error(f"--trained_metrics {args.trained_metrics} is for split {saved.get('split')!r}, "
                         f"not {args.split!r}")
        trained_step, trained_scalars = saved["step"], saved["scalars"]
    else:
        trained = evaluate_run(args.run, args.data_dir, options)
        trained_step, trained_scalars = trained.step, trained.scalars
    with tempfile.TemporaryDirectory(prefix="untrained-") as temp:
        model = stages.build_model(config, nnx.Rngs(params=config.seed, dropout=config.seed))
        runs.save_model(temp, config, model)
        untrained = evaluate_run(temp, args.data_dir, options)
    songs = int(trained_scalars["num_songs"])
    print(f"held-out split {args.split!r}: {songs} songs, ground-truth instruments, thresholds 0.1")
    print(f"{'metric':<42} {'untrained':>10} {f'step {trained_step}':>10}")
    for metric in METRICS:
        key = f"gt_instruments/{metric}"
        if key in trained_scalars:
            print(f"{metric:<42} {untrained.scalars.get(key, float('nan')):>10.4f} {trained_scalars[key]:>10.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
