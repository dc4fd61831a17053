"""Instrument-recognition metrics as the reference computes them (REFERENCE §7.5).

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
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn import metrics

from jointist_jax import instruments
from jointist_jax.evaluation.report import MetricReport

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
