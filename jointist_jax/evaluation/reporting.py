"""Writes an :class:`EvalResult` where people look: TensorBoard, and a folder with ``metrics.json``.

This module only writes and formats finished results; the metrics and their averages are
computed by :mod:`jointist_jax.metrics` (:mod:`jointist_jax.metrics.averaging`).

TensorBoard (``WORKDIR/tensorboard/eval_<split>``, beside the training run's own events):

* scalars ``{setting}/{metric}`` at the checkpoint's step (settings: ``gt_instruments``,
  ``predicted_instruments``, ``recognition``);
* images ``{setting}/per_instrument/{metric}``: a bar per instrument for every F1, SDR and AP;
* images ``songs/{track}/pianoroll``: reference (grey) and predicted (red) notes per instrument;
* audio ``songs/{track}/mix`` and ``songs/{track}/{Class}``: the separated stems.

Folder ``OUT/<split>/<step>/`` (written into a local temporary folder, then renamed into place
or, for a bucket, uploaded with ``metrics.json`` last, so an interrupted evaluation leaves nothing
that counts as done; :class:`jointist_jax.storage.StagedFolder`): ``metrics.json``, ``charts/*.png``,
``songs/<track>/pianoroll.png``, ``songs/<track>/mix.wav`` and ``songs/<track>/stems/<Class>.wav``
(plus ``<Class>.reference.wav`` where the dataset has the stem).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from jointist_jax import run_dir, storage
from jointist_jax.evaluation import charts
from jointist_jax.evaluation.runner import EvalOptions, EvalResult
from jointist_jax.inference import audio_io, pianoroll_png
from jointist_jax.inference.outputs import stem_filename
from jointist_jax.music import SAMPLE_RATE

METRICS_FILE = run_dir.METRICS_FILE
_CHARTED_SUFFIXES = ("f1", "f1_paper_compat", "sdr", "sdr_paper_compat", "ap", "ap_paper_compat")


def charted_metrics(result: EvalResult) -> list[str]:
    """The per-class metrics that get a bar chart: F1s, SDR and AP."""
    return [name for name in sorted(result.per_class)
            if name.rsplit("/", 1)[-1].endswith(_CHARTED_SUFFIXES) and result.per_class[name]]


def _chart(result: EvalResult, name: str) -> bytes:
    metric = name.rsplit("/", 1)[-1]
    return charts.bar_chart_png(result.per_class[name], title=f"{name} (step {result.step}, {result.split})",
                                ylabel="dB" if metric.startswith("sdr") else metric)


def _pianoroll(result: EvalResult, media) -> bytes:
    return pianoroll_png.pianoroll_png(media.predicted_notes, reference=media.reference_notes, duration=media.duration,
                                       title=f"{media.track_id}, step {result.step}")


def metrics_document(result: EvalResult, *, run_path: str, data_dir: str, options: EvalOptions) -> dict:
    """The content of ``metrics.json``."""
    return {"step": result.step, "stage": result.stage, "split": result.split, "run": str(run_path),
            "data_dir": str(data_dir), "options": dataclasses.asdict(options), "scalars": result.scalars,
            "per_class": result.per_class, "songs": result.songs}


def write_files(out_root, result: EvalResult, *, run_path: str, data_dir: str, options: EvalOptions):
    """Writes the evaluation folder (all or nothing); replaces an earlier evaluation of the same step.
    ``out_root`` may be local or ``gs://``. Returns the folder."""
    target = run_dir.evaluation_dir(out_root, result.split, result.step)
    with storage.StagedFolder(target, marker=METRICS_FILE) as staged:
        temp = staged.local
        (temp / "charts").mkdir()
        for name in charted_metrics(result):
            (temp / "charts" / (name.replace("/", "__") + ".png")).write_bytes(_chart(result, name))
        for media in result.media:
            song = temp / "songs" / media.track_id
            song.mkdir(parents=True)
            if media.reference_notes or media.predicted_notes:
                (song / "pianoroll.png").write_bytes(_pianoroll(result, media))
            audio_io.write_wav(song / "mix.wav", media.mix)
            if media.stems:
                (song / "stems").mkdir()
            for cls, (separated, reference) in media.stems.items():
                audio_io.write_wav(song / "stems" / stem_filename(cls), separated)
                if reference is not None:
                    name = stem_filename(cls).replace(".wav", ".reference.wav")
                    audio_io.write_wav(song / "stems" / name, reference)
        (temp / METRICS_FILE).write_text(json.dumps(
            metrics_document(result, run_path=run_path, data_dir=data_dir, options=options), indent=1))
    return target


def tensorboard_dir(workdir, split: str) -> storage.Path:
    """The TensorBoard run of evaluations on ``split``."""
    return run_dir.RunDir.at(workdir).tensorboard(f"eval_{split}")


def _audio(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(samples, np.float32), -1.0, 1.0)[None, :, None]


def write_tensorboard(logdir, result: EvalResult) -> None:
    """Scalars, bar charts, piano rolls and stems of ``result`` at its step (``logdir`` local or
    ``gs://``: TensorFlow writes a local copy that is uploaded when done)."""
    import tensorflow as tf

    folder = storage.MirroredFolder(logdir)
    writer = tf.summary.create_file_writer(os.fspath(folder.local))
    with writer.as_default(step=result.step):
        for name, value in sorted(result.scalars.items()):
            tf.summary.scalar(name, float(value))
        for name in charted_metrics(result):
            setting, metric = name.split("/", 1)
            image = tf.image.decode_png(_chart(result, name), channels=4)[None]
            tf.summary.image(f"{setting}/per_instrument/{metric}", image)
        for media in result.media:
            if media.reference_notes or media.predicted_notes:
                image = tf.image.decode_png(_pianoroll(result, media), channels=4)[None]
                tf.summary.image(f"songs/{media.track_id}/pianoroll", image)
            if media.stems:
                tf.summary.audio(f"songs/{media.track_id}/mix", _audio(media.mix), SAMPLE_RATE)
                for cls, (separated, _) in media.stems.items():
                    tf.summary.audio(f"songs/{media.track_id}/{stem_filename(cls)[:-4]}", _audio(separated),
                                     SAMPLE_RATE)
    writer.flush()
    writer.close()
    folder.close()


def format_summary(result: EvalResult, *, headline_only: bool = False) -> str:
    """A readable table of the scalars (only the paper's headline ones with ``headline_only``)."""
    headline = ("note_f1/flat", "note_f1/instrument_wise", "note_f1/piece_wise", "note_with_offset_f1/flat",
                "frame_f1/flat", "note_f1_paper_compat/flat", "mt3/onset_offset_program_f1/full_program",
                "sdr/source_wise", "sdr/piece_wise", "sdr/instrument_wise", "sdr_paper_compat/source_wise",
                "ir_mAP/macro", "ir_f1/macro",
                "ir_f1/samples", "ir_mAP_paper_compat/macro", "ir_f1_paper_compat/macro")
    names = sorted(result.scalars)
    if headline_only:
        names = [n for n in names if n.split("/", 1)[-1] in headline or n == "num_songs"]
    width = max((len(n) for n in names), default=10)
    lines = [f"step {result.step} | stage {result.stage} | split {result.split}"]
    lines += [f"  {name:<{width}}  {result.scalars[name]:.4f}" for name in names]
    return "\n".join(lines)
