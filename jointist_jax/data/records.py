"""Random access to the ``slakh2100/clips`` TFRecord shards, on local disk or in a bucket.

The pipeline needs, for every record, its file, byte offset and a few scalar fields
(``track_id``, ``window_index``, ``window_start``, ``track_length``) to weight windows by their
number of crop starts. That is the split's *record index*:

* the dataset build writes it beside the shards (:func:`save_index`: ``<split>.record_index.npz``,
  about 60 bytes per record), so opening a split reads one small file and lists the dataset
  folder once, whatever the number of tracks or shards. It names the build it describes (a
  fingerprint of ``dataset_info.json``) and each shard's name and size; one that no longer matches
  is not used (a warning says why);
* without that file (a dataset built before it existed, or shards changed since),
  :func:`jointist_jax.data.record_scanner.scan_file` walks only the TFRecord framing (uint64
  length, uint32 masked CRC-32C of the length, data, uint32 masked CRC-32C of the data), checks
  every length CRC and reads, inside each serialized ``tf.train.Example``, only the small scalar
  features, skipping the audio.

:class:`RecordReader` then reads one record with a ranged read of exactly its framed bytes
(:class:`jointist_jax.storage.RangeReader`: length, length CRC, data and data CRC; one request
from a bucket) and checks both CRCs and the length against the index, raising
:class:`CorruptRecordError` (shard, record number, byte offset, track id) on a mismatch; ``read``
decodes it fully with the dataset's own ``FeaturesDict``, ``read_lazy`` decodes the small fields
and leaves the audio encoded until a crop of it is asked for (:class:`Record`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import logging
import os
import threading
import zlib

import numpy as np

from jointist_jax import storage
from jointist_jax.data import schema
from jointist_jax.data.record_scanner import (FOOTER_BYTES, HEADER_BYTES, CorruptRecordError, masked_crc32c,
                                              payload_track_id, scan_file)

log = logging.getLogger(__name__)

INDEX_SUFFIX = ".record_index.npz"


def dataset_dir(data_dir) -> storage.Path:
    """The prepared ``data_dir/slakh2100/clips/<version>`` directory (highest version wins).

    Without a ``clips`` config, a single non-default packing (``clips_hop<h>_clip<c>_sr<rate>``)
    is used. ``data_dir`` may also be the version directory itself (it holds
    ``dataset_info.json``). Local or ``gs://``.
    """
    root = storage.require_exists(data_dir, role="data_dir", kind="dir")
    if (root / "dataset_info.json").is_file():
        return root
    dataset_root = root / schema.DATASET_NAME
    config_dir = dataset_root / schema.DEFAULT_CONFIG_NAME
    if not config_dir.is_dir() and dataset_root.is_dir():
        # A non-default packing (``clips_hop..``) is used when it is the only one present.
        others = sorted(p for p in dataset_root.iterdir() if p.name.startswith(schema.DEFAULT_CONFIG_NAME) and p.is_dir())
        if len(others) > 1:
            raise FileNotFoundError(
                f"{os.fspath(dataset_root)!r} holds several packings {[p.name for p in others]} but no "
                f"{schema.DEFAULT_CONFIG_NAME!r}: pass the version directory of the one you want as data_dir")
        if others:
            config_dir = others[0]
    versions = ([p for p in config_dir.iterdir() if (p / "dataset_info.json").is_file()]
                if config_dir.is_dir() else [])
    if not versions:
        raise FileNotFoundError(
            f"no prepared {schema.DATASET_NAME}/{schema.DEFAULT_CONFIG_NAME} dataset under {os.fspath(root)!r}: expected "
            f"{os.fspath(config_dir)}/<version>/dataset_info.json (build it with data_pipelines.build_slakh)")

    def version_key(p):
        parts = p.name.split(".")
        return tuple(int(x) if x.isdigit() else -1 for x in parts)

    return max(versions, key=version_key)


@dataclasses.dataclass
class ClipDataset:
    """A prepared clips dataset opened without its builder code."""

    path: storage.Path
    builder: object
    sample_rate: int
    hop_samples: int | None  # None: not in the metadata (then derived from the records)
    clip_samples: int | None
    _sizes: dict[str, int] | None = dataclasses.field(default=None, repr=False)

    @property
    def features(self):
        """The dataset's ``tfds.features.FeaturesDict`` (the record schema)."""
        return self.builder.info.features

    def split_files(self, split: str) -> list[storage.Path]:
        """The split's shard files, in order; a clear error for an unknown split or missing shards."""
        splits = self.builder.info.splits
        if split not in splits:
            raise ValueError(f"split {split!r} is not in dataset {os.fspath(self.path)!r}; available: "
                             f"{sorted(splits.keys())}")
        files = [self.path / os.path.basename(os.fspath(p)) for p in splits[split].filepaths]
        present = self.file_sizes()
        missing = [f.name for f in files if f.name not in present]
        if missing:
            raise FileNotFoundError(f"split {split!r} of {os.fspath(self.path)!r}: missing shard files {missing}")
        return files

    def file_sizes(self) -> dict[str, int]:
        """Sizes of the files in the dataset folder (one listing; cached)."""
        if self._sizes is None:
            self._sizes = storage.file_sizes(self.path)
        return self._sizes

    def index_file(self, split: str) -> storage.Path:
        """Where the build leaves the record index of ``split``."""
        return self.path / f"{split}{INDEX_SUFFIX}"


def _metadata_number(metadata, key: str) -> float | None:
    if metadata and metadata.get(key) is not None:
        return float(metadata[key])
    return None


def _layout_from_config_name(name: str | None) -> dict[str, float]:
    """The packing the builder config's name encodes, as a dict; {} for a name it never writes."""
    packing = schema.packing_from_config_name(name)
    return {} if packing is None else dataclasses.asdict(packing)


def open_dataset(data_dir) -> ClipDataset:
    """Opens the prepared dataset and finds its window layout (hop, clip, sample rate).

    The layout comes from the dataset metadata (``hop_seconds``, ``clip_seconds``,
    ``sample_rate``) where present, else from the builder config's name; a hop that is still
    unknown is derived from the records later (``window_start / window_index``).
    """
    import tensorflow_datasets as tfds

    path = dataset_dir(data_dir)
    builder = tfds.builder_from_directory(path)
    file_format = str(getattr(builder.info, "file_format", "tfrecord") or "tfrecord")
    if "tfrecord" not in file_format.lower():
        raise ValueError(f"{os.fspath(path)!r}: file format {file_format!r} is not supported; expected tfrecord")
    config = builder.builder_config
    layout = _layout_from_config_name(config.name if config is not None else None)
    for key in ("hop_seconds", "clip_seconds", "sample_rate"):
        value = _metadata_number(builder.info.metadata, key)
        if value is not None:
            layout[key] = value
    # Neither the metadata nor the config name gives the rate: the default packing's.
    sample_rate = int(layout.get("sample_rate", schema.DEFAULT_PACKING.sample_rate))
    hop, clip = layout.get("hop_seconds"), layout.get("clip_seconds")
    return ClipDataset(
        path=path, builder=builder, sample_rate=sample_rate,
        hop_samples=None if hop is None else int(round(hop * sample_rate)),
        clip_samples=None if clip is None else int(round(clip * sample_rate)))


@dataclasses.dataclass
class RecordIndex:
    """One row per record of a list of shard files."""

    files: list[storage.Path]
    file_index: np.ndarray    # int32 (R,)
    offset: np.ndarray        # int64 (R,) byte offset of the serialized Example
    length: np.ndarray        # int64 (R,)
    track_id: np.ndarray      # str (R,)
    window_index: np.ndarray  # int64 (R,)
    window_start: np.ndarray  # int64 (R,) samples
    track_length: np.ndarray  # int64 (R,) samples

    def __len__(self) -> int:
        return len(self.offset)

    def of_files(self, wanted: list) -> "RecordIndex":
        """The rows of the files in ``wanted`` (a subset of :attr:`files`), renumbered."""
        names = [os.fspath(f) for f in self.files]
        position = {os.fspath(f): i for i, f in enumerate(wanted)}
        mapping = np.array([position.get(n, -1) for n in names], np.int32)
        keep = mapping[self.file_index] >= 0
        return RecordIndex(files=list(wanted), file_index=mapping[self.file_index][keep],
                           **{k: getattr(self, k)[keep] for k in _COLUMNS if k != "file_index"})


_COLUMNS = ("file_index", "offset", "length", "track_id", "window_index", "window_start", "track_length")
def scan_index(files: list, *, threads: int = 16) -> RecordIndex:
    """Indexes every record of ``files`` by walking their framing (in file order, then record
    order); bucket files are scanned ``threads`` at a time."""
    files = [storage.path(f) for f in files]
    with storage.RangeReader(files) as reader:
        workers = threads if any(storage.is_remote(f) for f in files) else 1
        with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
            scans = list(pool.map(lambda i: scan_file(reader, i), range(len(files))))
    file_index, offsets, lengths = [], [], []
    cols = {k: [] for k in schema.INDEX_FIELDS}
    for i, (spans, fields) in enumerate(scans):
        for (off, n), values in zip(spans, fields):
            file_index.append(i)
            offsets.append(off)
            lengths.append(n)
            cols["track_id"].append(values["track_id"][0].decode("utf-8"))
            for key in schema.INDEX_FIELDS[1:]:
                cols[key].append(int(values[key][0]))
    return RecordIndex(
        files=files,
        file_index=np.asarray(file_index, dtype=np.int32),
        offset=np.asarray(offsets, dtype=np.int64),
        length=np.asarray(lengths, dtype=np.int64),
        track_id=np.asarray(cols["track_id"], dtype=str),
        window_index=np.asarray(cols["window_index"], dtype=np.int64),
        window_start=np.asarray(cols["window_start"], dtype=np.int64),
        track_length=np.asarray(cols["track_length"], dtype=np.int64),
    )


def build_identity(dataset: ClipDataset) -> str:
    """A fingerprint of the build: the SHA-256 of its ``dataset_info.json`` (which lists every
    split's shards, their record counts and bytes)."""
    return hashlib.sha256((dataset.path / "dataset_info.json").read_bytes()).hexdigest()


def save_index(dataset: ClipDataset, split: str) -> storage.Path:
    """Scans ``split`` and writes its record index beside the shards (the build calls this).

    The file also records the build's identity and each shard's name and size, so a reader can
    tell that it still describes the shards that are there."""
    files = dataset.split_files(split)
    sizes = dataset.file_sizes()
    target = dataset.index_file(split)
    target.write_bytes(serialize_index(scan_index(files), [sizes[f.name] for f in files],
                                       build_identity(dataset)))
    return target


def serialize_index(index: RecordIndex, file_sizes: list[int], build: str) -> bytes:
    """The bytes of a saved record index (an ``.npz`` of its columns, its shards' names and sizes
    and the :func:`build_identity` of the dataset it describes)."""
    buffer = io.BytesIO()
    np.savez(buffer, file_names=np.asarray([f.name for f in index.files]),
             file_sizes=np.asarray(file_sizes, np.int64), build=np.asarray(build),
             **{k: getattr(index, k) for k in _COLUMNS})
    return buffer.getvalue()


def _stale_reason(saved, dataset: ClipDataset, files: list) -> str | None:
    """Why a saved index does not describe the shards of ``dataset`` any more; None if it does."""
    if "build" not in saved.files:
        return "it predates the build identity"
    if str(saved["build"]) != build_identity(dataset):
        return "it was saved for another build (its dataset_info.json fingerprint differs)"
    names = saved["file_names"].tolist()
    if names != [f.name for f in files]:
        return f"it lists shards {names}, the split has {[f.name for f in files]}"
    sizes = dataset.file_sizes()
    for name, size in zip(names, saved["file_sizes"].tolist()):
        if sizes[name] != size:
            return f"shard {name} is {sizes[name]} bytes, the index was saved when it was {size}"
    return None


def load_index(dataset: ClipDataset, split: str) -> RecordIndex | None:
    """The saved record index of ``split``, or None if there is none or it no longer matches
    (another build, other shard names or sizes: a warning says which)."""
    path = dataset.index_file(split)
    if path.name not in dataset.file_sizes():
        return None
    files = dataset.split_files(split)
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as saved:
        reason = _stale_reason(saved, dataset, files)
        if reason is not None:
            log.warning("not using the record index %s: %s; scanning the shards of split %r instead",
                        os.fspath(path), reason, split)
            return None
        return RecordIndex(files=files, **{k: saved[k] for k in _COLUMNS})


def split_index(dataset: ClipDataset, split: str, files: list | None = None) -> RecordIndex:
    """The record index of ``split`` (restricted to ``files``, a subset of its shards, if given):
    the saved one when it matches the shards, else a scan of the shards needed."""
    saved = load_index(dataset, split)
    if saved is None:
        return scan_index(files if files is not None else dataset.split_files(split))
    return saved if files is None else saved.of_files(files)


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
        self._files = storage.RangeReader(index.files)
        self._remote = [storage.is_remote(f) for f in index.files]
        self._lock = threading.Lock()
        self._parser = example_parser.ExampleParserNp(dataset.features.get_serialized_info())
        self.records_read = 0

    @property
    def bytes_read(self) -> int:
        """Bytes read from the shard files so far."""
        return self._files.bytes_read

    def _spans(self, record: int) -> list[tuple[int, int, int]]:
        """``(file, offset, length)`` reads of the framed record (length, its CRC, data, data CRC).

        From a bucket: one request for all of it. From local disk: three reads (length and CRC,
        data, CRC) of the same pages, so that the data, a few MB, is not copied out of a larger
        buffer (the CRC-32C library takes only ``bytes``)."""
        f, offset, length = (int(self.index.file_index[record]), int(self.index.offset[record]),
                             int(self.index.length[record]))
        if self._remote[f]:
            return [(f, offset - HEADER_BYTES, HEADER_BYTES + length + FOOTER_BYTES)]
        return [(f, offset - HEADER_BYTES, HEADER_BYTES), (f, offset, length), (f, offset + length, FOOTER_BYTES)]

    def _parts(self, record: int, reads: list[bytes]) -> tuple[bytes, bytes, bytes]:
        """``(header, data, footer)`` of a record from what :meth:`_spans` read."""
        if len(reads) == 3:
            return reads[0], reads[1], reads[2]
        framed, length = reads[0], int(self.index.length[record])
        return framed[:HEADER_BYTES], framed[HEADER_BYTES:HEADER_BYTES + length], framed[HEADER_BYTES + length:]

    def _corrupt(self, record: int, problem: str, data: bytes | None) -> CorruptRecordError:
        """The error for a record that fails its checks: shard, record number in the shard, byte
        offset of its framing, track id (from the payload if it parses, else the index's)."""
        file_index = self.index.file_index[record]
        path = self.index.files[file_index]
        number = int(np.count_nonzero(self.index.file_index[:record] == file_index))
        indexed = str(self.index.track_id[record])
        track_id = None if data is None else payload_track_id(data)
        if track_id is not None:
            who = f"track_id {track_id!r}"
        else:
            who = f"track_id unreadable from the corrupt payload (the record index says {indexed!r})"
        return CorruptRecordError(
            f"{os.fspath(path)!r}: corrupted record {number} at byte "
            f"{int(self.index.offset[record]) - HEADER_BYTES} ({who}): {problem}")

    def _check(self, record: int, header: bytes, data: bytes, footer: bytes) -> bytes:
        """``data`` after checking the record's length, both CRCs and the index."""
        length = int(self.index.length[record])
        got = len(header) + len(data) + len(footer)
        if got != HEADER_BYTES + length + FOOTER_BYTES:
            raise self._corrupt(record, f"short read: {got} bytes of {HEADER_BYTES + length + FOOTER_BYTES} "
                                        f"(the shard is truncated)", None)
        if masked_crc32c(header[:8]) != int.from_bytes(header[8:], "little"):
            raise self._corrupt(record, "the CRC-32C of its length field does not match", None)
        if int.from_bytes(header[:8], "little") != length:
            raise self._corrupt(record, f"its length field says {int.from_bytes(header[:8], 'little')} "
                                        f"bytes, the record index {length} (a stale index?)", None)
        stored, computed = int.from_bytes(footer, "little"), masked_crc32c(data)
        if computed != stored:
            raise self._corrupt(record, f"data CRC-32C mismatch (stored {stored:#010x}, computed "
                                        f"{computed:#010x})", data)
        with self._lock:
            self.records_read += 1
        return data

    def read_bytes(self, record: int) -> bytes:
        """The serialized Example of record ``record``, CRC-checked."""
        return self._check(record, *self._parts(record, [self._files.read(*s) for s in self._spans(record)]))

    def read_many_bytes(self, records) -> list[bytes]:
        """:meth:`read_bytes` of several records, fetched concurrently from a bucket."""
        spans = [self._spans(r) for r in records]
        reads = iter(self._files.read_many([s for group in spans for s in group]))
        return [self._check(r, *self._parts(r, [next(reads) for _ in group])) for r, group in zip(records, spans)]

    def read(self, record: int) -> dict:
        """Record ``record`` fully decoded to numpy by the dataset's ``FeaturesDict``."""
        return self.dataset.features.deserialize_example_np(self.read_bytes(record))

    def read_lazy(self, record: int, data: bytes | None = None) -> Record:
        """Record ``record`` (its bytes ``data`` if already read) with its audio left encoded until
        a crop is asked for."""
        parsed = self._parser.parse_example(self.read_bytes(record) if data is None else data)
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
        self._files.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
