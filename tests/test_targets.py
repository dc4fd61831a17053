"""Recognizer labels of one crop (docs/reference.md §4.5, docs/deviations.md 12)."""

import numpy as np
import pytest

from jointist_jax.data import targets


def test_instrument_labels_mark_overlapping_classes_only():
    labels = targets.instrument_labels([0, 5, 38, 12], [1.0, -2.0, 11.0, -1.0], [2.0, -1.0, 12.0, 20.0],
                                       start=0.0, seconds=10.0)
    assert labels.shape == (40,) and labels.dtype == np.float32
    assert np.flatnonzero(labels).tolist() == [0, 12]  # 12 spans the window (docs/deviations.md 12)
    with pytest.raises(ValueError, match="0..38"):
        targets.instrument_labels([39], [1.0], [2.0], 0.0, 10.0)
