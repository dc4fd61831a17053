"""Whole tracks for evaluation, reassembled from the stored windows of a split.

Records are read in file order with :mod:`records` (no tf.data interleaving, which would mix
tracks); consecutive records of one ``track_id`` are one track, put back together by
:func:`jointist_jax.data.packing.assemble_track` (the builder's own inverse of its packing).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator

import numpy as np

from jointist_jax.data.packing import assemble_track
from jointist_jax.data import records
from jointist_jax.music import Notes


@dataclasses.dataclass
class Track:
    """One whole track: float32 audio in [-1, 1) and its labelled notes."""

    track_id: str
    sample_rate: int
    mix: np.ndarray                # float32 (N,)
    stems: dict[int, np.ndarray]   # class index -> float32 (N,)
    notes: Notes                   # with classes; times in seconds from the track start, sorted by onset
    classes: np.ndarray            # int32: classes with a note anywhere in the track


def _to_track(windows: list[dict], sample_rate: int) -> Track:
    whole = assemble_track(windows, sample_rate)
    stems = {int(cls): whole["stems"][i].astype(np.float32) / 32768.0
             for i, cls in enumerate(whole["stem_classes"])}
    notes = Notes(onsets=whole["note_onset"], offsets=whole["note_offset"], pitches=whole["note_pitch"],
                  velocities=whole["note_velocity"], classes=whole["note_class"])
    return Track(track_id=whole["track_id"], sample_rate=sample_rate,
                 mix=whole["mix"].astype(np.float32) / 32768.0, stems=stems, notes=notes,
                 classes=np.asarray(whole["track_classes"], np.int32))


def iterate_tracks(data_dir, split: str) -> Iterator[Track]:
    """Yields every track of ``split`` in dataset order, one at a time (one track in memory).

    A track's windows are read together (concurrently from a bucket). Raises ``ValueError`` if a
    track's windows are not stored consecutively and in order.
    """
    dataset = records.open_dataset(data_dir)
    index = records.split_index(dataset, split)
    seen: set[str] = set()
    with records.RecordReader(dataset, index) as reader:
        for rows in _track_runs(index.track_id):
            track_id = index.track_id[rows[0]]
            if track_id in seen:
                raise ValueError(f"split {split!r} of {os.fspath(dataset.path)!r}: the windows of track "
                                 f"{track_id!r} are not stored consecutively")
            seen.add(track_id)
            windows = [dataset.features.deserialize_example_np(data) for data in reader.read_many_bytes(rows)]
            yield _to_track(windows, dataset.sample_rate)


def _track_runs(track_ids: np.ndarray) -> list[list[int]]:
    """Row numbers of each run of equal consecutive track ids."""
    runs: list[list[int]] = []
    for r, track_id in enumerate(track_ids):
        if runs and track_ids[runs[-1][0]] == track_id:
            runs[-1].append(r)
        else:
            runs.append([r])
    return runs
