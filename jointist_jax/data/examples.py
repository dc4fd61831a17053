"""One example of the input pipeline: a clip's waveform, labels, sampled rows, their roll targets
and stems, from its record and crop start (:func:`build_example`; docs/reference.md §4.3, §4.4, §3.1).

The crop start is drawn by the caller (:mod:`jointist_jax.data.crops`), the rows by
:mod:`jointist_jax.data.sampler`, the rolls by :func:`jointist_jax.rolls.note_rolls`; the keys,
dtypes and shapes are :meth:`jointist_jax.data.spec.InputSpec.fields`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from jointist_jax import instruments, music, rolls
from jointist_jax.data import crops, records, sampler

if TYPE_CHECKING:
    from jointist_jax.data.spec import InputSpec


def _to_float(samples: np.ndarray, length: int) -> np.ndarray:
    """int16 samples as float32 in [-1, 1), zero-padded at the end to ``length``."""
    piece = samples.astype(np.float32) / 32768.0
    short = length - piece.shape[-1]
    if short > 0:
        piece = np.pad(piece, [(0, 0)] * (piece.ndim - 1) + [(0, short)])
    return piece


def build_example(record: records.Record, start: int, rng: np.random.Generator, spec: InputSpec, *,
                  valid: float = 1.0) -> dict[str, np.ndarray]:
    """The outputs of one clip from its record and absolute crop start (drawn by the caller)."""
    c, sr = spec.clip_samples, spec.sample_rate
    window_start = int(record["window_start"])
    track_length = int(record["track_length"])
    seconds = c / sr

    offset = start - window_start
    labels = crops.crop_labels(record, offset / sr, seconds)
    mix = record.mix(offset, c)
    if len(mix) < c and start + c <= track_length:
        raise ValueError(
            f"record {record['track_id']!r} window {int(record['window_index'])} holds too few samples "
            f"for a {c}-sample crop at offset {offset}: clip_seconds exceeds the dataset's clip")

    out = {"waveform": _to_float(mix, c), "instruments": labels}
    if spec.rows:
        present = np.flatnonzero(labels)
        class_ids, is_positive = sampler.sample_conditions(
            rng, present, spec.num_positive, spec.num_negative, spec.temperature)
        out["class_ids"] = class_ids
        out["conditions"] = instruments.condition_one_hot(class_ids)
        out["is_positive"] = is_positive.astype(np.float32)
        positives = sorted(set(class_ids[is_positive].tolist()))
        if spec.targets:
            by_class = {}
            for cls in positives:
                sel = record["note_class"] == cls
                by_class[cls] = rolls.note_rolls(
                    record["note_onset"][sel], record["note_offset"][sel], record["note_pitch"][sel],
                    start=offset / sr, seconds=seconds)
            out.update(sampler.row_rolls(class_ids, is_positive, by_class, frames=spec.frames,
                                         num_keys=music.NUM_PITCHES,
                                         transcribe_negatives=spec.transcribe_negatives))
        if spec.stems:
            stem_row = {int(cls): i for i, cls in enumerate(record["stem_classes"])}
            # Only the stems of the sampled positive classes are decoded, and only up to the crop.
            wanted = [cls for cls in positives if cls in stem_row]
            stem_crops = record.stems([stem_row[cls] for cls in wanted], offset, c)
            stems = {cls: _to_float(crop, c) for cls, crop in zip(wanted, stem_crops)}
            out["source"], out["source_valid"] = sampler.row_sources(class_ids, is_positive, stems, c)
    if not spec.random_crop:
        out["valid"] = np.float32(valid)
    return out
