"""Instrument-recognition mAP and F1 (docs/reference.md §7.5) against sklearn on a tiny set."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_fscore_support

from jointist_jax.metrics.recognition_metrics import paper_compat_recognition_scores, paper_crop, recognition_scores

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


# ------------------------------------------------------------------------------ the paper's crop
SR = 100  # a low sample rate keeps the test arrays small; the rule is in seconds


def _song(seconds=40.0):
    return np.full(int(seconds * SR), 0.1, np.float32)


def test_paper_crop_starts_at_11_s_and_labels_notes_inside_it():
    # Piano 12-13 s (inside), bass 30-31 s (outside), drums 5-12 s (offset inside).
    crop = paper_crop(_song(), [12.0, 30.0, 5.0], [13.0, 31.0, 12.0], [PIANO, BASS, DRUMS], sample_rate=SR)
    assert (crop.start, crop.stop) == (11 * SR, 21 * SR)
    assert np.flatnonzero(crop.labels).tolist() == [PIANO, DRUMS]


def test_paper_crop_label_rule_is_the_references_strict_one():
    # Guitar spans the whole crop (onset 2 s, offset 30 s): no label. Bass starts exactly at 11 s
    # and ends after 21 s: no label. Piano ends exactly at 21 s but starts inside: label.
    crop = paper_crop(_song(), [2.0, 11.0, 15.0], [30.0, 25.0, 21.0], [GUITAR, BASS, PIANO], sample_rate=SR)
    assert crop.start == 11 * SR and np.flatnonzero(crop.labels).tolist() == [PIANO]


def test_paper_crop_moves_on_by_1_s_past_silent_or_note_less_crops():
    mix = _song()
    mix[: 24 * SR] = 0.0  # the crops starting at 11..14 s are all silence
    crop = paper_crop(mix, [12.0, 26.0], [13.0, 27.0], [PIANO, BASS], sample_rate=SR)
    # (15, 25) and (16, 26) s have sound but no note strictly inside (the bass starts at 26 s);
    # (17, 27) s holds the bass onset.
    assert crop.start == 17 * SR and np.flatnonzero(crop.labels).tolist() == [BASS]


def test_paper_crop_none_for_short_songs_or_no_qualifying_crop():
    assert paper_crop(_song(10.0), [1.0], [2.0], [PIANO], sample_rate=SR) is None  # not longer than a crop
    assert paper_crop(_song(40.0), [1.0], [2.0], [PIANO], sample_rate=SR) is None  # notes only before 11 s
    short = paper_crop(_song(15.0), [12.0], [13.0], [PIANO], sample_rate=SR)  # crop cut at the end
    assert (short.start, short.stop) == (11 * SR, 15 * SR)
    with pytest.raises(ValueError, match="note classes must be in 0..38"):
        paper_crop(_song(), [12.0], [13.0], [39], sample_rate=SR)


def test_paper_compat_scores_are_the_same_metrics_renamed():
    labels, probs = tiny_set()
    ours, paper = recognition_scores(labels, probs), paper_compat_recognition_scores(labels, probs)
    assert paper.scalars == {name.split("/")[0] + "_paper_compat/" + name.split("/")[1]: value
                             for name, value in ours.scalars.items()}
    assert paper.scalars["ir_mAP_paper_compat/macro"] == pytest.approx((5 / 6 + 2) / 3)
    assert paper.per_class["f1_paper_compat"] == ours.per_class["f1"]
