"""Copying a built dataset and damaging single bytes of its TFRecords in tests, with every byte
position found by parsing the framing and the ``tf.train.Example``, never by a fixed offset."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


def copy_dataset(tfds_dir, tmp_path) -> Path:
    """A copy of the built version directory under ``tmp_path`` (shards, JSON, record indexes)."""
    from jointist_jax.data import records

    target = Path(tmp_path) / "copy" / "1.0.0"
    shutil.copytree(records.dataset_dir(tfds_dir), target)
    return target


def framing(path) -> list[tuple[int, int]]:
    """``(header byte, data length)`` of every record of a TFRecord file, by walking its lengths."""
    raw = Path(path).read_bytes()
    out, pos = [], 0
    while pos < len(raw):
        length = int(np.frombuffer(raw[pos:pos + 8], "<u8")[0])
        out.append((pos, length))
        pos += 12 + length + 4
    return out


def field_value_byte(data: bytes, name: str) -> int:
    """Byte position, inside a serialized Example, of the middle of feature ``name``'s stored
    value: the raw payload of a bytes feature (audio), the first packed float of a float feature
    (its least significant mantissa byte)."""
    import tensorflow as tf

    feature = tf.train.Example.FromString(data).features.feature[name]
    serialized = feature.SerializeToString()
    assert data.count(serialized) == 1, f"feature {name!r} is not found once in the record"
    if feature.HasField("bytes_list"):
        payload = feature.bytes_list.value[0]
        middle = len(payload) // 2
    else:
        payload = np.asarray(feature.float_list.value, "<f4").tobytes()
        middle = 0
    assert payload and serialized.count(payload) == 1
    return data.find(serialized) + serialized.find(payload) + middle


def flip_bit(path, byte: int, bit: int = 0) -> None:
    """Flips one bit of a file in place."""
    raw = bytearray(Path(path).read_bytes())
    raw[byte] ^= 1 << bit
    Path(path).write_bytes(bytes(raw))


def flip_record(path, record: int, field: str) -> tuple[int, str]:
    """Flips one bit of record ``record`` of a shard: in feature ``field``'s value, or, for
    ``field="length"``, in the lowest bit of the record's length header. Returns the record's
    header byte and its track id."""
    import tensorflow as tf

    header, length = framing(path)[record]
    data = Path(path).read_bytes()[header + 12:header + 12 + length]
    track_id = tf.train.Example.FromString(data).features.feature["track_id"].bytes_list.value[0].decode()
    flip_bit(path, header if field == "length" else header + 12 + field_value_byte(data, field))
    return header, track_id
