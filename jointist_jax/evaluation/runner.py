"""Evaluates one checkpoint of a run on the whole songs of a split.

Two settings, as in the paper:

* ``gt_instruments`` (the controllable Jointist): the transcriber and separator are conditioned
  on the instruments that have notes in each song.
* ``predicted_instruments`` (end to end): a recognizer picks each song's instruments (windows
  thresholded and aggregated, docs/deviations.md 19); songs where it finds none are processed with all 39
  classes, as the reference does. Missed instruments score 0 (F1) and are separated as silence.

Which metrics a run gets follows from its stage: ``transcription`` (transcription metrics),
``separation`` (SDR of the standalone separator), ``joint`` (both), ``ir`` (recognition over
songs). A recognizer (an ``ir`` run) given beside a transcribing or separating run adds the
end-to-end setting and the recognition metrics.

Recognition is scored twice: over whole songs (ours: each song's aggregated window
probabilities) and, as ``_paper_compat``, on the one fixed 10-s crop per song that the reference
scores (``recognition_metrics.paper_crop``). A standalone separator (a ``separation`` run) is
likewise scored on whole songs and, as ``sdr_paper_compat``, on that crop of each song with the
crop's labelled classes, as the reference tests its ``S`` baseline (docs/deviations.md 32); the
joint model's reference test uses whole songs, so it has no crop score. Transcription's flat note
F1 has a ``_paper_compat`` variant that decodes the OR of the instruments' rolls, as the
reference does.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Callable

import numpy as np

from jointist_jax import instruments, rolls, runs
from jointist_jax.data import tracks as tracks_lib
from jointist_jax.metrics import (aggregate_separation, aggregate_transcription, recognition_scores,
                                     song_separation_scores, song_transcription_scores)
from jointist_jax.metrics import recognition_metrics, separation_metrics
from jointist_jax.evaluation import references
from jointist_jax.inference import songs as songs_lib
from jointist_jax.inference.predictor import Predictor
from jointist_jax.music import SAMPLE_RATE

logger = logging.getLogger(__name__)

GT = "gt_instruments"
PREDICTED = "predicted_instruments"
RECOGNITION = "recognition"
# The reference's fixed evaluation crop of recognition and of the standalone separator (10 s from
# 11 s on); tests shrink it for short songs.
PAPER_CROP = recognition_metrics.PaperCropProtocol()


@dataclasses.dataclass(frozen=True)
class EvalOptions(songs_lib.SongOptions):
    """How to evaluate (defaults: the reference's thresholds, every song, media for 3 songs).

    The batching, decoding and recognizer options are those of
    :class:`jointist_jax.inference.songs.SongOptions` (checked there); added here:

    Attributes:
      split: dataset split of whole songs.
      max_songs: evaluate the first this many songs of the split; 0 for all.
      media_songs: songs (the first ones) whose piano rolls and stems are kept for inspection.
    """

    split: str = "test"
    max_songs: int = 0
    media_songs: int = 3

    def __post_init__(self):
        if self.max_songs < 0:
            raise ValueError(f"max_songs must be >= 0 (0 = all), got {self.max_songs}")
        if self.media_songs < 0:
            raise ValueError(f"media_songs must be >= 0, got {self.media_songs}")
        super().__post_init__()


@dataclasses.dataclass
class SongMedia:
    """What is kept of one song for inspection (ground-truth instruments).

    Attributes:
      track_id: the song.
      duration: seconds.
      reference_notes: class index -> reference :class:`jointist_jax.music.Notes`.
      predicted_notes: class index -> decoded notes (empty without a transcriber).
      mix: (L,) float32 mixture.
      stems: class index -> (separated, reference or None) float32 (L,) waveforms (empty
        without a separator).
    """

    track_id: str
    duration: float
    reference_notes: dict
    predicted_notes: dict
    mix: np.ndarray
    stems: dict[int, tuple[np.ndarray, np.ndarray | None]]


@dataclasses.dataclass
class EvalResult:
    """Everything one evaluation produced.

    Attributes:
      step: the checkpoint's training step.
      stage: the run's stage.
      split: the split evaluated.
      scalars: ``{setting}/{metric}`` -> value; settings ``gt_instruments``,
        ``predicted_instruments``, ``recognition`` (metric names: :mod:`jointist_jax.metrics`).
      per_class: ``{setting}/{metric}`` -> {class name: value}, for bar charts.
      songs: one summary dict per song (instruments, per-class scores), for ``metrics.json``.
      media: piano rolls and stems of the first ``media_songs`` songs (none for an ir run).
    """

    step: int
    stage: str
    split: str
    scalars: dict[str, float]
    per_class: dict[str, dict[str, float]]
    songs: list[dict]
    media: list[SongMedia]


def _class_names(class_ids) -> list[str]:
    return [instruments.CLASS_NAMES[c] for c in class_ids]


def _song_probability(window_probabilities: np.ndarray, aggregate: str) -> np.ndarray:
    """One (39,) score per song whose threshold gives the aggregate's decision: the max over windows
    for ``any`` (max > t iff any window > t), the mean for ``mean``."""
    if aggregate == "any":
        return window_probabilities.max(axis=0)
    return window_probabilities.mean(axis=0)


def _crop_separation_scores(predictor: Predictor, track: tracks_lib.Track,
                            crop: recognition_metrics.PaperCrop) -> separation_metrics.SongSeparationScores:
    """SDR of the standalone separator on the reference's crop of a track: the crop's labelled
    classes, each separated from the crop of the mix alone and scored against its stem's crop
    (a class without stem audio is skipped, docs/deviations.md 16)."""
    classes = [int(c) for c in np.flatnonzero(crop.labels)]
    window = slice(crop.start, crop.stop)
    prediction = predictor.predict(track.mix[window], classes, separate=True)
    estimates = dict(zip(prediction.class_ids, prediction.waveform))
    sources = {}
    for c in classes:
        stem = track.stems.get(c)
        sources[c] = (None if stem is None else stem[window], estimates[c])
    return separation_metrics.song_separation_scores(sources, song=track.track_id)


def _opened(run: "str | os.PathLike | runs.TrainedRun", role: str) -> runs.TrainedRun:
    return run if isinstance(run, runs.TrainedRun) else runs.open(run, role=role)


def load_models(run: "str | os.PathLike | runs.TrainedRun", ir_run: "str | os.PathLike | runs.TrainedRun | None"):
    """``(model or None, recognizer or None, the opened run)`` of a run (and an optional ir run);
    either may be a path or an opened :class:`~jointist_jax.runs.TrainedRun`."""
    trained = _opened(run, "--workdir")
    model = runs.load_model(trained)
    recognizer = None
    if trained.stage is not None and trained.stage.recognizes:
        if ir_run is not None:
            raise ValueError("--ir_checkpoint is for transcription, separation and joint runs; this run "
                             "is itself an ir run")
        recognizer, model = model, None
    elif ir_run is not None:
        ir_run = _opened(ir_run, "--ir_checkpoint")
        runs.check_recognizer(ir_run)
        recognizer = runs.load_model(ir_run)
    return model, recognizer, trained


def evaluate_run(run_path: "str | os.PathLike | runs.TrainedRun", data_dir: str | os.PathLike,
                 options: EvalOptions = EvalOptions(), *, ir_path: "str | os.PathLike | runs.TrainedRun | None" = None,
                 progress: Callable[[str], None] | None = None) -> EvalResult:
    """Evaluates the checkpoint at ``run_path`` (workdir = latest step, or ``checkpoints/<step>``;
    or a run :func:`jointist_jax.runs.open` opened) on ``options.split`` of the TFDS dataset in
    ``data_dir``.

    Raises ``runs.CheckpointError`` for unusable runs and ``ValueError`` for a split without
    songs or audio at another sample rate.
    """
    model, recognizer, trained = load_models(run_path, ir_path)
    config, step = trained.config, trained.step
    predictor = Predictor(model, recognizer=recognizer, batch_windows=options.batch_windows,
                          max_rows=options.max_rows, spec=options.window_spec())
    transcribe, separate = predictor.can_transcribe, predictor.can_separate
    # The reference tests its standalone separator (no transcriber) on one crop per track.
    crop_separation = separate and not transcribe
    settings = [GT] if (transcribe or separate) else []
    if recognizer is not None and settings:
        settings.append(PREDICTED)

    transcription_scores = {s: [] for s in settings}
    separation_scores = {s: [] for s in settings}
    labels, song_probabilities = [], []
    crop_labels, crop_probabilities = [], []
    crop_separation_scores = []
    songs, media = [], []
    for index, track in enumerate(tracks_lib.iterate_tracks(data_dir, options.split)):
        if options.max_songs and index >= options.max_songs:
            break
        if track.sample_rate != SAMPLE_RATE:
            raise ValueError(f"{str(data_dir)!r} split {options.split!r}: track {track.track_id!r} is at "
                             f"{track.sample_rate} Hz; the models expect {SAMPLE_RATE} Hz")
        if progress is not None:
            progress(track.track_id)
        present = [int(c) for c in track.classes]
        summary: dict = {"track_id": track.track_id, "seconds": len(track.mix) / SAMPLE_RATE,
                         "instruments": _class_names(present)}
        ref_notes = references.reference_notes(track)
        ref_rolls = (rolls.reference_frame_rolls(ref_notes, predictor.spec.num_frames(len(track.mix)))
                     if transcribe else None)
        setting_classes = {GT: present}
        crop = None
        if recognizer is not None or crop_separation:
            crop = recognition_metrics.paper_crop(track.mix, track.notes.onsets, track.notes.offsets,
                                                  track.notes.classes, sample_rate=SAMPLE_RATE,
                                                  protocol=PAPER_CROP)
            if crop is not None:
                summary["paper_compat_crop_seconds"] = [crop.start / SAMPLE_RATE, crop.stop / SAMPLE_RATE]
        if crop is not None and crop_separation:
            scores = _crop_separation_scores(predictor, track, crop)
            crop_separation_scores.append(scores)
            summary["sdr_paper_compat"] = {instruments.CLASS_NAMES[c]: v for c, v in scores.sdr.items()}
        if recognizer is not None:
            choice = songs_lib.choose_instruments(predictor, track.mix, options)
            labels.append(references.recognition_labels(track, instruments.NUM_CLASSES))
            song_probabilities.append(_song_probability(choice.window_probabilities, options.ir_aggregate))
            summary["recognized_instruments"] = _class_names(choice.detected)
            if crop is not None:
                # One 10-s window: the crop (zero-padded if the song ends inside it).
                crop_probabilities.append(predictor.recognize(track.mix[crop.start:crop.stop])[0])
                crop_labels.append(crop.labels)
            if choice.detected_none:  # every class is processed (docs/reference.md §6.1)
                summary["recognizer_detected_none"] = True
            setting_classes[PREDICTED] = choice.classes
        keep_media = len(media) < options.media_songs
        for setting in settings:
            classes = setting_classes[setting]
            if not classes:  # a song with no labelled note: nothing to condition on or to score
                continue
            output = songs_lib.predict_and_decode(predictor, track.mix, classes, options, separate=separate)
            prediction, notes = output.prediction, output.notes
            song_entry: dict = {}
            if transcribe:
                est_rolls = {c: prediction.frame_output[k] for k, c in enumerate(prediction.class_ids)}
                est_onset_rolls = {c: prediction.reg_onset_output[k] for k, c in enumerate(prediction.class_ids)}
                scores = song_transcription_scores(
                    ref_notes, notes, ref_rolls, est_rolls, song=track.track_id,
                    frame_threshold=options.frame_threshold, est_onset_rolls=est_onset_rolls,
                    onset_threshold=options.onset_threshold)
                transcription_scores[setting].append(scores)
                song_entry["transcription"] = {instruments.CLASS_NAMES[c]: row for c, row in scores.per_class.items()}
                song_entry["transcription_flat"] = scores.flat
            stems = {}
            if separate:
                estimates = dict(zip(prediction.class_ids, prediction.waveform))
                silence = np.zeros_like(track.mix)
                stems = {c: (estimates.get(c, silence), track.stems.get(c)) for c in present}
                scores = song_separation_scores({c: (ref, est) for c, (est, ref) in stems.items()},
                                                song=track.track_id)
                separation_scores[setting].append(scores)
                song_entry["sdr"] = {instruments.CLASS_NAMES[c]: v for c, v in scores.sdr.items()}
                song_entry["sdr_skipped_without_stem"] = _class_names(scores.skipped)
            summary[setting] = song_entry
            if setting == GT and keep_media:
                media.append(SongMedia(track_id=track.track_id, duration=len(track.mix) / SAMPLE_RATE,
                                       reference_notes=ref_notes, predicted_notes=notes, mix=track.mix,
                                       stems=stems))
        songs.append(summary)
    if not songs:
        raise ValueError(f"split {options.split!r} of {str(data_dir)!r} has no songs to evaluate")

    scalars: dict[str, float] = {}
    per_class: dict[str, dict[str, float]] = {}

    def add(setting: str, report) -> None:
        scalars.update({f"{setting}/{k}": v for k, v in report.scalars.items()})
        per_class.update({f"{setting}/{k}": v for k, v in report.per_class.items()})

    for setting in settings:
        if transcribe:
            add(setting, aggregate_transcription(transcription_scores[setting]))
        if separate:
            add(setting, aggregate_separation(separation_scores[setting]))
    if crop_separation:
        # Songs not longer than one crop, or with no qualifying crop, have none (left out, counted).
        scalars[f"{GT}/sdr_paper_compat/num_crops"] = float(len(crop_separation_scores))
        if crop_separation_scores:
            add(GT, separation_metrics.paper_compat_separation_scores(crop_separation_scores))
    if recognizer is not None:
        add(RECOGNITION, recognition_scores(np.stack(labels), np.stack(song_probabilities),
                                            threshold=options.ir_threshold))
        # Songs not longer than one crop, or with no qualifying crop, have none (left out, counted).
        scalars[f"{RECOGNITION}/ir_paper_compat/num_crops"] = float(len(crop_labels))
        if crop_labels:
            add(RECOGNITION, recognition_metrics.paper_compat_recognition_scores(
                np.stack(crop_labels), np.stack(crop_probabilities)))  # the reference's threshold, 0.5
    scalars["num_songs"] = float(len(songs))
    return EvalResult(step=step, stage=config.stage, split=options.split, scalars=scalars, per_class=per_class,
                      songs=songs, media=media)
