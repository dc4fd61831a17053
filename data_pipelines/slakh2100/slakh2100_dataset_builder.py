"""TFDS builder ``slakh2100``: Slakh2100 tracks packed as overlapping 16-kHz windows.

One example is one window of one track; the record schema, the window arithmetic and the
config names live in the package (:mod:`jointist_jax.data.schema`, :mod:`jointist_jax.data.packing`),
which the reader imports too.

The dataset's ``metadata.json`` holds the packing (``hop_seconds``, ``clip_seconds``,
``sample_rate``) and, per split, ``tracks_written``, ``windows``, ``audio_seconds`` and the
``skipped`` ``[track_id, reason]`` pairs.

Examples are written in generation order (``disable_shuffling``): tracks in sorted order,
each track's windows consecutive, so validation/test splits can be read back as whole tracks
(:func:`jointist_jax.data.packing.assemble_track`). The Slakh2100 directory comes in as the TFDS
manual dir. Tracks are loaded in a process pool (ordered, a bounded number in flight).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import shard_utils

from data_pipelines.slakh2100 import ordered_pool, slakh_tracks
from jointist_jax.data import packing
from jointist_jax.data import schema

log = logging.getLogger(__name__)

DEFAULT_NUM_SHARDS = 256
# Example keys must sort in generation order (disable_shuffling); spreading them over TFDS's
# 128-bit key space keeps each of its 1000 on-disk sort buckets small for large splits.
_KEY_SPACE = 2 ** 128

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download Slakh2100 (https://zenodo.org/record/4599666: slakh2100_flac_redux, or the original
2100-track split) and extract it. Pass the extracted directory -- the one holding
train/ validation/ test/ (and, for the redux, omitted/, which is ignored) -- as the manual dir:
  python -m data_pipelines.build_slakh --slakh_dir DIR --data_dir OUT
or tfds.download.DownloadConfig(manual_dir=DIR).
"""


@dataclasses.dataclass(eq=False)
class Slakh2100Config(tfds.core.BuilderConfig):
    """Packing parameters: hop between stored windows, clip length and sample rate."""

    hop_seconds: float = schema.DEFAULT_PACKING.hop_seconds
    clip_seconds: float = schema.DEFAULT_PACKING.clip_seconds
    sample_rate: int = schema.DEFAULT_PACKING.sample_rate


DEFAULT_CONFIG = Slakh2100Config(
    name=schema.DEFAULT_CONFIG_NAME, description="16-kHz windows of 10-s clip + 30-s hop (1.33x storage).")


def make_config(hop_seconds: float = schema.DEFAULT_PACKING.hop_seconds,
                clip_seconds: float = schema.DEFAULT_PACKING.clip_seconds,
                sample_rate: int = schema.DEFAULT_PACKING.sample_rate) -> Slakh2100Config:
    """The builder config for these packing parameters (``clips`` for the defaults).

    Non-default parameters get their own config name (:func:`jointist_jax.data.schema.config_name`),
    hence their own directory.
    """
    packing.check_hop(hop_seconds, clip_seconds, sample_rate)
    wanted = schema.Packing(hop_seconds=hop_seconds, clip_seconds=clip_seconds, sample_rate=sample_rate)
    if wanted == schema.DEFAULT_PACKING:
        return DEFAULT_CONFIG
    return Slakh2100Config(name=schema.config_name(wanted), hop_seconds=hop_seconds,
                           clip_seconds=clip_seconds, sample_rate=sample_rate,
                           description=f"{sample_rate}-Hz windows of {clip_seconds:g}-s clip + "
                                       f"{hop_seconds:g}-s hop.")


class EmptySplitError(ValueError):
    """A split folder gave no example (every track skipped, or no track at all)."""


@dataclasses.dataclass
class SplitStats:
    """What generating one split did (the builder's record of written and skipped tracks)."""

    tracks_written: int = 0
    windows: int = 0
    audio_seconds: float = 0.0
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)


class Slakh2100(tfds.core.GeneratorBasedBuilder):
    """Slakh2100 packed as overlapping windows: mix, class stems and labelled notes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Windows of mix + class stems (int16) + notes."}
    BUILDER_CONFIGS = [DEFAULT_CONFIG]
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

    def __init__(self, *, workers: int = 1, splits: Sequence[str] | None = None,
                 **kwargs: Any):
        """Args: ``workers`` track-loading processes (<= 1: in-process); ``splits`` to build
        (default: every split folder present); the rest go to ``tfds.core.DatasetBuilder``."""
        super().__init__(**kwargs)
        self._workers = workers
        self._requested_splits = tuple(splits) if splits else None
        self.split_stats: dict[str, SplitStats] = {}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Slakh2100 at 16 kHz, packed as overlapping windows of the mix, the "
                        "instrument-class stems and the labelled notes (jointist-jax).",
            features=schema.features(),
            homepage="http://www.slakh.com/",
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        found = slakh_tracks.find_splits(dl_manager.manual_dir)
        wanted = self._requested_splits or tuple(found)
        missing = [s for s in wanted if s not in found]
        if missing:
            raise slakh_tracks.SlakhFormatError(
                f"{dl_manager.manual_dir}: requested split folder(s) {', '.join(missing)} not "
                f"found; present: {', '.join(found)}")
        config = self.builder_config
        # The packing, for readers (jointist_jax/data/records.py reads these keys).
        self.info.metadata.update(hop_seconds=config.hop_seconds,
                                  clip_seconds=config.clip_seconds,
                                  sample_rate=config.sample_rate)
        return {split: self._generate_examples(split, found[split]) for split in wanted}

    def _generate_examples(self, split: str, track_dirs: Sequence[str]):
        """Yields ``(key, window example)`` in (track, window) order; skips bad tracks."""
        config = self.builder_config
        hop, clip = packing.check_hop(config.hop_seconds, config.clip_seconds,
                                      config.sample_rate)
        stats = self.split_stats[split] = SplitStats()
        loader = functools.partial(slakh_tracks.load_track_or_skip,
                                   sample_rate=config.sample_rate, clip_samples=clip)
        tracks = ordered_pool.ordered_map(loader, track_dirs, self._workers)
        for position, result in enumerate(tracks):
            if isinstance(result, slakh_tracks.TrackSkipped):
                log.warning("%s: skipping %s: %s", split, result.track_id, result.reason)
                stats.skipped.append((result.track_id, result.reason))
                continue
            stats.tracks_written += 1
            stats.audio_seconds += result.num_samples / config.sample_rate
            for k, example in enumerate(track_examples(result, hop, clip, config.sample_rate)):
                stats.windows += 1
                yield example_key(position, len(track_dirs), k), example
        if stats.windows == 0:
            # TFDS would fail with a bare "No examples were yielded"; say why instead.
            if not track_dirs:
                raise EmptySplitError(f"split {split!r}: its folder holds no track folder")
            raise EmptySplitError(
                f"split {split!r}: every one of its {len(track_dirs)} tracks was skipped: "
                + "; ".join(f"{t}: {r}" for t, r in stats.skipped))
        self.info.metadata[split] = {
            "tracks_written": stats.tracks_written,
            "windows": stats.windows,
            "audio_seconds": stats.audio_seconds,
            "skipped": [list(item) for item in stats.skipped],
        }


def example_key(position: int, num_tracks: int, window_index: int) -> int:
    """TFDS key of window ``window_index`` of the ``position``-th of ``num_tracks`` tracks.

    With ``disable_shuffling`` TFDS sorts examples by key, so keys increase with (track,
    window). TFDS spills splits over 1 GB into 1000 buckets by ``key * 1000 // 2**128`` and
    sorts each bucket in memory: spacing tracks evenly over the 128-bit range keeps every
    bucket to about ``num_tracks / 1000`` tracks instead of the whole split in bucket 0.
    """
    return position * (_KEY_SPACE // max(num_tracks, 1)) + window_index


def track_examples(track: slakh_tracks.Track, hop: int, clip: int,
                   sample_rate: int) -> Iterator[dict[str, Any]]:
    """The window examples of one track, in window order."""
    track_classes = track.track_classes
    for k, (start, end) in enumerate(packing.window_bounds(track.num_samples, clip, hop)):
        example = {
            "track_id": track.track_id,
            "window_index": np.int32(k),
            "window_start": np.int64(start),
            "track_length": np.int64(track.num_samples),
            "mix": track.mix[start:end],
            "stem_classes": track.stem_classes,
            "stems": np.ascontiguousarray(track.stems[:, start:end]),
            "track_classes": track_classes,
        }
        example.update(packing.window_notes(track.notes, start, end, sample_rate))
        yield example


@dataclasses.dataclass(frozen=True)
class PerSplitShardConfig(shard_utils.ShardConfig):
    """``num_shards`` shards per split, but never more shards than the split has examples.

    TFDS applies one ``ShardConfig`` to every split; clamping per split lets the default of
    256 shards serve a 1500-track train split and a tiny test split alike.
    """

    def get_number_shards(self, total_size: int, num_examples: int,
                          uses_precise_sharding: bool = True) -> int:
        return max(1, min(self.num_shards or DEFAULT_NUM_SHARDS, num_examples))


@dataclasses.dataclass(eq=False)
class DownloadConfig(tfds.download.DownloadConfig):
    """``tfds.download.DownloadConfig`` whose shard count is clamped per split."""

    def get_shard_config(self) -> shard_utils.ShardConfig:
        return PerSplitShardConfig(num_shards=self.num_shards or DEFAULT_NUM_SHARDS)
