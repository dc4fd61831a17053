"""Crop sampling (jointist_jax/data/crops.py): valid crop starts, silent-crop redraws and the fixed
evaluation crops, on records built in memory; and one example built from a crop
(jointist_jax/data/examples.py). The pipeline end to end is tests/test_input_pipeline.py."""

import numpy as np
import pytest

from jointist_jax.data import crops, examples, records
from jointist_jax.data.spec import InputSpec

SR = 16000
CLIP = SR


def _record(note_onsets, length=3 * SR, track_length=None, **fields):
    m = len(note_onsets)
    return records.Record.from_arrays({**{
        "track_id": b"T", "window_index": 0, "window_start": 0,
        "track_length": track_length or length,
        "mix": np.arange(length, dtype=np.int16), "stem_classes": np.array([4], np.int32),
        "stems": np.ones((1, length), np.int16), "note_class": np.full(m, 4, np.int32),
        "note_pitch": np.full(m, 60, np.int32), "note_velocity": np.full(m, 90, np.int32),
        "note_onset": np.asarray(note_onsets, np.float32),
        "note_offset": np.asarray(note_onsets, np.float32) + 0.2, "track_classes": np.array([4], np.int32)},
        **fields})


SPEC = InputSpec(global_batch=1, clip_seconds=CLIP / SR, num_positive=2, num_negative=1, temperature=0.5,
                 transcribe_negatives=False, targets=True, stems=True)


def test_silent_crop_is_redrawn_elsewhere_in_its_track():
    silent = _record([2.5])  # the only note of this window is at 2.5 s: a crop at 0 has no note
    later = _record([0.3], window_index=1, window_start=3 * SR, track_length=6 * SR)
    reads = []

    def read(record_id):
        reads.append(record_id)
        return {"first": silent, "later": later}[record_id]

    record, start = crops.draw_audible_crop(("first", 0), lambda: ("later", 3 * SR), read, SPEC)
    assert record is later and start == 3 * SR and reads == ["first", "later"]
    out = examples.build_example(record, start, np.random.default_rng(0), SPEC)
    assert out["instruments"][4] == 1 and out["class_ids"][:2].tolist() == [4, 4]
    assert out["frame_roll"][0].any() and out["source_valid"].tolist() == [1, 1, 1]
    # An audible first crop is kept without reading anything else.
    reads.clear()
    assert crops.draw_audible_crop(("first", 2 * SR), lambda: ("later", 3 * SR), read, SPEC) == (silent, 2 * SR)
    assert reads == ["first"]


def test_crop_with_notes_but_silent_audio_is_redrawn():
    quiet = _record([0.1], mix=np.zeros(3 * SR, np.int16))
    assert not crops.is_audible(quiet, 0, SPEC) and crops.is_audible(_record([0.1]), 0, SPEC)
    record, start = crops.draw_audible_crop(("quiet", 0), lambda: ("loud", SR),
                                            {"quiet": quiet, "loud": _record([1.2])}.get, SPEC)
    assert start == SR and crops.is_audible(record, start, SPEC)


def test_crop_that_stays_silent_gets_all_negative_rows():
    redraws = []

    def redraw():
        redraws.append(1)
        return "silent", SR

    record, start = crops.draw_audible_crop(("silent", 0), redraw, {"silent": _record([])}.get, SPEC)
    assert len(redraws) == crops.MAX_CROP_REDRAWS and start == SR
    out = examples.build_example(record, start, np.random.default_rng(0), SPEC)
    assert not out["instruments"].any() and not out["is_positive"].any()
    assert not out["mask_roll"].any() and out["source_valid"].tolist() == [1, 1, 1]


def test_tracks_shorter_than_one_clip_are_left_out_of_training():
    """The reference refuses a track shorter than one crop; no zero-padded crop is drawn from it."""
    clip = SR
    index = records.RecordIndex(
        files=[], file_index=np.zeros(3, np.int32), offset=np.zeros(3, np.int64), length=np.zeros(3, np.int64),
        track_id=np.array(["long", "short", "exact"]), window_index=np.zeros(3, np.int64),
        window_start=np.zeros(3, np.int64), track_length=np.array([3 * SR, SR - 1, SR], np.int64))
    table = crops.crop_table(index, clip, hop_samples=None)
    assert np.diff(table.cumulative).tolist() == [2 * SR + 1, 0, 1]
    tracks = crops.TrackStarts.of(index, table)
    assert len(tracks) == 2 and tracks.track_of_record.tolist() == [0, -1, 1]
    assert crops.eval_crops(index, table, clip, SR, offset_seconds=1.0) == [(0, SR), (2, 0)]  # nor validated


def test_silent_or_note_less_evaluation_crop_moves_on_by_one_second():
    """As the reference's validation loop: a track's only note is at 2.5 s (in its second window),
    so the candidates at 0 s and 1 s hold no note and the crop starts at 2 s."""
    first = _record([], length=3 * SR, track_length=5 * SR)
    second = _record([0.5], length=3 * SR, track_length=5 * SR, window_index=1, window_start=2 * SR)
    index = records.RecordIndex(
        files=[], file_index=np.zeros(2, np.int32), offset=np.zeros(2, np.int64), length=np.zeros(2, np.int64),
        track_id=np.array(["T", "T"]), window_index=np.array([0, 1]), window_start=np.array([0, 2 * SR]),
        track_length=np.array([5 * SR, 5 * SR]))
    table = crops.crop_table(index, CLIP, hop_samples=2 * SR)
    (crop,) = crops.eval_crops(index, table, CLIP, SR, offset_seconds=0.0)
    assert crop == (0, 0)
    record, start = crops.audible_eval_crop(index, table, crop, [first, second].__getitem__, SPEC)
    assert record is second and start == 2 * SR
    # A track with no audible candidate keeps the last one (the reference would loop forever).
    record, start = crops.audible_eval_crop(index, table, crop, [first, first].__getitem__, SPEC)
    assert start == 4 * SR


# --- one example of a crop (jointist_jax/data/examples.py) ---------------------------------------

def test_record_shorter_than_the_crop_raises():
    record = _record([0.1], length=SR // 2, track_length=3 * SR)
    with pytest.raises(ValueError, match="too few samples"):
        examples.build_example(record, 0, np.random.default_rng(0), SPEC)


def test_default_ten_second_shapes():
    spec = InputSpec(global_batch=1, clip_seconds=10.0, num_positive=2, num_negative=2, temperature=0.5,
                     transcribe_negatives=False, targets=True, stems=True)
    record = _record([0.5, 4.0, 9.0], length=12 * SR)
    out = examples.build_example(record, 0, np.random.default_rng(0), spec)
    shapes = {name: shape for name, _, shape in spec.fields()}
    assert shapes["frame_roll"] == (4, 1001, 88) and shapes["source"] == (4, 160000)
    assert {k: v.shape for k, v in out.items()} == shapes
