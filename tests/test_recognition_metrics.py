"""Instrument-recognition mAP and F1 (REFERENCE §7.5) against sklearn on a tiny set."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_fscore_support

from jointist_jax.evaluation.recognition_metrics import recognition_scores

PIANO, BASS, GUITAR, DRUMS = 0, 10, 9, 38


def tiny_set():
    """4 clips; piano, bass and drums have positives; guitar has none but is predicted once."""
    labels = np.zeros((4, 39), np.int64)
    probs = np.full((4, 39), 0.05)
    labels[[0, 1], PIANO] = 1
    probs[:, PIANO] = [0.9, 0.4, 0.6, 0.1]
    labels[[0, 2, 3], BASS] = 1
    probs[:, BASS] = [0.8, 0.3, 0.7, 0.55]
    labels[3, DRUMS] = 1
    probs[:, DRUMS] = [0.2, 0.1, 0.3, 0.95]
    probs[:, GUITAR] = [0.7, 0.0, 0.0, 0.0]
    return labels, probs


def test_map_and_f1_match_sklearn_on_classes_with_positives():
    labels, probs = tiny_set()
    report = recognition_scores(labels, probs)
    kept = [PIANO, BASS, DRUMS]
    y, s = labels[:, kept], probs[:, kept]
    assert report.scalars["ir/num_classes_scored"] == 3.0
    for average in ("macro", "weighted", "micro"):
        assert report.scalars[f"ir_mAP/{average}"] == pytest.approx(average_precision_score(y, s, average=average))
    for average in ("micro", "macro", "weighted", "samples"):
        p, r, f, _ = precision_recall_fscore_support(y, s > 0.5, average=average, zero_division=0)
        assert report.scalars[f"ir_f1/{average}"] == pytest.approx(f)
        assert report.scalars[f"ir_precision/{average}"] == pytest.approx(p)
        assert report.scalars[f"ir_recall/{average}"] == pytest.approx(r)


def test_hand_computed_values():
    labels, probs = tiny_set()
    report = recognition_scores(labels, probs)
    # Piano: ranking 0.9(+) 0.6(-) 0.4(+) -> AP = (1 + 2/3) / 2. Bass: 0.8(+) 0.7(+) 0.55(+) 0.3(-) -> 1.
    assert report.per_class["ap"] == pytest.approx({"Piano": 5 / 6, "Bass": 1.0, "Drums": 1.0})
    assert report.scalars["ir_mAP/macro"] == pytest.approx((5 / 6 + 2) / 3)
    assert report.scalars["ir_mAP/weighted"] == pytest.approx((2 * 5 / 6 + 3 + 1) / 6)
    # Piano predicted in clips 0 and 2 (P = R = 1/2); bass and drums perfect.
    assert report.per_class["f1"] == pytest.approx({"Piano": 0.5, "Bass": 1.0, "Drums": 1.0})
    assert report.scalars["ir_f1/macro"] == pytest.approx(2.5 / 3)


def test_class_without_positives_is_excluded():
    labels, probs = tiny_set()
    report = recognition_scores(labels, probs)
    assert "Electric Guitar" not in report.per_class["f1"]
    # Kept, guitar's false positive would count in micro precision.
    with_guitar = precision_recall_fscore_support(labels[:, [PIANO, BASS, DRUMS, GUITAR]],
                                                  probs[:, [PIANO, BASS, DRUMS, GUITAR]] > 0.5,
                                                  average="micro", zero_division=0)[0]
    assert report.scalars["ir_precision/micro"] > with_guitar


def test_threshold_is_strictly_greater():
    labels, probs = tiny_set()
    probs[0, PIANO] = 0.5
    assert recognition_scores(labels, probs).per_class["recall"]["Piano"] == 0.0
    assert recognition_scores(labels, probs, threshold=0.45).per_class["recall"]["Piano"] == 0.5


def test_bad_inputs_raise_clear_errors():
    labels, probs = tiny_set()
    with pytest.raises(ValueError, match=r"expected shape \(clips, 39\)"):
        recognition_scores(labels[:, :38], probs[:, :38])
    with pytest.raises(ValueError, match="probabilities: expected the labels' shape"):
        recognition_scores(labels, probs[:3])
    with pytest.raises(ValueError, match="0/1"):
        recognition_scores(labels * 2, probs)
    with pytest.raises(ValueError, match="no class has a positive"):
        recognition_scores(np.zeros_like(labels), probs)
