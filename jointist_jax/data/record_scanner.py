"""The TFRecord framing and just enough of the protobuf wire format to index a shard.

A TFRecord file is a run of records framed as uint64 length, uint32 masked CRC-32C of the length,
the data, uint32 masked CRC-32C of the data (:func:`masked_crc32c`). :func:`scan_file` walks only
that framing, checks every length CRC and reads, inside each serialized ``tf.train.Example``, only
the small scalar features (:data:`jointist_jax.data.schema.INDEX_FIELDS`), skipping the audio:
the rows of a record index (:mod:`jointist_jax.data.records`) when no saved index can be used.
"""

from __future__ import annotations

import os

import google_crc32c
import numpy as np

from jointist_jax import storage
from jointist_jax.data import schema

# TFRecord framing: uint64 length, uint32 masked CRC of the length; the data; uint32 masked CRC of it.
HEADER_BYTES, FOOTER_BYTES = 12, 4
_CRC_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C that TFRecord stores after its length field and after its data."""
    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _CRC_MASK_DELTA) & 0xFFFFFFFF


class CorruptRecordError(ValueError):
    """A TFRecord whose stored CRC-32C does not match its bytes (or whose framing is broken)."""


# --- protobuf wire format, just enough to read scalar features of a tf.train.Example -----------

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise IndexError("truncated varint")
        b = buf[pos]
        result |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return result, pos
        shift += 7


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _fields(buf: bytes):
    """Yields ``(field_number, wire_type, value)`` of a fully read message."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _feature_value(buf: bytes):
    """Values of a serialized ``tf.train.Feature`` (bytes list, float list or int64 list)."""
    for field, _, payload in _fields(buf):
        values = []
        for f, wire, v in _fields(payload):
            if f != 1:
                continue
            if field == 1:
                values.append(bytes(v))
            elif field == 2:
                values.extend(np.frombuffer(v, "<f4").tolist() if wire == 2 else [np.frombuffer(v, "<f4")[0]])
            elif field == 3:
                if wire == 2:  # packed
                    p = 0
                    while p < len(v):
                        x, p = _varint(v, p)
                        values.append(_signed64(x))
                else:
                    values.append(_signed64(v))
        return values
    return []


class _Cursor:
    """Buffered positional reads of one file of a :class:`storage.RangeReader`.

    ``chunk`` is the smallest read: small for local files, large for bucket objects, where each
    read is a request and the scalar fields of a record lie within a few hundred bytes of each
    other (the audio in between is skipped).
    """

    def __init__(self, reader: storage.RangeReader, file_index: int, chunk: int):
        self.reader = reader
        self.file_index = file_index
        self.chunk = chunk
        self.base = -1
        self.buf = b""

    def read(self, pos: int, n: int) -> bytes:
        if not (self.base <= pos and pos + n <= self.base + len(self.buf)):
            self.base = pos
            self.buf = self.reader.read(self.file_index, pos, max(n, self.chunk))
        return self.buf[pos - self.base:pos - self.base + n]

    def varint(self, pos: int) -> tuple[int, int]:
        head = self.read(pos, 10)
        value, used = _varint(head, 0)
        return value, pos + used


class _BufferCursor:
    """The :class:`_Cursor` interface over bytes already in memory."""

    def __init__(self, data: bytes):
        self.buf = data

    def read(self, pos: int, n: int) -> bytes:
        if pos < 0 or pos + n > len(self.buf):
            raise IndexError(f"read of bytes {pos}..{pos + n} past the end of {len(self.buf)}")
        return self.buf[pos:pos + n]

    def varint(self, pos: int) -> tuple[int, int]:
        return _varint(self.buf, pos)


def payload_track_id(data: bytes) -> str | None:
    """The ``track_id`` of a serialized Example, or None if it cannot be parsed out of it."""
    try:
        values = _scan_example(_BufferCursor(data), 0, len(data), frozenset(["track_id"]))
        return values["track_id"][0].decode("utf-8")
    except (IndexError, KeyError, ValueError, UnicodeDecodeError):
        return None


def _scan_example(cur: _Cursor, start: int, length: int, wanted: frozenset) -> dict:
    """Scalar features named in ``wanted`` of the Example at ``[start, start + length)``."""
    out = {}
    end = start + length
    pos = start
    while pos < end:  # Example: field 1 = Features
        tag, pos = cur.varint(pos)
        n, pos = cur.varint(pos)
        if tag >> 3 != 1:
            pos += n
            continue
        fend = pos + n
        while pos < fend:  # Features: field 1 = map entry {1: key, 2: Feature}
            tag, pos = cur.varint(pos)
            n, pos = cur.varint(pos)
            entry_end = pos + n
            ktag, kpos = cur.varint(pos)
            if ktag == 0x0A:
                klen, kpos = cur.varint(kpos)
                key = cur.read(kpos, klen).decode("utf-8", "replace")
                if key in wanted:
                    entry = cur.read(pos, n)
                    for field, _, value in _fields(entry):
                        if field == 2:
                            out[key] = _feature_value(value)
            pos = entry_end
        pos = fend
    return out


# Local reads are cheap: read little. A bucket read is a request: read enough to cover the framing
# and the scalar features that follow each other in one go.
_LOCAL_CHUNK, _REMOTE_CHUNK = 256, 64 * 1024


def scan_file(reader: storage.RangeReader, file_index: int) -> tuple[list[tuple[int, int]], list[dict]]:
    """``[(offset, length)]`` of every record of one TFRecord file and its index fields."""
    path = reader.files[file_index]
    wanted = frozenset(schema.INDEX_FIELDS)
    spans, fields = [], []
    size = reader.size(file_index)
    cur = _Cursor(reader, file_index, _REMOTE_CHUNK if storage.is_remote(path) else _LOCAL_CHUNK)
    pos = 0
    while pos < size:
        header = cur.read(pos, HEADER_BYTES)
        if len(header) < HEADER_BYTES:
            raise CorruptRecordError(
                f"{os.fspath(path)!r}: corrupted record {len(spans)} at byte {pos}: the shard ends "
                f"{size - pos} bytes into its {HEADER_BYTES}-byte header (the shard is truncated)")
        length = int(np.frombuffer(header[:8], "<u8")[0])
        stored = int(np.frombuffer(header[8:], "<u4")[0])
        if masked_crc32c(header[:8]) != stored:
            raise CorruptRecordError(
                f"{os.fspath(path)!r}: corrupted record {len(spans)} at byte {pos}: the CRC-32C of its "
                f"length field does not match (stored {stored:#010x}, computed "
                f"{masked_crc32c(header[:8]):#010x}); track_id unreadable (the length is not trusted)")
        data = pos + HEADER_BYTES
        if data + length + FOOTER_BYTES > size:
            raise CorruptRecordError(
                f"{os.fspath(path)!r}: corrupted record {len(spans)} at byte {pos}: it needs bytes up to "
                f"{data + length + FOOTER_BYTES}, the shard has {size} (the shard is truncated)")
        values = _scan_example(cur, data, length, wanted)
        missing = wanted - values.keys()
        if missing:
            raise ValueError(f"{os.fspath(path)!r}: record at byte {pos} lacks features {sorted(missing)}")
        spans.append((data, length))
        fields.append(values)
        pos = data + length + FOOTER_BYTES
    return spans, fields
