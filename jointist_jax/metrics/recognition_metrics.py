"""Instrument-recognition metrics as the reference computes them (docs/reference.md §7.5).

Inputs are one row per evaluated clip: 0/1 labels and sigmoid probabilities over the 39 classes.
Only classes with at least one positive label in the set are scored; the rest are dropped
before every average (a class without positives has no defined AP or recall).

* AP: sklearn ``average_precision_score`` per class *across the set* (not the per-sample AP
  averaged over samples that the paper's appendix describes; that one is ``ir_mAP/samples``).
* F1: predictions ``probability > threshold`` (0.5), sklearn
  ``precision_recall_fscore_support(zero_division=0)``.

Names in :attr:`MetricReport.scalars`:

==================================================  ==============================================
name                                                meaning
==================================================  ==============================================
``ir_mAP/{macro,weighted,micro,samples}``           sklearn ``average_precision_score`` averages
``ir_{precision,recall,f1}/{micro,macro,``          sklearn ``precision_recall_fscore_support``
``weighted,samples}``                               averages at the threshold
``ir/num_classes_scored``                           classes with at least one positive label
==================================================  ==============================================

``samples`` averages are over clips; a clip with no positive among the scored classes
contributes 0 (sklearn's convention).

:attr:`MetricReport.per_class` has ``ap``, ``precision``, ``recall`` and ``f1``:
{class name: value} for the scored classes.

The paper's protocol (``_paper_compat``, docs/reference.md §4.3, §4.5, §7.5): the reference scores one fixed
10-s crop per test track instead of whole songs. :func:`paper_crop` finds that crop and its labels
as the reference's dataset does; :func:`paper_compat_recognition_scores` scores a set of crops with
the same metrics, named with ``_paper_compat`` after the metric (``ir_mAP_paper_compat/macro``,
``ir_f1_paper_compat/samples``, ``ir_paper_compat/num_classes_scored``, per-class
``ap_paper_compat``, ...).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
from sklearn import metrics

from jointist_jax import instruments
from jointist_jax.metrics.averaging import PAPER_COMPAT, MetricReport

THRESHOLD = 0.5
AVERAGES = ("micro", "macro", "weighted", "samples")


def _check(labels, probabilities) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, np.float64)
    expected = f"(clips, {instruments.NUM_CLASSES})"
    if labels.ndim != 2 or labels.shape[1] != instruments.NUM_CLASSES:
        raise ValueError(f"recognition labels: expected shape {expected}, got {labels.shape}")
    if probabilities.shape != labels.shape:
        raise ValueError(f"recognition probabilities: expected the labels' shape {labels.shape}, "
                         f"got {probabilities.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("recognition labels: expected 0/1 values")
    if not np.all(np.isfinite(probabilities)):
        raise ValueError("recognition probabilities: expected finite values")
    return labels.astype(np.int64), probabilities


def recognition_scores(labels, probabilities, *, threshold: float = THRESHOLD) -> MetricReport:
    """mAP and thresholded precision/recall/F1 over a set of clips (names in the module docstring).

    Args:
      labels: (clips, 39) 0/1 ground-truth instrument presence.
      probabilities: (clips, 39) predicted probabilities (sigmoid of the logits).
      threshold: a class is predicted where its probability exceeds this.

    Raises:
      ValueError: on bad shapes or values, or if no class has a positive label.
    """
    labels, probabilities = _check(labels, probabilities)
    scored = np.flatnonzero(labels.sum(axis=0) > 0)
    if len(scored) == 0:
        raise ValueError("recognition labels: no class has a positive label, nothing to score")
    y_true, y_score = labels[:, scored], probabilities[:, scored]
    y_pred = (y_score > threshold).astype(np.int64)
    names = [instruments.CLASS_NAMES[c] for c in scored]

    scalars: dict[str, float] = {"ir/num_classes_scored": float(len(scored))}
    with warnings.catch_warnings():
        # Clips with no positive label warn under the 'samples' AP; sklearn scores them 0, as documented.
        warnings.filterwarnings("ignore", message="No positive class found in y_true")
        for average in ("macro", "weighted", "micro", "samples"):
            scalars[f"ir_mAP/{average}"] = float(metrics.average_precision_score(y_true, y_score, average=average))
    for average in AVERAGES:
        p, r, f, _ = metrics.precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0)
        scalars.update({f"ir_precision/{average}": float(p), f"ir_recall/{average}": float(r),
                        f"ir_f1/{average}": float(f)})

    ap = metrics.average_precision_score(y_true, y_score, average=None)
    p, r, f, _ = metrics.precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    per_class = {key: dict(zip(names, map(float, values)))
                 for key, values in (("ap", ap), ("precision", p), ("recall", r), ("f1", f))}
    return MetricReport(scalars=scalars, per_class=per_class)


@dataclasses.dataclass(frozen=True)
class PaperCropProtocol:
    """Where the reference's fixed evaluation crop lies (docs/reference.md §4.3).

    Its dataset starts the fixed crop at 10 s, but the loop that skips silent or note-less crops
    always runs once and advances by 1 s first, so the first candidate starts at 11 s; each
    further candidate starts ``step_seconds`` later.
    """

    crop_seconds: float = 10.0
    first_start_seconds: float = 11.0
    step_seconds: float = 1.0


@dataclasses.dataclass(frozen=True)
class PaperCrop:
    """One track's evaluation crop: samples ``[start, stop)`` of the mix and its 0/1 labels (39,)."""

    start: int
    stop: int
    labels: np.ndarray


def paper_crop(mix, onsets, offsets, note_classes, *, sample_rate: int,
               protocol: PaperCropProtocol = PaperCropProtocol()) -> PaperCrop | None:
    """The crop the reference scores for one track, or None where it has none.

    Candidates start at ``protocol.first_start_seconds`` and move on by ``step_seconds`` while the
    crop is silent (all samples zero) or has no labelled note. A note labels its class when its
    onset *or* its offset lies strictly inside (start, start + crop_seconds): the reference's rule,
    kept here because it decides the paper's labels (a note spanning the whole crop labels nothing).
    A crop running past the end of the mix is cut there (the model pads it to one window).

    None: the mix is not longer than one crop (the reference refuses such tracks), or no candidate
    starting inside the mix qualifies (the reference would search forever).

    Args:
      mix: (L,) mono waveform.
      onsets, offsets: (N,) note times in seconds from the start of the mix.
      note_classes: (N,) class index of each note (0..38).
      sample_rate: of ``mix``.
      protocol: crop length and candidate starts.
    """
    mix = np.asarray(mix)
    onsets = np.asarray(onsets, np.float64)
    offsets = np.asarray(offsets, np.float64)
    note_classes = np.asarray(note_classes, np.int64)
    if mix.ndim != 1:
        raise ValueError(f"paper_crop: expected a mono mix (L,), got shape {mix.shape}")
    if not onsets.shape == offsets.shape == note_classes.shape or onsets.ndim != 1:
        raise ValueError(f"paper_crop: onsets {onsets.shape}, offsets {offsets.shape} and note_classes "
                         f"{note_classes.shape} must be equal-length 1-D arrays")
    if np.any((note_classes < 0) | (note_classes >= instruments.NUM_CLASSES)):
        raise ValueError(f"paper_crop: note classes must be in 0..{instruments.NUM_CLASSES - 1}")
    crop = int(round(protocol.crop_seconds * sample_rate))
    step = int(round(protocol.step_seconds * sample_rate))
    if len(mix) <= crop:
        return None
    start = int(round(protocol.first_start_seconds * sample_rate))
    while start < len(mix):
        stop = min(start + crop, len(mix))
        begin, end = start / sample_rate, start / sample_rate + protocol.crop_seconds
        inside = ((begin < onsets) & (onsets < end)) | ((begin < offsets) & (offsets < end))
        if np.any(mix[start:stop]) and np.any(inside):
            labels = np.zeros(instruments.NUM_CLASSES, np.int64)
            labels[note_classes[inside]] = 1
            return PaperCrop(start=start, stop=stop, labels=labels)
        start += step
    return None


def paper_compat_recognition_scores(labels, probabilities, *, threshold: float = THRESHOLD) -> MetricReport:
    """:func:`recognition_scores` of the reference's crops (one per track, :func:`paper_crop`), with
    ``_paper_compat`` after each metric's name (``ir_f1/macro`` -> ``ir_f1_paper_compat/macro``,
    ``ap`` -> ``ap_paper_compat``)."""
    return recognition_scores(labels, probabilities, threshold=threshold).with_suffix(PAPER_COMPAT)
