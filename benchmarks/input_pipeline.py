"""Data-path throughput: TFRecord build speed and size, and input-pipeline clips/s and rows/s.

    python benchmarks/input_pipeline.py --data_dir DATA           # a built slakh2100 dataset
    python benchmarks/input_pipeline.py --slakh_dir SLAKH         # builds one into a temp dir first

With ``--slakh_dir`` it first measures the build: seconds of audio packed per second, bytes per
hour of audio, and both scaled to the 145 hours of Slakh2100. Then it measures, after a warm-up,
the pipeline of ``jointist_jax.data.pipeline`` producing global batches (rolls, sources and all) for
  * the joint transcription+separation stage: 2 clips x 3 positive rows;
  * the transcription stage: 2 clips x (2 positive + 2 negative) rows.
One function per measurement; each returns a dict of numbers, printed by ``main``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from jointist_jax import xla_flags

xla_flags.apply_cpu_flags()

import jax  # noqa: E402  (after the XLA flags)

from jointist_jax.data import pipeline  # noqa: E402


def measure_pipeline(data_dir: str, split: str, *, clips: int, num_positive: int, num_negative: int,
                     steps: int, warmup: int, workers: int, clip_seconds: float = 10.0,
                     seed: int = 0) -> dict[str, float]:
    """Batches per second of one stage's shapes, after ``warmup`` batches; clips/s and rows/s."""
    rows = clips * max(num_positive + num_negative, 1)
    with pipeline.make_train_iterator(data_dir, split, global_batch=clips, num_positive=num_positive,
                                      num_negative=num_negative, seed=seed, clip_seconds=clip_seconds,
                                      num_workers=workers) as pipe:
        batches = iter(pipe)
        for _ in range(warmup):
            jax.block_until_ready(next(batches))
        start = time.perf_counter()
        for _ in range(steps):
            jax.block_until_ready(next(batches))
        elapsed = time.perf_counter() - start
    return {"clips_per_s": steps * clips / elapsed, "rows_per_s": steps * rows / elapsed,
            "ms_per_batch": 1000 * elapsed / steps}


def measure_joint_stage(data_dir: str, split: str, steps: int, warmup: int, workers: int) -> dict[str, float]:
    """Joint T+S stage: 2 clips x 3 positives (REFERENCE §3.4)."""
    return measure_pipeline(data_dir, split, clips=2, num_positive=3, num_negative=0, steps=steps,
                            warmup=warmup, workers=workers)


def measure_transcription_stage(data_dir: str, split: str, steps: int, warmup: int,
                                workers: int) -> dict[str, float]:
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


def main(argv: list[str] | None = None) -> int:
    """Prints the throughput of both stages' batch shapes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", help="a built slakh2100 TFDS data dir")
    parser.add_argument("--slakh_dir", help="a Slakh2100-format directory to build a dataset from")
    parser.add_argument("--split", default="train")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4, help="parallel example builders")
    args = parser.parse_args(argv)
    if not args.data_dir and not args.slakh_dir:
        parser.error("pass --data_dir (built with `python -m data_pipelines.build_slakh`) or --slakh_dir; "
                     "for synthetic data: `python -m data_pipelines.synth_slakh --out /tmp/synth --tracks 4 "
                     "--seconds 40 --splits train=4` then `--slakh_dir /tmp/synth`")
    data_dir = args.data_dir
    if data_dir is None:
        data_dir, b = measure_build(args.slakh_dir, args.split, args.workers)
        print(f"build: {b['audio_seconds']:.0f} s of audio in {b['build_seconds']:.1f} s = "
              f"{b['audio_seconds_per_second']:.1f} audio-s/s with {args.workers} workers; "
              f"{b['bytes_per_audio_hour'] / 1e6:.1f} MB per audio hour")
        print(f"scaled to Slakh2100 ({SLAKH2100_HOURS:.0f} h): {b['slakh2100_gigabytes']:.1f} GB, "
              f"{b['slakh2100_build_hours']:.2f} h to build at this rate")
    print(f"input pipeline on {data_dir} ({args.split}), {jax.device_count()} {jax.default_backend()} "
          f"device(s), {args.workers} workers, {args.steps} batches after {args.warmup} warm-up")
    for name, fn in (("joint (2 clips x 3 pos)", measure_joint_stage),
                     ("transcription (2 x (2+2))", measure_transcription_stage)):
        r = fn(data_dir, args.split, args.steps, args.warmup, args.workers)
        print(f"{name:<28} {r['clips_per_s']:8.1f} clips/s {r['rows_per_s']:8.1f} rows/s "
              f"{r['ms_per_batch']:8.1f} ms/batch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
