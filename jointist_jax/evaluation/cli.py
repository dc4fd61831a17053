r"""``jointist-eval`` (also ``python launch/eval.py``): evaluates a run on whole songs.

  jointist-eval --workdir=gs://BUCKET/jointist/joint [--data_dir=gs://BUCKET/tfds] \
      [--checkpoint 100000|latest|best] [--split test] [--ir_checkpoint gs://BUCKET/jointist/ir]

The run's own ``config.json`` says where the dataset is; ``--data_dir`` points elsewhere. The
model is always rebuilt from ``config.json``. ``--config`` (optional: the stage config the run
was trained with, e.g. ``--config=joint_pretrained --config.data.data_dir=...``) is only read for
the dataset location and must be of the run's stage. Songs of ``--split`` are transcribed and/or separated with their ground-truth
instruments and, with ``--ir_checkpoint`` (an ir run), with the recognizer's instruments too.
Every metric of the paper and MT3's note F1 go to TensorBoard (``WORKDIR/tensorboard/eval_SPLIT``)
with per-instrument bar charts, piano rolls and separated stems of ``--media_songs`` songs, and to
``OUT/SPLIT/STEP/metrics.json`` (OUT defaults to ``WORKDIR/eval``).

``--watch`` follows a training workdir and evaluates every new checkpoint once (with
``--checkpoint best``: every checkpoint that becomes the best one), until the run's last step has
been saved and evaluated or no checkpoint has appeared for ``--watch_timeout`` seconds.

Set-up errors (a config of another stage, a missing checkpoint, an unusable run) exit with status
2 and a message naming the problem. An evaluation folder that could not be written to a bucket
(it went away for longer than the client retries) exits with status 1 and a message naming the
folder; that step is not counted as evaluated (its ``metrics.json`` is written last), so the same
command run again evaluates it. The flags are absl flags defined when this module is imported:
import it from an entry point only.
"""

from __future__ import annotations

import logging
import sys

from absl import flags
from ml_collections import config_flags

from jointist_jax import run_dir, storage, xla_flags
from jointist_jax.cli_support import program_name, run_stage_cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Optional stage config: NAME[:ARGS] or PATH[:ARGS] (default: the workdir's config.json).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's workdir.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "The TFDS dataset (default: config.data.data_dir).")
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
# --config is optional: the workdir's config.json stands in for it.
REQUIRED_FLAGS = ("workdir",)


def _options():
    from jointist_jax.evaluation import EvalOptions

    return EvalOptions(split=_SPLIT.value, max_songs=_MAX_SONGS.value, media_songs=_MEDIA_SONGS.value,
                       batch_windows=_BATCH_WINDOWS.value, max_rows=_MAX_ROWS.value or None,
                       onset_threshold=_ONSET_THRESHOLD.value, frame_threshold=_FRAME_THRESHOLD.value,
                       min_note_frames=_MIN_NOTE_FRAMES.value, ir_threshold=_IR_THRESHOLD.value,
                       ir_aggregate=_IR_AGGREGATE.value)


def evaluate_once(trained, *, ir_run, data_dir: str, options, out_root: str, workdir: str) -> None:
    """Evaluates one checkpoint (an opened :class:`~jointist_jax.runs.TrainedRun`, with the
    ``--ir_checkpoint`` run or None) and writes every report."""
    from jointist_jax.evaluation import evaluate_run, reporting

    result = evaluate_run(trained, data_dir, options, ir_path=ir_run,
                          progress=lambda song: logging.info("evaluating %s", song))
    folder = reporting.write_files(out_root, result, run_path=trained.path, data_dir=data_dir, options=options)
    print(reporting.format_summary(result, headline_only=True), flush=True)
    print(f"{PROG}: step {result.step}: metrics.json, charts, piano rolls and stems in {folder}", flush=True)
    if not _NO_TENSORBOARD.value:
        logdir = reporting.tensorboard_dir(workdir, options.split)
        reporting.write_tensorboard(logdir, result)
        print(f"{PROG}: TensorBoard: tensorboard --logdir {logdir}", flush=True)


def dataset_dir(trained, config) -> str:
    """``--data_dir``, else the ``--config`` stage config's dataset (which must be of the run's
    stage), else the one in the run's ``config.json``."""
    if config is not None and trained.config.get("stage") != config.stage:
        raise ValueError(f"--config is a {config.stage!r} config but --workdir {_WORKDIR.value!r} is a "
                         f"{trained.config.get('stage')!r} run")
    return _DATA_DIR.value or (trained.config if config is None else config).data.data_dir


def _ir_run():
    """The ``--ir_checkpoint`` run, checked to be an instrument-recognition run (or None)."""
    from jointist_jax import runs

    if _IR_CHECKPOINT.value is None:
        return None
    ir_run = runs.open(_IR_CHECKPOINT.value, role="--ir_checkpoint")
    runs.check_recognizer(ir_run)
    return ir_run


def run(config) -> int:
    """Evaluates the checkpoint(s) the flags name; ``config``: the ``--config`` stage config, or
    None (the workdir's ``config.json``). Returns the exit status."""
    from jointist_jax import runs
    from jointist_jax.evaluation import watch

    workdir = _WORKDIR.value
    run = run_dir.RunDir.at(workdir)
    options = _options()
    out_root = run.eval_root(_OUT.value)
    if not _WATCH.value:
        path = workdir
        if _CHECKPOINT.value is not None:
            try:
                path = str(run.step_dir(run.resolve_step(_CHECKPOINT.value)))
            except (run_dir.RunNotFoundError, ValueError) as error:
                raise ValueError(f"--checkpoint {_CHECKPOINT.value}: {error}") from error
        trained = runs.open(path, role="--workdir")
        data_dir = dataset_dir(trained, config)
        evaluate_once(trained, ir_run=_ir_run(), data_dir=data_dir, options=options, out_root=out_root,
                      workdir=workdir)
        return 0
    if _CHECKPOINT.value not in (None, "best"):
        raise ValueError(f"--watch evaluates every checkpoint, or with --checkpoint best each new best "
                         f"one; it does not take --checkpoint {_CHECKPOINT.value}")
    latest = runs.open(workdir, role="--workdir")
    data_dir = dataset_dir(latest, config)
    ir_run = _ir_run()
    steps = watch.follow(
        workdir, out_root, options.split,
        lambda step: evaluate_once(runs.open(run.step_dir(step), role="--workdir"), ir_run=ir_run,
                                   data_dir=data_dir, options=options, out_root=out_root, workdir=workdir),
        final_step=latest.config.get("total_steps"), poll_seconds=_POLL_SECONDS.value,
        idle_timeout=_WATCH_TIMEOUT.value, which="best" if _CHECKPOINT.value == "best" else "all")
    print(f"{PROG}: watched {workdir}: evaluated steps {steps}", flush=True)
    return 0


def _main(argv):
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # TensorFlow only reads data and writes summaries

    try:
        sys.exit(run(_CONFIG.value))
    except storage.UploadError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        sys.exit(1)
    except (ValueError, FileNotFoundError) as error:  # runs.CheckpointError is a ValueError
        print(f"{PROG}: error: {error}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    """Entry point: parses ``argv`` (default ``sys.argv``; ``--config=NAME`` resolved to
    ``configs/NAME.py``), applies the CPU XLA flags and exits with the status."""
    global PROG
    argv = list(sys.argv if argv is None else argv)
    PROG = program_name(argv, PROG)
    xla_flags.apply_cpu_flags()  # before jax loads
    run_stage_cli(_main, argv, prog=PROG, required=REQUIRED_FLAGS)


if __name__ == "__main__":
    main()
