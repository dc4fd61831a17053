"""Random access to the ``slakh2100/clips`` TFRecord shards.

The pipeline needs, for every record, its file, byte offset and a few scalar fields
(``track_id``, ``window_index``, ``window_start``, ``track_length``) to weight windows by their
number of crop starts. Reading whole records for that would read all the audio once per start, so
:func:`build_index` walks only the TFRecord framing (uint64 length, uint32 crc, data, uint32 crc)
and, inside each serialized ``tf.train.Example``, only the small scalar features: the large audio
features are skipped with seeks. :class:`RecordReader` then reads one record by ``os.pread``;
``read`` decodes it fully with the dataset's own ``FeaturesDict``, ``read_lazy`` decodes the small
fields and leaves the audio compressed until a crop of it is asked for (:class:`Record`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import zlib
from pathlib import Path

import numpy as np

DATASET_NAME = "slakh2100"
CONFIG_NAME = "clips"
INDEX_FIELDS = ("track_id", "window_index", "window_start", "track_length")
# Used when neither the dataset metadata nor the config name gives the sample rate.
DEFAULT_SAMPLE_RATE = 16000


def dataset_dir(data_dir: str | os.PathLike) -> Path:
    """The prepared ``data_dir/slakh2100/clips/<version>`` directory (highest version wins).

    Without a ``clips`` config, a single non-default packing (``clips_hop<h>_clip<c>_sr<rate>``)
    is used. ``data_dir`` may also be the version directory itself (it holds
    ``dataset_info.json``).
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"data_dir {str(root)!r} does not exist or is not a directory")
    if (root / "dataset_info.json").is_file():
        return root
    dataset_root = root / DATASET_NAME
    config_dir = dataset_root / CONFIG_NAME
    if not config_dir.is_dir() and dataset_root.is_dir():
        # A non-default packing (``clips_hop..``) is used when it is the only one present.
        others = sorted(p for p in dataset_root.glob(CONFIG_NAME + "*") if p.is_dir())
        if len(others) > 1:
            raise FileNotFoundError(
                f"{str(dataset_root)!r} holds several packings {[p.name for p in others]} but no "
                f"{CONFIG_NAME!r}: pass the version directory of the one you want as data_dir")
        if others:
            config_dir = others[0]
    versions = [p for p in config_dir.glob("*") if p.is_dir() and (p / "dataset_info.json").is_file()]
    if not versions:
        raise FileNotFoundError(
            f"no prepared {DATASET_NAME}/{CONFIG_NAME} dataset under {str(root)!r}: expected "
            f"{str(config_dir)}/<version>/dataset_info.json (build it with data_pipelines.build_slakh)")

    def version_key(p: Path):
        parts = p.name.split(".")
        return tuple(int(x) if x.isdigit() else -1 for x in parts)

    return max(versions, key=version_key)


@dataclasses.dataclass
class ClipDataset:
    """A prepared clips dataset opened without its builder code."""

    path: Path
    builder: object
    sample_rate: int
    hop_samples: int | None  # None: not in the metadata (then derived from the records)
    clip_samples: int | None

    @property
    def features(self):
        """The dataset's ``tfds.features.FeaturesDict`` (the record schema)."""
        return self.builder.info.features

    def split_files(self, split: str) -> list[Path]:
        """The split's shard files, in order; a clear error for an unknown split."""
        splits = self.builder.info.splits
        if split not in splits:
            raise ValueError(f"split {split!r} is not in dataset {str(self.path)!r}; available: "
                             f"{sorted(splits.keys())}")
        info = splits[split]
        files = [Path(str(p)) for p in info.filepaths]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"split {split!r} of {str(self.path)!r}: missing shard files {missing}")
        return files


def _metadata_number(metadata, key: str) -> float | None:
    if metadata and metadata.get(key) is not None:
        return float(metadata[key])
    return None


# The builder's config names (data_pipelines/slakh2100: ``make_config``): ``clips`` is 30-s hop,
# 10-s clip, 16 kHz; other packings are named ``clips_hop<h>_clip<c>_sr<rate>`` with '.' as 'p'.
DEFAULT_CONFIG_LAYOUT = {"hop_seconds": 30.0, "clip_seconds": 10.0, "sample_rate": 16000.0}
_CONFIG_NAME = re.compile(r"^clips_hop([0-9p]+)_clip([0-9p]+)_sr([0-9]+)$")


def _layout_from_config_name(name: str | None) -> dict[str, float]:
    if name == CONFIG_NAME:
        return dict(DEFAULT_CONFIG_LAYOUT)
    match = _CONFIG_NAME.match(name or "")
    if not match:
        return {}
    hop, clip, rate = (float(g.replace("p", ".")) for g in match.groups())
    return {"hop_seconds": hop, "clip_seconds": clip, "sample_rate": rate}


def open_dataset(data_dir: str | os.PathLike) -> ClipDataset:
    """Opens the prepared dataset and finds its window layout (hop, clip, sample rate).

    The layout comes from the dataset metadata (``hop_seconds``, ``clip_seconds``,
    ``sample_rate``) where present, else from the builder config's name; a hop that is still
    unknown is derived from the records later (``window_start / window_index``).
    """
    import tensorflow_datasets as tfds

    path = dataset_dir(data_dir)
    builder = tfds.builder_from_directory(str(path))
    file_format = str(getattr(builder.info, "file_format", "tfrecord") or "tfrecord")
    if "tfrecord" not in file_format.lower():
        raise ValueError(f"{str(path)!r}: file format {file_format!r} is not supported; expected tfrecord")
    config = builder.builder_config
    layout = _layout_from_config_name(config.name if config is not None else None)
    for key in ("hop_seconds", "clip_seconds", "sample_rate"):
        value = _metadata_number(builder.info.metadata, key)
        if value is not None:
            layout[key] = value
    sample_rate = int(layout.get("sample_rate", DEFAULT_SAMPLE_RATE))
    hop, clip = layout.get("hop_seconds"), layout.get("clip_seconds")
    return ClipDataset(
        path=path, builder=builder, sample_rate=sample_rate,
        hop_samples=None if hop is None else int(round(hop * sample_rate)),
        clip_samples=None if clip is None else int(round(clip * sample_rate)))


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
    """Small buffered positional reads of one file descriptor."""

    CHUNK = 256

    def __init__(self, fd: int):
        self.fd = fd
        self.base = -1
        self.buf = b""

    def read(self, pos: int, n: int) -> bytes:
        if not (self.base <= pos and pos + n <= self.base + len(self.buf)):
            self.base = pos
            self.buf = os.pread(self.fd, max(n, self.CHUNK), pos)
        return self.buf[pos - self.base:pos - self.base + n]

    def varint(self, pos: int) -> tuple[int, int]:
        head = self.read(pos, 10)
        value, used = _varint(head, 0)
        return value, pos + used


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


@dataclasses.dataclass
class RecordIndex:
    """One row per record of a list of shard files."""

    files: list[Path]
    file_index: np.ndarray    # int32 (R,)
    offset: np.ndarray        # int64 (R,) byte offset of the serialized Example
    length: np.ndarray        # int64 (R,)
    track_id: np.ndarray      # object (R,) str
    window_index: np.ndarray  # int64 (R,)
    window_start: np.ndarray  # int64 (R,) samples
    track_length: np.ndarray  # int64 (R,) samples

    def __len__(self) -> int:
        return len(self.offset)


def scan_file(path: Path) -> tuple[list[tuple[int, int]], list[dict]]:
    """``[(offset, length)]`` of every record of one TFRecord file and its index fields."""
    wanted = frozenset(INDEX_FIELDS)
    spans, fields = [], []
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        cur = _Cursor(fd)
        pos = 0
        while pos < size:
            header = cur.read(pos, 12)
            if len(header) < 12:
                raise ValueError(f"{str(path)!r}: truncated TFRecord header at byte {pos}")
            length = int(np.frombuffer(header[:8], "<u8")[0])
            data = pos + 12
            if data + length + 4 > size:
                raise ValueError(f"{str(path)!r}: record at byte {pos} runs past the end of the file")
            values = _scan_example(cur, data, length, wanted)
            missing = wanted - values.keys()
            if missing:
                raise ValueError(f"{str(path)!r}: record at byte {pos} lacks features {sorted(missing)}")
            spans.append((data, length))
            fields.append(values)
            pos = data + length + 4
    finally:
        os.close(fd)
    return spans, fields


def build_index(files: list[Path]) -> RecordIndex:
    """Indexes every record of ``files`` (in file order, then record order)."""
    file_index, offsets, lengths = [], [], []
    cols = {k: [] for k in INDEX_FIELDS}
    for i, path in enumerate(files):
        spans, fields = scan_file(Path(path))
        for (off, n), values in zip(spans, fields):
            file_index.append(i)
            offsets.append(off)
            lengths.append(n)
            cols["track_id"].append(values["track_id"][0].decode("utf-8"))
            for key in INDEX_FIELDS[1:]:
                cols[key].append(int(values[key][0]))
    return RecordIndex(
        files=[Path(f) for f in files],
        file_index=np.asarray(file_index, dtype=np.int32),
        offset=np.asarray(offsets, dtype=np.int64),
        length=np.asarray(lengths, dtype=np.int64),
        track_id=np.asarray(cols["track_id"], dtype=object),
        window_index=np.asarray(cols["window_index"], dtype=np.int64),
        window_start=np.asarray(cols["window_start"], dtype=np.int64),
        track_length=np.asarray(cols["track_length"], dtype=np.int64),
    )


AUDIO_FIELDS = ("mix", "stems")


class Record:
    """One record: small fields decoded, audio (``mix`` (L,), ``stems`` (S, L)) decoded on demand.

    Audio is stored raw (the builder's default) or zlib-compressed; zlib audio is decompressed
    only as far as the requested crop reaches (zlib streams cannot be entered in the middle).
    Only the requested stem rows are copied out.
    """

    def __init__(self, fields: dict, audio: dict):
        self._fields = fields
        # name -> ("array", ndarray) | ("zlib" | "bytes", payload, shape, dtype)
        self._audio = audio

    @classmethod
    def from_arrays(cls, example: dict) -> "Record":
        """A record from fully decoded arrays (as ``deserialize_example_np`` returns them)."""
        fields = {k: v for k, v in example.items() if k not in AUDIO_FIELDS}
        audio = {k: ("array", np.asarray(example[k])) for k in AUDIO_FIELDS}
        return cls(fields, audio)

    def __getitem__(self, key):
        return self._fields[key]

    def _prefix(self, name: str, start: int, stop: int) -> np.ndarray:
        """Flat audio samples ``[start, stop)`` of field ``name`` (fewer at the end of the data)."""
        kind, *rest = self._audio[name]
        if kind == "array":
            return rest[0].reshape(-1)[start:stop]
        payload, _, dtype = rest
        itemsize = np.dtype(dtype).itemsize
        if kind == "zlib":
            raw = zlib.decompressobj().decompress(payload, stop * itemsize)
        else:
            raw = payload[:stop * itemsize]
        return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))[start:stop]

    def _shape(self, name: str) -> tuple[int, ...]:
        kind, *rest = self._audio[name]
        return tuple(rest[0].shape) if kind == "array" else tuple(rest[1])

    @property
    def num_stems(self) -> int:
        return self._shape("stems")[0]

    @property
    def window_length(self) -> int:
        """Samples in this window (from the stems' stored shape)."""
        return self._shape("stems")[-1]

    def mix(self, offset: int, length: int) -> np.ndarray:
        """int16 mix samples ``[offset, offset + length)`` (fewer at the end of the window)."""
        return self._prefix("mix", offset, offset + length)

    def stems(self, rows, offset: int, length: int) -> np.ndarray:
        """int16 (len(rows), <= length): samples ``[offset, offset + length)`` of stem ``rows``."""
        rows = [int(r) for r in rows]
        n = self.window_length
        stop = min(offset + length, n)
        if not rows:
            return np.zeros((0, max(stop - offset, 0)), np.int16)
        if any(not 0 <= r < self.num_stems for r in rows):
            raise IndexError(f"stem rows {rows} outside 0..{self.num_stems - 1}")
        flat = self._prefix("stems", 0, max(rows) * n + stop)
        return np.stack([flat[r * n + offset:r * n + stop] for r in rows])


class RecordReader:
    """Reads and decodes single records of an index; thread-safe; counts the records it reads."""

    def __init__(self, dataset: ClipDataset, index: RecordIndex):
        from tensorflow_datasets.core import example_parser

        self.dataset = dataset
        self.index = index
        self._fds = [os.open(p, os.O_RDONLY) for p in index.files]
        self._lock = threading.Lock()
        self._parser = example_parser.ExampleParserNp(dataset.features.get_serialized_info())
        self.records_read = 0

    def read_bytes(self, record: int) -> bytes:
        """The serialized Example of record ``record``."""
        fd = self._fds[self.index.file_index[record]]
        n = int(self.index.length[record])
        data = os.pread(fd, n, int(self.index.offset[record]))
        if len(data) != n:
            raise IOError(f"{str(self.index.files[self.index.file_index[record]])!r}: short read of record {record}")
        with self._lock:
            self.records_read += 1
        return data

    def read(self, record: int) -> dict:
        """Record ``record`` fully decoded to numpy by the dataset's ``FeaturesDict``."""
        return self.dataset.features.deserialize_example_np(self.read_bytes(record))

    def read_lazy(self, record: int) -> Record:
        """Record ``record`` with its audio left compressed until a crop is asked for."""
        parsed = self._parser.parse_example(self.read_bytes(record))
        features = self.dataset.features
        fields, audio = {}, {}
        for name, value in parsed.items():
            feature = features[name]
            encoding = getattr(feature, "_encoding", None)
            kind = {"zlib": "zlib", "bytes": "bytes"}.get(getattr(encoding, "value", None))
            if name in AUDIO_FIELDS and kind is not None:
                payload, shape = (value["value"], value["shape"]) if isinstance(value, dict) else (value, None)
                if shape is None:  # 1-D: the length follows from the decompressed size
                    shape = (-1,)
                audio[name] = (kind, payload, tuple(int(x) for x in shape), feature.np_dtype)
            elif name in AUDIO_FIELDS:
                audio[name] = ("array", np.asarray(feature.decode_example_np(value)))
            else:
                fields[name] = feature.decode_example_np(value)
        return Record(fields, audio)

    def close(self) -> None:
        """Closes the shard files."""
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
