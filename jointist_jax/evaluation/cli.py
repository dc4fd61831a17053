r"""``jointist-eval`` (also ``python launch/eval.py``): evaluates a run on whole songs.

  jointist-eval --config=joint_pretrained --workdir=gs://BUCKET/jointist/joint \
      --config.data.data_dir=gs://BUCKET/tfds [--checkpoint 100000|latest|best] [--split test] \
      [--ir_checkpoint gs://BUCKET/jointist/ir]

``--config`` is the stage config the run was trained with (it says where the dataset is; any
field can be overridden as in training); the model itself is rebuilt from the workdir's
``config.json``. Songs of ``--split`` are transcribed and/or separated with their ground-truth
instruments and, with ``--ir_checkpoint`` (an ir run), with the recognizer's instruments too.
Every metric of the paper and MT3's note F1 go to TensorBoard (``WORKDIR/tensorboard/eval_SPLIT``)
with per-instrument bar charts, piano rolls and separated stems of ``--media_songs`` songs, and to
``OUT/SPLIT/STEP/metrics.json`` (OUT defaults to ``WORKDIR/eval``).

``--watch`` follows a training workdir and evaluates every new checkpoint once (with
``--checkpoint best``: every checkpoint that becomes the best one), until the run's last step has
been saved and evaluated or no checkpoint has appeared for ``--watch_timeout`` seconds.

Set-up errors (a config of another stage, a missing checkpoint, an unusable run) exit with status
2 and a message naming the problem. The flags are absl flags defined when this module is imported:
import it from an entry point only.
"""

from __future__ import annotations

import logging
import sys

from absl import flags
from ml_collections import config_flags

from jointist_jax.cli_support import program_name, run_stage_cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Stage config: NAME[:ARGS] or PATH[:ARGS].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's workdir.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Step to evaluate: a step number, 'latest' (the default) or 'best' (the lowest "
    "validation loss). With --watch: 'best' evaluates each checkpoint that becomes the best one.")
_SPLIT = flags.DEFINE_string("split", "test", "Dataset split of whole songs.")
_IR_CHECKPOINT = flags.DEFINE_string("ir_checkpoint", None,
                                     "An ir run: adds the end-to-end setting (recognizer-predicted instruments).")
_OUT = flags.DEFINE_string("out", None, "Output folder (default WORKDIR/eval).")
_MAX_SONGS = flags.DEFINE_integer("max_songs", 0, "Evaluate the first N songs only (0: all).")
_MEDIA_SONGS = flags.DEFINE_integer("media_songs", 3, "Songs whose piano rolls and stems are logged.")
_BATCH_WINDOWS = flags.DEFINE_integer("batch_windows", 2, "10-s windows per call.")
_MAX_ROWS = flags.DEFINE_integer("max_rows", 16, "At most this many window x instrument rows per call "
                                 "(bounds memory with many instruments); 0: no limit.")
_ONSET_THRESHOLD = flags.DEFINE_float("onset_threshold", 0.1, "Onset posterior threshold.")
_FRAME_THRESHOLD = flags.DEFINE_float("frame_threshold", 0.1, "Frame posterior threshold.")
_MIN_NOTE_FRAMES = flags.DEFINE_integer("min_note_frames", 1, "Drop decoded notes shorter than this.")
_IR_THRESHOLD = flags.DEFINE_float("ir_threshold", 0.5, "Recognizer probability threshold.")
_IR_AGGREGATE = flags.DEFINE_enum("ir_aggregate", "any", ["any", "mean"], "Recognizer decision over windows.")
_WATCH = flags.DEFINE_bool("watch", False, "Follow the workdir and evaluate each new checkpoint once.")
_POLL_SECONDS = flags.DEFINE_float("poll_seconds", 60.0, "--watch: seconds between looks at the workdir.")
_WATCH_TIMEOUT = flags.DEFINE_float("watch_timeout", 3600.0,
                                    "--watch: stop after this many seconds without a new checkpoint.")
_NO_TENSORBOARD = flags.DEFINE_bool("no_tensorboard", False, "Write metrics.json and files only.")

# The name messages start with: the command as it was started (eval.py, jointist-eval).
PROG = "jointist-eval"


def _options():
    from jointist_jax.evaluation import EvalOptions

    return EvalOptions(split=_SPLIT.value, max_songs=_MAX_SONGS.value, media_songs=_MEDIA_SONGS.value,
                       batch_windows=_BATCH_WINDOWS.value, max_rows=_MAX_ROWS.value or None,
                       onset_threshold=_ONSET_THRESHOLD.value, frame_threshold=_FRAME_THRESHOLD.value,
                       min_note_frames=_MIN_NOTE_FRAMES.value, ir_threshold=_IR_THRESHOLD.value,
                       ir_aggregate=_IR_AGGREGATE.value)


def evaluate_once(run_path: str, *, config, options, out_root: str, workdir: str) -> None:
    """Evaluates one checkpoint and writes every report."""
    from jointist_jax.evaluation import evaluate_run, reporting

    data_dir = config.data.data_dir
    result = evaluate_run(run_path, data_dir, options, ir_path=_IR_CHECKPOINT.value,
                          progress=lambda song: logging.info("evaluating %s", song))
    folder = reporting.write_files(out_root, result, run_path=run_path, data_dir=data_dir, options=options)
    print(reporting.format_summary(result, headline_only=True), flush=True)
    print(f"{PROG}: step {result.step}: metrics.json, charts, piano rolls and stems in {folder}", flush=True)
    if not _NO_TENSORBOARD.value:
        logdir = reporting.tensorboard_dir(workdir, options.split)
        reporting.write_tensorboard(logdir, result)
        print(f"{PROG}: TensorBoard: tensorboard --logdir {logdir}", flush=True)


def run(config) -> int:
    """Evaluates the checkpoint(s) the flags name with the stage ``config``; returns the exit status."""
    from jointist_jax import run_dir
    from jointist_jax.evaluation import watch
    from jointist_jax.inference import loading

    workdir = _WORKDIR.value
    run = run_dir.RunDir.at(workdir)
    run_config = loading.read_run_config(workdir, role="--workdir")
    if run_config.get("stage") != config.stage:
        raise ValueError(f"--config is a {config.stage!r} config but --workdir {workdir!r} is a "
                         f"{run_config.get('stage')!r} run")
    options = _options()
    out_root = run.eval_root(_OUT.value)
    if _IR_CHECKPOINT.value is not None:
        loading.check_recognizer_run(_IR_CHECKPOINT.value)

    def checkpoint_path(step: int) -> str:
        return str(run.step_dir(step))

    if _WATCH.value:
        if _CHECKPOINT.value not in (None, "best"):
            raise ValueError(f"--watch evaluates every checkpoint, or with --checkpoint best each new best "
                             f"one; it does not take --checkpoint {_CHECKPOINT.value}")
        steps = watch.follow(
            workdir, out_root, options.split,
            lambda step: evaluate_once(checkpoint_path(step), config=config, options=options, out_root=out_root,
                                       workdir=workdir),
            final_step=run_config.get("total_steps"), poll_seconds=_POLL_SECONDS.value,
            idle_timeout=_WATCH_TIMEOUT.value, which="best" if _CHECKPOINT.value == "best" else "all")
        print(f"{PROG}: watched {workdir}: evaluated steps {steps}", flush=True)
        return 0
    path = workdir
    if _CHECKPOINT.value is not None:
        try:
            path = checkpoint_path(run.resolve_step(_CHECKPOINT.value))
        except (run_dir.RunNotFoundError, ValueError) as error:
            raise ValueError(f"--checkpoint {_CHECKPOINT.value}: {error}") from error
    evaluate_once(path, config=config, options=options, out_root=out_root, workdir=workdir)
    return 0


def _main(argv):
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # TensorFlow only reads data and writes summaries
    from jointist_jax.inference import loading

    try:
        sys.exit(run(_CONFIG.value))
    except (ValueError, FileNotFoundError, loading.CheckpointError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    """Entry point: parses ``argv`` (default ``sys.argv``; ``--config=NAME`` resolved to
    ``configs/NAME.py``) and exits with the status."""
    global PROG
    argv = list(sys.argv if argv is None else argv)
    PROG = program_name(argv, PROG)
    run_stage_cli(_main, argv, prog=PROG)


if __name__ == "__main__":
    main()
