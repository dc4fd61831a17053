"""Every TFRecord read is CRC-checked: one flipped bit in a record's audio, in a label field or in
its length header stops training, evaluation and the index scan with an error naming the shard,
the record, its byte offset and its track; a saved record index that no longer matches its build
is not used."""

import io
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from jointist_jax.data import pipeline, record_scanner, records, tracks
from jointist_jax.data.spec import InputSpec
from tfrecord_helpers import copy_dataset, flip_record, framing

FIELDS = ("mix", "note_offset", "length")


def test_masked_crc_matches_tensorflow_framing(tmp_path):
    """The masked CRC-32C of both the length field and the data is the one TFRecordWriter writes."""
    import tensorflow as tf

    payload = b"jointist" * 1000
    path = tmp_path / "one.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(payload)
    raw = path.read_bytes()
    assert raw[12:-4] == payload
    assert record_scanner.masked_crc32c(raw[:8]) == int.from_bytes(raw[8:12], "little")
    assert record_scanner.masked_crc32c(payload) == int.from_bytes(raw[-4:], "little")


def _expected_message(path, record: int, header: int, track_id: str, field: str) -> str:
    who = (re.escape(f"track_id unreadable from the corrupt payload (the record index says {track_id!r})")
           if field == "length" else re.escape(f"track_id {track_id!r}"))
    problem = "length field does not match" if field == "length" else "data CRC-32C mismatch"
    return f"{re.escape(repr(str(path)))}: corrupted record {record} at byte {header} \\({who}\\): .*{problem}"


@pytest.mark.parametrize("field", FIELDS)
def test_training_iterator_stops_at_the_corrupt_record(tiny_tfds_dir, tmp_path, field):
    data = copy_dataset(tiny_tfds_dir, tmp_path)
    shard = sorted(data.glob("slakh2100-train.tfrecord-*"))[0]
    header, track_id = flip_record(shard, 0, field)
    spec = InputSpec(global_batch=2, num_positive=1, clip_seconds=2.0, targets=False, stems=False)
    with pipeline.make_train_iterator(data, "train", spec, process_index=0, process_count=1) as pipe:
        with pytest.raises(records.CorruptRecordError, match=_expected_message(shard, 0, header, track_id, field)):
            for _, _ in zip(range(32), pipe.local_batches()):
                pass


@pytest.mark.parametrize("field", FIELDS)
def test_evaluation_stops_at_the_corrupt_record(tiny_tfds_dir, tmp_path, field):
    """Evaluation reads whole tracks of the validation split with data/tracks.py."""
    data = copy_dataset(tiny_tfds_dir, tmp_path)
    shard = sorted(data.glob("slakh2100-validation.tfrecord-*"))[-1]
    header, track_id = flip_record(shard, 0, field)
    seen = []
    with pytest.raises(records.CorruptRecordError, match=_expected_message(shard, 0, header, track_id, field)):
        for track in tracks.iterate_tracks(data, "validation"):
            seen.append(track.track_id)
    assert track_id not in seen


def _two_record_shard(tiny_tfds_dir, tmp_path) -> Path:
    """Two train shards of one record each, concatenated into one shard of two records."""
    first, second = sorted(records.dataset_dir(tiny_tfds_dir).glob("slakh2100-train.tfrecord-*"))[:2]
    merged = tmp_path / "merged.tfrecord"
    merged.write_bytes(Path(first).read_bytes() + Path(second).read_bytes())
    return merged


def test_index_scan_checks_the_length_crc(tiny_tfds_dir, tmp_path):
    merged = _two_record_shard(tiny_tfds_dir, tmp_path)
    clean = records.scan_index([merged])
    assert len(clean) == 2
    header, _ = flip_record(merged, 1, "length")
    assert header == framing(merged)[1][0] > 0
    with pytest.raises(records.CorruptRecordError,
                       match=rf"{re.escape(repr(str(merged)))}: corrupted record 1 at byte {header}: the "
                             r"CRC-32C of its length field does not match"):
        records.scan_index([merged])


def test_split_without_index_is_scanned_and_the_scan_catches_a_length_flip(tiny_tfds_dir, tmp_path):
    data = copy_dataset(tiny_tfds_dir, tmp_path)
    (data / f"train{records.INDEX_SUFFIX}").unlink()
    shard = sorted(data.glob("slakh2100-train.tfrecord-*"))[3]
    flip_record(shard, 0, "length")
    with pytest.raises(records.CorruptRecordError, match=re.escape(repr(str(shard)))):
        pipeline.make_train_iterator(data, "train", InputSpec(global_batch=2, clip_seconds=2.0), process_index=0,
                                     process_count=1)


@pytest.mark.parametrize("field", ("mix", "note_offset"))
def test_reader_names_the_record_number_and_offset_in_its_shard(tiny_tfds_dir, tmp_path, field):
    merged = _two_record_shard(tiny_tfds_dir, tmp_path)
    dataset = records.open_dataset(tiny_tfds_dir)
    index = records.scan_index([merged])
    header, track_id = flip_record(merged, 1, field)
    with records.RecordReader(dataset, index) as reader:
        assert reader.read(0)["track_id"].decode() == index.track_id[0]  # the other record is intact
        with pytest.raises(records.CorruptRecordError, match=_expected_message(merged, 1, header, track_id, field)):
            reader.read_bytes(1)
        assert reader.records_read == 1


def test_track_id_unreadable_from_a_payload_says_so(tiny_tfds_dir, tmp_path):
    """A bit flipped in the track_id key's length makes the payload unparsable: the message says
    so and gives the index's track id."""
    merged = _two_record_shard(tiny_tfds_dir, tmp_path)
    dataset = records.open_dataset(tiny_tfds_dir)
    index = records.scan_index([merged])
    header, length = framing(merged)[0]
    data = merged.read_bytes()[header + 12:header + 12 + length]
    key = data.find(b"\n\x08track_id")  # the map entry's key: tag 0x0a, length 8
    assert key > 0 and data.count(b"\n\x08track_id") == 1
    raw = bytearray(merged.read_bytes())
    raw[header + 12 + key + 1] = 0x7F  # the key's length now runs past the entry
    merged.write_bytes(bytes(raw))
    assert record_scanner.payload_track_id(bytes(raw[header + 12:header + 12 + length])) is None
    with records.RecordReader(dataset, index) as reader:
        with pytest.raises(records.CorruptRecordError, match=_expected_message(merged, 0, header,
                                                                                str(index.track_id[0]), "length")
                           .replace("length field does not match", "data CRC-32C mismatch")):
            reader.read_bytes(0)


def test_a_record_is_read_from_a_bucket_with_its_framing_in_one_request(tiny_tfds_dir, tmp_path, gcs):
    from jointist_jax import storage

    remote = f"gs://{gcs.new_bucket('framing')}/tfds/1.0.0"
    storage.upload_tree(records.dataset_dir(tiny_tfds_dir), remote)
    dataset = records.open_dataset(remote)
    index = records.split_index(dataset, "train")
    with records.RecordReader(dataset, index) as reader:
        data = reader.read_bytes(2)
        assert reader._files.requests == 1
        assert reader.bytes_read == 12 + len(data) + 4 == 12 + int(index.length[2]) + 4
        assert reader.read_many_bytes([0, 1, 2])[2] == data
        assert reader._files.requests == 4


def test_corrupt_record_in_a_bucket_is_caught(tiny_tfds_dir, tmp_path, gcs):
    from jointist_jax import storage

    data = copy_dataset(tiny_tfds_dir, tmp_path)
    shard = sorted(data.glob("slakh2100-validation.tfrecord-*"))[0]
    header, track_id = flip_record(shard, 0, "mix")
    remote = f"gs://{gcs.new_bucket('crc')}/tfds/1.0.0"
    storage.upload_tree(data, remote)
    with pytest.raises(records.CorruptRecordError,
                       match=_expected_message(f"{remote}/{shard.name}", 0, header, track_id, "mix")):
        list(tracks.iterate_tracks(remote, "validation"))


# --- the saved record index ---------------------------------------------------------------------

def _load_warning(data, caplog) -> tuple[object, str]:
    dataset = records.open_dataset(data)
    with caplog.at_level(logging.WARNING, logger=records.__name__):
        loaded = records.load_index(dataset, "train")
    return loaded, " ".join(r.getMessage() for r in caplog.records)


def _assert_scan_is_used(data) -> None:
    dataset = records.open_dataset(data)
    index = records.split_index(dataset, "train")
    fresh = records.scan_index(dataset.split_files("train"))
    for column in ("file_index", "offset", "length", "track_id", "window_start"):
        np.testing.assert_array_equal(getattr(index, column), getattr(fresh, column))


def test_saved_index_of_the_current_build_is_used(tiny_tfds_dir, caplog):
    loaded, warned = _load_warning(records.dataset_dir(tiny_tfds_dir), caplog)
    assert loaded is not None and len(loaded) == 8 and warned == ""


def test_index_of_resized_shards_is_not_used(tiny_tfds_dir, tmp_path, caplog):
    data = copy_dataset(tiny_tfds_dir, tmp_path)
    shard = sorted(data.glob("slakh2100-train.tfrecord-*"))[1]
    before = shard.stat().st_size
    shard.write_bytes(shard.read_bytes() * 2)  # a valid shard of two records
    loaded, warned = _load_warning(data, caplog)
    assert loaded is None
    assert f"shard {shard.name} is {2 * before} bytes, the index was saved when it was {before}" in warned
    _assert_scan_is_used(data)


def test_index_without_build_identity_is_not_used(tiny_tfds_dir, tmp_path, caplog):
    data = copy_dataset(tiny_tfds_dir, tmp_path)
    path = data / "train.record_index.npz"
    with np.load(path) as saved:
        old = {k: saved[k] for k in saved.files if k != "build"}
    buffer = io.BytesIO()
    np.savez(buffer, **old)
    path.write_bytes(buffer.getvalue())
    loaded, warned = _load_warning(data, caplog)
    assert loaded is None and "it predates the build identity" in warned
    _assert_scan_is_used(data)
