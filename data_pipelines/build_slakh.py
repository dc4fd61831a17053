"""Builds the ``slakh2100`` TFDS dataset (16-kHz windows of mix, class stems and notes).

    python -m data_pipelines.build_slakh --slakh_dir DIR --data_dir OUT \\
        [--splits train,validation,test] [--hop_seconds 30] [--workers W] [--num_shards N] \\
        [--overwrite]

``DIR`` is a Slakh2100 directory (original split layout or ``slakh2100_flac_redux``; its
``omitted`` folder is ignored). The dataset lands in ``OUT/slakh2100/<config>/1.0.0`` (config
``clips`` for the default 30-s hop, ``clips_hop<H>_clip10_sr16000`` otherwise); read it with
``tfds.builder_from_directory``. A summary is printed: tracks written and skipped per split (with
the reasons), windows, shards, bytes, seconds of audio, seconds taken and the throughput in
audio seconds per second.

Bad input (details in ``data_pipelines/slakh2100/slakh_tracks.py``): a track with a missing or
unreadable mix, stem FLAC (``audio_rendered: true``) or MIDI file (``midi_saved: true``), audio
shorter than one 10-s clip, or no notes is skipped, logged and counted; a missing or malformed
``metadata.yaml``, a MIDI file with several instruments, a directory without any split
folder, or a split whose every track is skipped stops the build with an error naming the file,
directory or split (and, for an empty split, each track's reason).

Interruptions: TFDS writes into ``incomplete.XXXXXX_1.0.0/`` next to the final directory and
renames it only when every split is written, so a killed build leaves no half dataset. Re-run
the same command: leftover ``incomplete.*`` directories of this config are deleted and the build
starts over. A re-run on a finished dataset reports that it is already built; ``--overwrite``
rebuilds it. Do not run two builds into the same ``--data_dir`` and config at once. A built
dataset holds the splits of the build that made it: to add a split later, rebuild with
``--overwrite`` and all the splits wanted.

Shards: ``--num_shards`` per split (default 256), clamped to the number of windows of each
split, so a full 1500-track train split gets 256 shards and a tiny test split fewer. Each split
also gets a record index (``<split>.record_index.npz``, jointist_jax/data/records.py) so that
readers open it without scanning the shards; re-running the build on a finished dataset that
lacks one adds it.

Buckets: ``--slakh_dir`` and ``--data_dir`` may be ``gs://`` paths. Track files are read from the
bucket directly. TFDS writes its shards with TensorFlow's own file system, whose GCS client cannot
be redirected to an emulator (jointist_jax/storage.py), so a dataset for a bucket is built in a
local staging folder (``--staging_dir``, default the system's temporary folder; it needs room
for the whole dataset) and then uploaded, ``dataset_info.json`` last: readers only open a dataset
that has it, so an interrupted upload is never read, and a re-run starts the upload over.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import fnmatch
import glob
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import Sequence

from data_pipelines.slakh2100 import slakh_tracks
from jointist_jax import storage
from jointist_jax.cli_support import OneLineHelpFormatter
from jointist_jax.data import schema

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SplitSummary:
    """One split of a build."""

    tracks_written: int
    windows: int
    num_shards: int
    num_bytes: int
    audio_seconds: float
    skipped: list[tuple[str, str]]

    @property
    def tracks_skipped(self) -> int:
        return len(self.skipped)


@dataclasses.dataclass
class BuildSummary:
    """What :func:`build` did (or found, when the dataset was already built)."""

    dataset_dir: str
    already_built: bool
    elapsed_seconds: float
    splits: dict[str, SplitSummary]

    @property
    def tracks_written(self) -> int:
        return sum(s.tracks_written for s in self.splits.values())

    @property
    def tracks_skipped(self) -> int:
        return sum(s.tracks_skipped for s in self.splits.values())

    @property
    def windows(self) -> int:
        return sum(s.windows for s in self.splits.values())

    @property
    def num_bytes(self) -> int:
        return sum(s.num_bytes for s in self.splits.values())

    @property
    def audio_seconds(self) -> float:
        return sum(s.audio_seconds for s in self.splits.values())

    @property
    def throughput(self) -> float:
        """Audio seconds written per second of build time (0 for an already-built dataset)."""
        if self.already_built or self.elapsed_seconds <= 0:
            return 0.0
        return self.audio_seconds / self.elapsed_seconds

    def format(self) -> str:
        """Human-readable report."""
        lines = [f"slakh2100 dataset at {self.dataset_dir}"]
        if self.already_built:
            lines.append("already built: nothing to do (pass --overwrite to rebuild)")
        lines.append(f"{'split':<12}{'tracks':>8}{'skipped':>9}{'windows':>9}{'shards':>8}"
                     f"{'MB':>10}{'audio h':>9}")
        for name, s in self.splits.items():
            lines.append(f"{name:<12}{s.tracks_written:>8}{s.tracks_skipped:>9}{s.windows:>9}"
                         f"{s.num_shards:>8}{s.num_bytes / 1e6:>10.1f}"
                         f"{s.audio_seconds / 3600:>9.2f}")
        for name, s in self.splits.items():
            for track_id, reason in s.skipped:
                lines.append(f"  skipped {name}/{track_id}: {reason}")
        if not self.already_built:
            lines.append(f"{self.audio_seconds:.1f} s of audio in {self.elapsed_seconds:.1f} s: "
                         f"{self.throughput:.1f} audio-seconds per second")
        return "\n".join(lines)


def build(slakh_dir, data_dir, splits: Sequence[str] | None = None,
          hop_seconds: float = schema.DEFAULT_PACKING.hop_seconds, workers: int = 1,
          num_shards: int | None = None, overwrite: bool = False,
          clip_seconds: float = schema.DEFAULT_PACKING.clip_seconds,
          sample_rate: int = schema.DEFAULT_PACKING.sample_rate, staging_dir=None) -> BuildSummary:
    """Builds (or finds already built) the ``slakh2100`` dataset from a Slakh2100 directory.

    Args:
      slakh_dir: the Slakh2100 directory (holds train/ validation/ test/).
      data_dir: TFDS data dir to write into.
      splits: splits to build (default: every split folder present).
      hop_seconds: hop between stored windows (``Slakh2100Config.hop_seconds``).
      workers: track-loading processes (<= 1: in this process).
      num_shards: shards per split, clamped to its window count (default 256).
      overwrite: rebuild a dataset that is already built.
      clip_seconds, sample_rate: the other ``Slakh2100Config`` fields.
      staging_dir: local folder for the staging copy of a dataset built for a bucket.

    Returns:
      the :class:`BuildSummary`; ``already_built`` is true (and nothing was written) if the
      dataset existed and ``overwrite`` is false.

    Raises:
      SlakhFormatError: the directory is not Slakh2100 (see the module docstring).
      EmptySplitError: a split gave no example (a ``ValueError``).
      ValueError: invalid arguments.

    With ``workers > 1`` tracks load in spawned processes, which re-import the caller's main
    module: call ``build`` from under ``if __name__ == "__main__":`` in scripts.
    """
    # Imported here so that `python -m data_pipelines.build_slakh`, re-imported by every
    # spawned worker, does not import TensorFlow in the workers.
    import tensorflow_datasets as tfds
    from data_pipelines.slakh2100 import slakh2100_dataset_builder as builder_lib

    start = time.perf_counter()
    slakh_dir, data_dir = os.fspath(slakh_dir), os.fspath(data_dir)
    if splits:
        unknown = [s for s in splits if s not in slakh_tracks.SPLITS]
        if unknown:
            raise ValueError(f"unknown split(s) {unknown}; expected some of "
                             f"{', '.join(slakh_tracks.SPLITS)}")
    if num_shards is not None and num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    storage.require_bucket(slakh_dir, role="--slakh_dir")
    slakh_tracks.find_splits(slakh_dir)  # fail fast on a wrong directory
    storage.make_dirs(data_dir, role="--data_dir")
    config = builder_lib.make_config(hop_seconds, clip_seconds, sample_rate)
    if storage.is_remote(data_dir):
        return _build_into_bucket(slakh_dir, data_dir, config, splits=splits, workers=workers,
                                  num_shards=num_shards, overwrite=overwrite, staging_dir=staging_dir,
                                  start=start)
    builder = builder_lib.Slakh2100(data_dir=data_dir, config=config, workers=workers,
                                    splits=splits)
    if builder.is_prepared() and not overwrite:
        write_record_indexes(builder.data_path)
        return _summary(builder, already_built=True, elapsed=time.perf_counter() - start)

    for stale in remove_incomplete_dirs(builder.data_path):
        log.warning("removed %s, left over from an interrupted build", stale)
    mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    download_config = builder_lib.DownloadConfig(
        manual_dir=slakh_dir, num_shards=num_shards, download_mode=mode,
        try_download_gcs=False)  # never look for a prebuilt copy on the network
    builder.download_and_prepare(download_config=download_config)
    write_record_indexes(builder.data_path)
    return _summary(builder, already_built=False, elapsed=time.perf_counter() - start)


def _build_into_bucket(slakh_dir: str, data_dir: str, config, *, splits, workers, num_shards, overwrite,
                       staging_dir, start: float) -> BuildSummary:
    """Builds into a local staging folder, then uploads the dataset (module docstring)."""
    import tensorflow_datasets as tfds
    from data_pipelines.slakh2100 import slakh2100_dataset_builder as builder_lib

    version = str(builder_lib.Slakh2100.VERSION)
    target = storage.path(data_dir) / builder_lib.Slakh2100.name / config.name / version
    if (target / "dataset_info.json").is_file() and not overwrite:
        write_record_indexes(target)
        return _summary(tfds.builder_from_directory(target), already_built=True,
                        elapsed=time.perf_counter() - start)
    staging = tempfile.mkdtemp(prefix="jointist-build-", dir=None if staging_dir is None else os.fspath(staging_dir))
    try:
        builder = builder_lib.Slakh2100(data_dir=staging, config=config, workers=workers, splits=splits)
        download_config = builder_lib.DownloadConfig(
            manual_dir=slakh_dir, num_shards=num_shards, download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS,
            try_download_gcs=False)
        try:
            builder.download_and_prepare(download_config=download_config)
        except RuntimeError as error:  # TFDS reports a full disk as a RuntimeError naming the shard
            if "No space left on device" not in str(error):
                raise
            raise OSError(errno.ENOSPC, f"the staging folder {staging} ran out of space while building the "
                                        f"dataset for {os.fspath(target)} ({error}); nothing was uploaded. "
                                        f"--staging_dir needs room for the whole dataset") from error
        write_record_indexes(builder.data_path)
        log.info("uploading %s to %s", os.fspath(builder.data_path), os.fspath(target))
        storage.remove_tree(target)  # a dataset being replaced, or a partial upload
        storage.upload_tree(builder.data_path, target, last=["dataset_info.json"])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _summary(tfds.builder_from_directory(target), already_built=False,
                    elapsed=time.perf_counter() - start)


def write_record_indexes(dataset_dir) -> None:
    """Writes the record index of every split that lacks a current one."""
    from jointist_jax.data import records

    dataset = records.open_dataset(dataset_dir)
    for split in dataset.builder.info.splits:
        if records.load_index(dataset, split) is None:
            records.save_index(dataset, split)
            dataset = records.open_dataset(dataset_dir)  # the listing now includes the index file


def remove_incomplete_dirs(dataset_dir: os.PathLike | str) -> list[str]:
    """Deletes ``incomplete.*_<version>`` directories that an interrupted build left beside
    ``dataset_dir`` (``.../slakh2100/<config>/<version>``); returns their paths."""
    dataset_dir = os.fspath(dataset_dir).rstrip("/")
    parent, version = os.path.split(dataset_dir)
    stale = sorted(glob.glob(os.path.join(parent, f"incomplete.*_{version}")))
    for path in stale:
        shutil.rmtree(path)
    return stale


def _summary(builder, already_built: bool, elapsed: float) -> BuildSummary:
    dataset_dir = os.fspath(builder.data_path)
    metadata = builder.info.metadata or {}
    sizes = storage.file_sizes(dataset_dir)
    splits = {}
    for name, info in builder.info.splits.items():
        meta = metadata.get(name, {})
        shard_bytes = sum(size for file, size in sizes.items() if fnmatch.fnmatch(file, f"*-{name}.tfrecord-*"))
        splits[name] = SplitSummary(
            tracks_written=int(meta.get("tracks_written", 0)),
            windows=int(info.num_examples),
            num_shards=len(info.shard_lengths),
            num_bytes=shard_bytes,
            audio_seconds=float(meta.get("audio_seconds", 0.0)),
            skipped=[tuple(item) for item in meta.get("skipped", [])],
        )
    return BuildSummary(dataset_dir=dataset_dir, already_built=already_built,
                        elapsed_seconds=elapsed, splits=splits)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jointist-build-slakh", description=__doc__.split("\n\n")[0],
        formatter_class=OneLineHelpFormatter)
    parser.add_argument("--slakh_dir", required=True, help="Slakh2100 directory")
    parser.add_argument("--data_dir", required=True, help="TFDS data dir to write into")
    parser.add_argument("--splits", default=None,
                        help="comma-separated subset of train,validation,test (default: all "
                             "present)")
    parser.add_argument("--hop_seconds", type=float, default=schema.DEFAULT_PACKING.hop_seconds,
                        help=f"hop between stored windows (default {schema.DEFAULT_PACKING.hop_seconds:g})")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="track-loading processes (default min(8, CPUs))")
    parser.add_argument("--num_shards", type=int, default=None,
                        help="shards per split, clamped to its window count (default 256)")
    parser.add_argument("--overwrite", action="store_true", help="rebuild a built dataset")
    parser.add_argument("--staging_dir", default=None,
                        help="local folder for building a dataset whose --data_dir is gs:// before it is "
                             "uploaded (default: the system's temporary folder; needs room for the dataset)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (console script ``jointist-build-slakh``); returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    splits = [s.strip() for s in args.splits.split(",") if s.strip()] if args.splits else None
    try:
        summary = build(args.slakh_dir, args.data_dir, splits=splits,
                        hop_seconds=args.hop_seconds, workers=args.workers,
                        num_shards=args.num_shards, overwrite=args.overwrite,
                        staging_dir=args.staging_dir)
    except (slakh_tracks.SlakhFormatError, ValueError, OSError) as e:  # OSError: storage.StorageError, a full disk
        print(f"jointist-build-slakh: error: {e}", file=sys.stderr)
        return 2
    print(summary.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
