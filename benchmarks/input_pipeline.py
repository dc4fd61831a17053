"""Data-path throughput: TFRecord build speed and size, and input-pipeline clips/s and rows/s.

    python -m benchmarks.input_pipeline --data_dir DATA           # a built slakh2100 dataset
    python -m benchmarks.input_pipeline --slakh_dir SLAKH         # builds one into a temp dir first
    python -m benchmarks.input_pipeline --data_dir DATA --gcs_emulator   # and from a bucket too
    python -m benchmarks.input_pipeline --data_dir DATA --gcs_emulator --latency   # and with its latency

With ``--slakh_dir`` it first measures the build: seconds of audio packed per second, bytes per
hour of audio, and both scaled to the 145 hours of Slakh2100. Then it measures, after a warm-up,
the pipeline of ``jointist_jax.data.pipeline`` producing global batches (rolls, sources and all) for
  * the joint transcription+separation stage: 2 clips x 3 positive rows;
  * the transcription stage: 2 clips x (2 positive + 2 negative) rows.
With ``--gcs_emulator`` the dataset is also uploaded to a GCS emulator on 127.0.0.1
(fake-gcs-server, from the ``dev`` extra) and every measurement is repeated on ``gs://``, beside
local disk, together with the cost of opening a split: seconds and bytes read, with the record
index the build saves and by scanning the shards without it. With ``--latency`` as well, both
stages are measured through scripts/gcs_fault_proxy.py adding a real bucket's time to the first
byte (30 ms; 60 ms for 1 % of requests) beside the same proxy without it, for 4, 16 and 64
workers; then 1, 2 and 4 processes read the bucket at once, each through its own latency proxy:
their aggregate rate of ranged reads alone (one read in flight per process, nothing decoded: what
latency limits) and of the whole pipeline (each its own share of the global batch: what the CPU
limits on a small machine), and a check that no two read the same track or record.
One function per measurement; each returns a dict of numbers, printed by ``main``.
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import sys
import tempfile
import time

from jointist_jax import xla_flags

xla_flags.apply_cpu_flags()  # this program's CPU XLA flags, before jax loads

from jointist_jax.data import pipeline
from jointist_jax.data.spec import InputSpec

import jax


def measure_open(data_dir: str, split: str) -> dict[str, float]:
    """Opening ``split``: seconds and bytes, with the saved record index and by scanning the shards."""
    from jointist_jax import storage
    from jointist_jax.data import record_scanner, records

    start = time.perf_counter()
    dataset = records.open_dataset(data_dir)
    index = records.split_index(dataset, split)
    with_index = time.perf_counter() - start
    index_bytes = dataset.file_sizes()[dataset.index_file(split).name]
    metadata_bytes = sum(size for name, size in dataset.file_sizes().items() if name.endswith(".json"))
    start = time.perf_counter()
    files = dataset.split_files(split)
    with storage.RangeReader(files) as reader:
        for i in range(len(files)):
            record_scanner.scan_file(reader, i)
        scan_seconds = time.perf_counter() - start
        scan_bytes, scan_requests = reader.bytes_read, reader.requests
    shard_bytes = sum(dataset.file_sizes()[f.name] for f in files)
    return {"records": len(index), "tracks": len(set(index.track_id.tolist())), "shards": len(files),
            "open_seconds": with_index, "open_bytes": index_bytes + metadata_bytes, "index_bytes": index_bytes,
            "scan_seconds": scan_seconds, "scan_bytes": scan_bytes, "scan_requests": scan_requests,
            "shard_bytes": shard_bytes}


def measure_crc(data_dir: str, split: str, records_to_time: int = 16, repeats: int = 5) -> dict[str, float]:
    """The CRC-32C check alone: microseconds per record and per MB over the first records of ``split``."""
    from jointist_jax.data import record_scanner, records

    dataset = records.open_dataset(data_dir)
    index = records.split_index(dataset, split)
    with records.RecordReader(dataset, index) as reader:
        payloads = reader.read_many_bytes(range(min(records_to_time, len(index))))
    start = time.perf_counter()
    for _ in range(repeats):
        for data in payloads:
            record_scanner.masked_crc32c(data)
    elapsed = (time.perf_counter() - start) / repeats
    megabytes = sum(len(d) for d in payloads) / 1e6
    return {"us_per_record": 1e6 * elapsed / len(payloads), "us_per_mb": 1e6 * elapsed / megabytes,
            "mb_per_record": megabytes / len(payloads)}


def measure_pipeline(data_dir: str, split: str, *, clips: int, num_positive: int, num_negative: int,
                     steps: int, warmup: int, workers: int | None, clip_seconds: float = 10.0,
                     seed: int = 0, process: tuple[int, int] | None = None) -> dict[str, float]:
    """Batches per second of one stage's shapes, after ``warmup`` batches; clips/s and rows/s.
    ``process``: ``(index, count)`` of one of several reader processes, each making ``clips``
    clips of a global batch of ``clips * count`` (host batches, no device arrays)."""
    rows = clips * max(num_positive + num_negative, 1)
    index, count = process or (None, None)
    spec = InputSpec(global_batch=clips * (count or 1), num_positive=num_positive, num_negative=num_negative,
                     seed=seed, clip_seconds=clip_seconds, num_workers=workers)
    with pipeline.make_train_iterator(data_dir, split, spec, process_index=index, process_count=count) as pipe:
        batches = iter(pipe) if process is None else pipe.local_batches()
        for _ in range(warmup):
            jax.block_until_ready(next(batches))
        start = time.perf_counter()
        for _ in range(steps):
            jax.block_until_ready(next(batches))
        elapsed = time.perf_counter() - start
        result = {"clips_per_s": steps * clips / elapsed, "rows_per_s": steps * rows / elapsed,
                  "ms_per_batch": 1000 * elapsed / steps}
        if process is not None:  # (epoch, track id) of every example this process made
            result["tracks"] = [_track_of(pipe, i) for i in range((warmup + steps) * clips)]
    return result


def _track_of(pipe, i: int) -> tuple[int, str]:
    """(epoch, track id) of local example ``i`` of a training pipeline (per-track sampling)."""
    epoch, j = divmod(pipe.global_example(i), pipe.examples_per_epoch)
    track = int(pipe._epoch_positions(epoch)[j])
    return epoch, str(pipe.index.track_id[pipe.tracks.records[track][0]])


def measure_joint_stage(data_dir: str, split: str, steps: int, warmup: int,
                        workers: int | None) -> dict[str, float]:
    """Joint T+S stage: 2 clips x 3 positives (docs/reference.md §3.4)."""
    return measure_pipeline(data_dir, split, clips=2, num_positive=3, num_negative=0, steps=steps,
                            warmup=warmup, workers=workers)


def measure_transcription_stage(data_dir: str, split: str, steps: int, warmup: int,
                                workers: int | None) -> dict[str, float]:
    """Transcription stage: 2 clips x (2 positives + 2 negatives)."""
    return measure_pipeline(data_dir, split, clips=2, num_positive=2, num_negative=2, steps=steps,
                            warmup=warmup, workers=workers)


SLAKH2100_HOURS = 145.0


def measure_build(slakh_dir: str, split: str, workers: int) -> tuple[str, dict[str, float]]:
    """Builds split ``split`` of ``slakh_dir`` into a temp dir: (data_dir, build numbers).

    Numbers: audio seconds packed per second, stored bytes per audio hour (mix + class stems,
    all windows), and the time and disk the 145-hour Slakh2100 would take at that rate.
    """
    from data_pipelines import build_slakh

    data_dir = tempfile.mkdtemp(prefix="jointist_bench_")
    atexit.register(shutil.rmtree, data_dir, ignore_errors=True)  # built only to measure: removed at exit
    summary = build_slakh.build(slakh_dir, data_dir, splits=[split], workers=workers)
    bytes_per_hour = summary.num_bytes / (summary.audio_seconds / 3600.0)
    return data_dir, {
        "audio_seconds": summary.audio_seconds,
        "build_seconds": summary.elapsed_seconds,
        "audio_seconds_per_second": summary.throughput,
        "bytes_per_audio_hour": bytes_per_hour,
        "slakh2100_gigabytes": bytes_per_hour * SLAKH2100_HOURS / 1e9,
        "slakh2100_build_hours": SLAKH2100_HOURS * 3600.0 / summary.throughput / 3600.0,
    }


def records_dataset_dir(data_dir: str):
    from jointist_jax.data import records

    return records.dataset_dir(data_dir)


def index_size(num_tracks: int, windows_per_track: int, num_shards: int = 256) -> int:
    """Bytes of the saved record index of a split of ``num_tracks`` tracks (Slakh-style track ids)."""
    import numpy as np

    from jointist_jax import storage
    from jointist_jax.data import records

    rows = num_tracks * windows_per_track
    files = [storage.path(f"/data/slakh2100-train.tfrecord-{i:05d}-of-{num_shards:05d}") for i in range(num_shards)]
    index = records.RecordIndex(
        files=files, file_index=(np.arange(rows) * num_shards // rows).astype(np.int32),
        offset=np.arange(rows, dtype=np.int64) * 5_000_000, length=np.full(rows, 5_000_000, np.int64),
        track_id=np.asarray([f"Track{t + 1:05d}" for t in range(num_tracks) for _ in range(windows_per_track)]),
        window_index=np.tile(np.arange(windows_per_track), num_tracks).astype(np.int64),
        window_start=np.tile(np.arange(windows_per_track) * 480_000, num_tracks).astype(np.int64),
        track_length=np.full(rows, 4_000_000, np.int64))
    return len(records.serialize_index(index, [1 << 30] * num_shards, "0" * 64))


def print_data_path(data_dir: str, split: str, args) -> None:
    """The open cost and both stages' throughput on one copy of the dataset."""
    o = measure_open(data_dir, split)
    print(f"open {split}: {o['records']} records of {o['tracks']} tracks in {o['shards']} shards "
          f"({o['shard_bytes'] / 1e6:.1f} MB)")
    print(f"  with the saved record index: {o['open_seconds']:.3f} s, {o['open_bytes'] / 1e3:.1f} kB read "
          f"(index {o['index_bytes'] / o['records']:.0f} bytes per record)")
    print(f"  scanning the shards instead: {o['scan_seconds']:.3f} s, {o['scan_bytes'] / 1e6:.2f} MB in "
          f"{o['scan_requests']} reads")
    c = measure_crc(data_dir, split)
    print(f"  CRC check per record: {c['us_per_record']:.0f} us ({c['us_per_mb']:.0f} us per MB, "
          f"records of {c['mb_per_record']:.2f} MB)")
    for name, fn in (("joint (2 clips x 3 pos)", measure_joint_stage),
                     ("transcription (2 x (2+2))", measure_transcription_stage)):
        r = fn(data_dir, split, args.steps, args.warmup, args.workers)
        print(f"  {name:<28} {r['clips_per_s']:8.1f} clips/s {r['rows_per_s']:8.1f} rows/s "
              f"{r['ms_per_batch']:8.1f} ms/batch")


# Time to the first byte of a read from a real bucket, and a slow tail.
BUCKET_LATENCY = dict(first_byte_s=0.030, slow_s=0.060, slow_fraction=0.01)
WORKER_COUNTS = (4, 16, 64)
STAGES = (("joint", dict(num_positive=3, num_negative=0)), ("transcription", dict(num_positive=2, num_negative=2)))


def measure_latency_hidden(upstream: str, remote: str, split: str, steps: int, warmup: int) -> list[dict]:
    """Both stages' clips/s through a proxy with and without bucket latency, per worker count."""
    from scripts import gcs_fault_proxy

    rows = []
    for stage, shape in STAGES:
        for workers in WORKER_COUNTS:
            row = {"stage": stage, "workers": workers}
            for name, latency in (("plain", gcs_fault_proxy.Latency()),
                                  ("latency", gcs_fault_proxy.Latency(**BUCKET_LATENCY))):
                with gcs_fault_proxy.running(upstream, latency=latency):
                    row[name] = measure_pipeline(remote, split, clips=2, steps=steps, warmup=warmup,
                                                 workers=workers, **shape)["clips_per_s"]
            rows.append(row)
    return rows


def _reader_process(url: str, remote: str, split: str, workers: int, steps: int, warmup: int, index: int,
                    count: int, results) -> None:
    """One of ``count`` reader processes: joint shapes through the proxy at ``url``."""
    from scripts import gcs_emulator

    with gcs_emulator.clients_pointed_at(url):
        results.put((index, measure_pipeline(remote, split, clips=2, steps=steps, warmup=warmup, workers=workers,
                                             process=(index, count), **dict(STAGES)["joint"])))


def _processes_on_one_bucket(upstream: str, count: int, target, *args) -> dict[int, dict]:
    """Runs ``target(proxy_url, *args, index, count, [barrier,] results)`` in ``count`` spawned
    processes, each through its own proxy to ``upstream`` with a real bucket's latency; returns
    ``{index: what it put in results}``."""
    import multiprocessing

    from scripts import gcs_fault_proxy

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    proxies = [gcs_fault_proxy.FaultProxy(upstream, latency=gcs_fault_proxy.Latency(**BUCKET_LATENCY)).start()
               for _ in range(count)]
    try:
        procs = [context.Process(target=target, args=(p.url, *args, i, count, results)) for i, p in enumerate(proxies)]
        for p in procs:
            p.start()
        measured = dict(results.get(timeout=1200) for _ in procs)
        for p in procs:
            p.join()
    finally:
        for proxy in proxies:
            proxy.stop()
    return measured


def _shared(shares: list[set]) -> list:
    """What more than one of ``shares`` holds, sorted."""
    return sorted(set().union(*[a & b for i, a in enumerate(shares) for b in shares[i + 1:]]))


def measure_reader_processes(upstream: str, remote: str, split: str, count: int, workers: int, steps: int,
                             warmup: int) -> dict:
    """``count`` processes reading one bucket at once, each through its own latency proxy: their
    aggregate clips/s, and the tracks each made examples of, which must not overlap within an epoch."""
    measured = _processes_on_one_bucket(upstream, count, _reader_process, remote, split, workers, steps, warmup)
    return {"clips_per_s": sum(m["clips_per_s"] for m in measured.values()),
            "examples": [len(m["tracks"]) for m in measured.values()],
            "overlap": _shared([set(measured[i]["tracks"]) for i in range(count)])}


PROCESS_COUNTS = (1, 2, 4)
READS_PER_PROCESS = 12
READ_THREADS = 1
SMALL_READ = 64 * 1024  # a read whose time is the bucket's latency rather than the transfer


def _range_reader_process(url: str, remote: str, split: str, threads: int, reads: int, size: int | None, barrier,
                          index: int, count: int, results) -> None:
    """One of ``count`` processes reading ``reads`` records of its share of ``split`` (records
    ``index``, ``index + count``, ...) through the proxy at ``url``, ``threads`` ranged reads in
    flight, bytes only (no CRC check, no decoding); the first ``size`` bytes of each record (None:
    all of it); every process starts reading at once."""
    import concurrent.futures

    from jointist_jax import storage
    from jointist_jax.data import records
    from scripts import gcs_emulator

    with gcs_emulator.clients_pointed_at(url):
        table = records.split_index(records.open_dataset(remote), split)
        mine = list(range(index, len(table), count))[:reads]
        with storage.RangeReader(table.files) as reader, concurrent.futures.ThreadPoolExecutor(threads) as pool:
            def read(i: int) -> int:
                length = int(table.length[i]) if size is None else min(size, int(table.length[i]))
                return len(reader.read(int(table.file_index[i]), int(table.offset[i]), length))

            read(mine[0])  # the connection, opened before the clock starts
            barrier.wait()
            start = time.perf_counter()
            sizes = list(pool.map(read, mine))
            elapsed = time.perf_counter() - start
    results.put((index, {"seconds": elapsed, "bytes": sum(sizes), "reads": len(sizes), "records": mine}))


def measure_range_reads(upstream: str, remote: str, split: str, count: int, threads: int = READ_THREADS,
                        reads: int = READS_PER_PROCESS, size: int | None = None) -> dict:
    """``count`` processes reading one bucket at once, each through its own latency proxy and
    ``threads`` reads in flight, ``size`` bytes of each record (None: whole records), nothing
    decoded: aggregate MB/s and reads/s (all the bytes over
    the slowest process's time), and the records read by more than one process (none expected)."""
    import multiprocessing

    barrier = multiprocessing.get_context("spawn").Barrier(count)
    measured = _processes_on_one_bucket(upstream, count, _range_reader_process, remote, split, threads, reads,
                                        size, barrier)
    seconds = max(m["seconds"] for m in measured.values())
    return {"mb_per_s": sum(m["bytes"] for m in measured.values()) / seconds / 1e6,
            "reads_per_s": sum(m["reads"] for m in measured.values()) / seconds,
            "overlap": _shared([set(measured[i]["records"]) for i in range(count)])}


def print_latency(upstream: str, remote: str, args) -> None:
    latency = BUCKET_LATENCY
    print(f"latency hidden (through a proxy: {latency['first_byte_s'] * 1e3:.0f} ms to the first byte, "
          f"{latency['slow_s'] * 1e3:.0f} ms for {latency['slow_fraction']:.0%} of requests), clips/s:")
    print(f"  {'stage':<14} {'workers':>7} {'no latency':>11} {'latency':>9} {'ratio':>6}")
    for r in measure_latency_hidden(upstream, remote, args.split, args.steps, args.warmup):
        print(f"  {r['stage']:<14} {r['workers']:>7} {r['plain']:>11.1f} {r['latency']:>9.1f} "
              f"{r['latency'] / r['plain']:>6.2f}")
    print_reader_processes(upstream, remote, args)


def print_reader_processes(upstream: str, remote: str, args) -> None:
    """1, 2 and 4 processes reading the bucket at once: ranged reads alone, and the whole pipeline."""
    workers = pipeline.REMOTE_WORKERS
    print("reader processes on one bucket at once, each through its own latency proxy, aggregate of all:")
    for size, what in ((None, "whole records"), (SMALL_READ, f"the first {SMALL_READ // 1024} kB of each record")):
        reads = {n: measure_range_reads(upstream, remote, args.split, n, size=size) for n in PROCESS_COUNTS}
        print(f"  ranged reads only ({what}; {READ_THREADS} read in flight per process, {READS_PER_PROCESS} "
              f"reads each, nothing decoded): "
              + ", ".join(f"{n} process{'es' if n > 1 else ''} {r['mb_per_s']:.1f} MB/s ({r['reads_per_s']:.1f} "
                          f"reads/s)" for n, r in reads.items())
              + f" ({reads[PROCESS_COUNTS[-1]]['reads_per_s'] / reads[1]['reads_per_s']:.2f}x)")
    clips = {n: measure_reader_processes(upstream, remote, args.split, n, workers, args.steps, args.warmup)
             for n in PROCESS_COUNTS}
    print(f"  whole pipeline (CPU-bound here: joint shapes, {workers} workers each, each its share of the "
          f"global batch): " + ", ".join(f"{n} process{'es' if n > 1 else ''} {c['clips_per_s']:.1f} clips/s"
                                         for n, c in clips.items())
          + f" ({clips[PROCESS_COUNTS[-1]]['clips_per_s'] / clips[1]['clips_per_s']:.2f}x)")
    last = clips[PROCESS_COUNTS[-1]]
    overlap = last["overlap"] + reads[PROCESS_COUNTS[-1]]["overlap"]
    print(f"  shares: examples per process {last['examples']}, (epoch, track) made by more than one process "
          f"and records read by more than one: {overlap or 'none'}")
    if overlap:
        raise AssertionError(f"reader processes read the same tracks or records: {overlap}")


def main(argv: list[str] | None = None) -> int:
    """Prints the throughput of both stages' batch shapes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", help="a built slakh2100 TFDS data dir")
    parser.add_argument("--slakh_dir", help="a Slakh2100-format directory to build a dataset from")
    parser.add_argument("--split", default="train")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel example builders (default: the pipeline's, 4 local / 16 bucket)")
    parser.add_argument("--gcs_emulator", action="store_true",
                        help="also measure from a GCS emulator on 127.0.0.1 (needs the dev extra)")
    parser.add_argument("--latency", action="store_true",
                        help="with --gcs_emulator: also through a proxy adding a real bucket's latency, for "
                             f"{', '.join(map(str, WORKER_COUNTS))} workers, and 1, 2 and 4 reader processes")
    args = parser.parse_args(argv)
    if not args.data_dir and not args.slakh_dir:
        parser.error("pass --data_dir (built with `python -m data_pipelines.build_slakh`) or --slakh_dir; "
                     "for synthetic data: `python -m data_pipelines.synth_slakh --out /tmp/synth --tracks 4 "
                     "--seconds 40 --splits train=4` then `--slakh_dir /tmp/synth`")
    data_dir = args.data_dir
    if data_dir is None:
        data_dir, b = measure_build(args.slakh_dir, args.split, args.workers or 1)
        print(f"build: {b['audio_seconds']:.0f} s of audio in {b['build_seconds']:.1f} s = "
              f"{b['audio_seconds_per_second']:.1f} audio-s/s; "
              f"{b['bytes_per_audio_hour'] / 1e6:.1f} MB per audio hour")
        print(f"scaled to Slakh2100 ({SLAKH2100_HOURS:.0f} h): {b['slakh2100_gigabytes']:.1f} GB, "
              f"{b['slakh2100_build_hours']:.2f} h to build at this rate")
    from data_pipelines import build_slakh

    build_slakh.write_record_indexes(records_dataset_dir(data_dir))  # a dataset built before the index existed
    print(f"input pipeline ({args.split}), {jax.device_count()} {jax.default_backend()} device(s), "
          f"{args.steps} batches after {args.warmup} warm-up")
    for tracks in (100, 1500):  # windows per track: Slakh2100's mean track (~4 min) at the 30-s hop
        size = index_size(tracks, 12)
        print(f"saved record index of {tracks} tracks x 12 windows, 256 shards: {size / 1e3:.1f} kB "
              f"({size / (tracks * 12):.0f} bytes per window)")
    print(f"local disk: {data_dir}")
    print_data_path(data_dir, args.split, args)
    if args.gcs_emulator:
        import os

        from jointist_jax import storage
        from scripts import gcs_emulator
        from jointist_jax.data import records

        version_dir = records.dataset_dir(data_dir)
        with gcs_emulator.running() as emulator:
            bucket = f"gs://{gcs_emulator.new_bucket('jointist-bench')}"
            remote = f"{bucket}/tfds"
            storage.upload_tree(version_dir, f"{remote}/{os.path.relpath(os.fspath(version_dir), data_dir)}")
            print(f"GCS emulator on 127.0.0.1 (fake-gcs-server): {remote}")
            print_data_path(remote, args.split, args)
            if args.latency:
                print_latency(emulator.url, remote, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
