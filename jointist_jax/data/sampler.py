"""The instrument sampler and per-row targets (docs/reference.md §3.1, docs/deviations.md 8 and 14).

One clip becomes ``K = num_positive + num_negative`` rows: positives first (classes present in
the crop, drawn with replacement, rare classes favoured), then negatives (absent classes, drawn
uniformly with replacement, ``Empty`` included).

Silent crops (no class present). The reference redraws the crop until an instrument is present;
the pipeline redraws it over the whole track a bounded number of times
(``crops.MAX_CROP_REDRAWS``). When a crop stays silent, :func:`sample_conditions` returns *all-negative* rows: every row is drawn from the
absent classes, which are then all 40 conditions.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from jointist_jax import instruments


def sample_conditions(rng: np.random.Generator, present, num_positive: int, num_negative: int,
                      temperature: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Draws the condition classes of one clip's rows.

    Args:
      rng: the row sampler's generator.
      present: class indices (0..38) present in the crop; duplicates are ignored.
      num_positive: positive rows, drawn with replacement with p ∝ (1/occurrence)^temperature
        restricted to ``present``.
      num_negative: negative rows, drawn uniformly with replacement from the 40 conditions not in
        ``present`` (``Empty`` = 39 is always a candidate).
      temperature: sampler temperature (0 = uniform over present classes).

    Returns:
      ``(class_ids int32 (K,), is_positive bool (K,))``, positives first. With no present class,
      all ``K`` rows are negatives (see the module docstring).
    """
    if num_positive < 0 or num_negative < 0:
        raise ValueError(f"num_positive and num_negative must be >= 0, got {num_positive}, {num_negative}")
    present = np.unique(np.asarray(present, dtype=np.int64).reshape(-1))
    if np.any((present < 0) | (present >= instruments.NUM_CLASSES)):
        raise ValueError(f"present classes must lie in 0..{instruments.NUM_CLASSES - 1}, got {present.tolist()}")
    absent = np.setdiff1d(np.arange(instruments.CONDITION_SIZE), present)
    if len(present) == 0:
        ids = rng.choice(absent, size=num_positive + num_negative, replace=True)
        return ids.astype(np.int32), np.zeros(len(ids), dtype=bool)
    weights = instruments.occurrence_weights(temperature)[present]
    positives = rng.choice(present, size=num_positive, replace=True, p=weights / weights.sum())
    negatives = rng.choice(absent, size=num_negative, replace=True)
    ids = np.concatenate([positives, negatives]).astype(np.int32)
    return ids, np.arange(len(ids)) < num_positive


def row_rolls(class_ids: np.ndarray, is_positive: np.ndarray, class_rolls: Mapping[int, Mapping[str, np.ndarray]],
              *, frames: int, num_keys: int, transcribe_negatives: bool = False) -> dict[str, np.ndarray]:
    """Stacks per-row piano-roll targets, (K, frames, num_keys) each.

    A positive row gets its class's rolls from ``class_rolls``. A negative row gets all-zero rolls
    and a zero mask (the reference: no transcription loss), or, with ``transcribe_negatives``, a
    mask of ones so the model is trained to output silence (docs/deviations.md 14).
    """
    k = len(class_ids)
    names = ("onset_roll", "reg_onset_roll", "frame_roll", "mask_roll")
    out = {name: np.zeros((k, frames, num_keys), dtype=np.float32) for name in names}
    for row, (cls, positive) in enumerate(zip(class_ids, is_positive)):
        if positive:
            if int(cls) not in class_rolls:
                raise KeyError(f"positive row {row} has class {int(cls)} without rolls")
            for name in names:
                out[name][row] = class_rolls[int(cls)][name]
        elif transcribe_negatives:
            out["mask_roll"][row] = 1.0
    return out


def row_sources(class_ids: np.ndarray, is_positive: np.ndarray, stems: Mapping[int, np.ndarray],
                length: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row separation targets: ``(source f32 (K, length), source_valid f32 (K,))``.

    A positive row gets its class's stem crop and is valid only if the class has a stem (else
    silent and invalid, as the reference's ``source_masks``). A negative row is silent and always
    valid (docs/deviations.md 14 fixes the reference, which copied the last positive's mask).
    """
    k = len(class_ids)
    source = np.zeros((k, length), dtype=np.float32)
    valid = np.ones(k, dtype=np.float32)
    for row, (cls, positive) in enumerate(zip(class_ids, is_positive)):
        if not positive:
            continue
        stem = stems.get(int(cls))
        if stem is None:
            valid[row] = 0.0
        else:
            source[row] = stem
    return source, valid
