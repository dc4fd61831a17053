"""Writes an :class:`EvalResult` where people look: TensorBoard, and a folder with ``metrics.json``.

TensorBoard (``WORKDIR/tensorboard/eval_<split>``, beside the training run's own events):

* scalars ``{setting}/{metric}`` at the checkpoint's step (settings: ``gt_instruments``,
  ``predicted_instruments``, ``recognition``);
* images ``{setting}/per_instrument/{metric}``: a bar per instrument for every F1, SDR and AP;
* images ``songs/{track}/pianoroll``: reference (grey) and predicted (red) notes per instrument;
* audio ``songs/{track}/mix`` and ``songs/{track}/{Class}``: the separated stems.

Folder ``OUT/<split>/<step>/`` (written into a temporary folder and renamed into place, so an
interrupted evaluation leaves nothing half-written): ``metrics.json``, ``charts/*.png``,
``songs/<track>/pianoroll.png``, ``songs/<track>/mix.wav`` and ``songs/<track>/stems/<Class>.wav``
(plus ``<Class>.reference.wav`` where the dataset has the stem).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from jointist_jax.evaluator import charts
from jointist_jax.evaluator.runner import EvalOptions, EvalResult
from jointist_jax.inference import audio_io
from jointist_jax.inference.outputs import stem_filename
from jointist_jax.inference.windows import SAMPLE_RATE

METRICS_FILE = "metrics.json"
_CHARTED_SUFFIXES = ("f1", "f1_paper_compat", "sdr", "ap")


def charted_metrics(result: EvalResult) -> list[str]:
    """The per-class metrics that get a bar chart: F1s, SDR and AP."""
    return [name for name in sorted(result.per_class)
            if name.rsplit("/", 1)[-1].endswith(_CHARTED_SUFFIXES) and result.per_class[name]]


def _chart(result: EvalResult, name: str) -> bytes:
    metric = name.rsplit("/", 1)[-1]
    return charts.bar_chart_png(result.per_class[name], title=f"{name} (step {result.step}, {result.split})",
                                ylabel="dB" if metric == "sdr" else metric)


def _pianoroll(result: EvalResult, media) -> bytes:
    return charts.pianoroll_comparison_png(media.reference_notes, media.predicted_notes, duration=media.duration,
                                           title=f"{media.track_id}, step {result.step}")


def output_dir(out_root: str | os.PathLike, split: str, step: int) -> Path:
    """Where :func:`write_files` puts one evaluation."""
    return Path(out_root) / split / str(step)


def metrics_document(result: EvalResult, *, run_path: str, data_dir: str, options: EvalOptions) -> dict:
    """The content of ``metrics.json``."""
    return {"step": result.step, "stage": result.stage, "split": result.split, "run": str(run_path),
            "data_dir": str(data_dir), "options": dataclasses.asdict(options), "scalars": result.scalars,
            "per_class": result.per_class, "songs": result.songs}


def write_files(out_root: str | os.PathLike, result: EvalResult, *, run_path: str, data_dir: str,
                options: EvalOptions) -> Path:
    """Writes the evaluation folder atomically; replaces an earlier evaluation of the same step."""
    target = output_dir(out_root, result.split, result.step)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
    try:
        (temp / METRICS_FILE).write_text(json.dumps(
            metrics_document(result, run_path=run_path, data_dir=data_dir, options=options), indent=1))
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
        if target.exists():
            shutil.rmtree(target)
        os.replace(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return target


def tensorboard_dir(workdir: str | os.PathLike, split: str) -> Path:
    """The TensorBoard run of evaluations on ``split``."""
    return Path(workdir) / "tensorboard" / f"eval_{split}"


def _audio(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(samples, np.float32), -1.0, 1.0)[None, :, None]


def write_tensorboard(logdir: str | os.PathLike, result: EvalResult) -> None:
    """Scalars, bar charts, piano rolls and stems of ``result`` at its step."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(logdir))
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


def format_summary(result: EvalResult, *, headline_only: bool = False) -> str:
    """A readable table of the scalars (only the paper's headline ones with ``headline_only``)."""
    headline = ("note_f1/flat", "note_f1/instrument_wise", "note_f1/piece_wise", "note_with_offset_f1/flat",
                "frame_f1/flat", "note_f1_paper_compat/flat", "mt3/onset_offset_program_f1/full_program",
                "sdr/source_wise", "sdr/piece_wise", "sdr/instrument_wise", "ir_mAP/macro", "ir_f1/macro",
                "ir_f1/samples")
    names = sorted(result.scalars)
    if headline_only:
        names = [n for n in names if n.split("/", 1)[-1] in headline or n == "num_songs"]
    width = max((len(n) for n in names), default=10)
    lines = [f"step {result.step} | stage {result.stage} | split {result.split}"]
    lines += [f"  {name:<{width}}  {result.scalars[name]:.4f}" for name in names]
    return "\n".join(lines)
