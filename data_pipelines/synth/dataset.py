"""Renders a whole synthetic Slakh-format dataset: planning, resuming, parallel workers, summary."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import yaml

from data_pipelines.synth import compose, layout, plan
from data_pipelines.synth import midi as midi_lib
from data_pipelines.synth.errors import SynthError
from data_pipelines.synth.fluidsynth import make_renderer
from data_pipelines.synth.track import TrackResult, render_track

# Written at the top of the output folder; a re-run must use the same arguments to resume.
RECORD_FILE = "synth_slakh.yaml"
RECORD_VERSION = 1


def default_workers() -> int:
    """min(4, number of CPUs)."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclasses.dataclass(frozen=True)
class Options:
    """The renderer's arguments (see ``python -m data_pipelines.synth_slakh --help``)."""

    out: Path
    tracks: int | None = None
    seconds: float | None = None
    seed: int = 0
    midi_dir: Path | None = None
    soundfont: str | None = None
    splits: str = plan.DEFAULT_SPLITS
    workers: int = dataclasses.field(default_factory=default_workers)
    max_stems: int = compose.MAX_STEMS


@dataclasses.dataclass(frozen=True)
class Summary:
    """What a run produced."""

    out: Path
    tracks_per_split: dict[str, int]
    total_seconds: float
    rendered: int
    skipped: int
    elapsed_seconds: float

    def line(self) -> str:
        """The one-line summary printed at the end of a run."""
        splits = ", ".join(f"{s} {n}" for s, n in self.tracks_per_split.items())
        return (f"synth-slakh: {sum(self.tracks_per_split.values())} tracks in {self.out} "
                f"({splits}); {self.total_seconds:.1f} s of audio; {self.rendered} rendered, "
                f"{self.skipped} already complete; took {self.elapsed_seconds:.1f} s")


def synthesize(options: Options, log: Callable[[str], None] = print) -> Summary:
    """Renders (or completes) the dataset described by ``options``.

    Raises:
      SynthError: for bad options, a missing FluidSynth or soundfont, unreadable MIDI input, an
        output folder rendered with other arguments, or a failed render.
    """
    start = time.perf_counter()
    if options.workers < 1:
        raise SynthError(f"--workers must be at least 1, got {options.workers}")
    renderer = make_renderer(options.soundfont)
    counts, jobs = _plan_jobs(options, log)

    out = Path(options.out)
    _check_record(out, _record(options, counts, renderer.soundfont))
    for path in layout.remove_partial_tracks(out):
        log(f"removed the unfinished track {path} of an interrupted run")

    results = _run(jobs, out, renderer, options.workers, log)
    # Every track is in place now; drop the emptied scratch folders.
    shutil.rmtree(out / layout.PARTIAL_DIR, ignore_errors=True)
    summary = Summary(
        out=out,
        tracks_per_split={s: counts[s] for s in layout.SPLITS},
        total_seconds=sum(r.seconds for r in results),
        rendered=sum(not r.skipped for r in results),
        skipped=sum(r.skipped for r in results),
        elapsed_seconds=time.perf_counter() - start)
    log(summary.line())
    return summary


def _plan_jobs(options: Options, log) -> tuple[dict[str, int], list]:
    """Tracks per split and the job of every track, from the options."""
    splits = plan.parse_splits(options.splits)
    if options.tracks is not None and options.tracks < 1:
        raise SynthError(f"--tracks must be at least 1, got {options.tracks}")
    if options.midi_dir is None:
        if options.seconds is None:
            raise SynthError("--seconds is required when songs are composed (no --midi_dir)")
        if not options.seconds >= compose.MIN_SECONDS:
            raise SynthError(f"--seconds must be at least {compose.MIN_SECONDS}, got "
                             f"{options.seconds}")
        if not compose.MIN_CORE_STEMS <= options.max_stems <= compose.MAX_STEMS:
            raise SynthError(f"--max_stems must be in {compose.MIN_CORE_STEMS}..{compose.MAX_STEMS}, got "
                             f"{options.max_stems}")
        counts = plan.split_counts(splits, options.tracks)
        jobs = plan.composed_jobs(counts, options.seconds, options.seed, options.max_stems)
    else:
        if options.seconds is not None:
            log("note: --seconds is ignored with --midi_dir; MIDI files are rendered at full "
                "length")
        files = midi_lib.list_midi_files(Path(options.midi_dir))
        total = options.tracks
        if total is None and not all(isinstance(v, int) for v in splits.values()):
            total = len(files)  # fractions of all the files
        counts = plan.split_counts(splits, total)
        jobs = plan.midi_jobs(files, counts, options.seed)
    if not jobs:
        raise SynthError("--splits gives no tracks to render")
    return counts, jobs


def _record(options: Options, counts: dict[str, int], soundfont: Path) -> dict:
    record = {
        "version": RECORD_VERSION,
        "seed": options.seed,
        "seconds": None if options.midi_dir is not None else float(options.seconds),
        "midi_dir": None if options.midi_dir is None else str(Path(options.midi_dir).resolve()),
        "soundfont": str(soundfont),
        "tracks_per_split": dict(counts),
    }
    if options.midi_dir is None and options.max_stems != compose.MAX_STEMS:
        # Only when set, so folders rendered before the option existed still resume.
        record["max_stems"] = options.max_stems
    return record


def _check_record(out: Path, record: dict) -> None:
    """Writes the run's arguments, or checks them against those of the run that started ``out``.

    Resuming with other arguments would silently mix two datasets in one folder.
    """
    path = out / RECORD_FILE
    if path.exists():
        previous = yaml.safe_load(path.read_text())
        if previous != record:
            diffs = [f"{k}: {previous.get(k) if isinstance(previous, dict) else None!r} -> {v!r}"
                     for k, v in record.items()
                     if not isinstance(previous, dict) or previous.get(k) != v]
            raise SynthError(f"{out} was rendered with other arguments ({'; '.join(diffs)}); "
                             "use the same arguments to resume, or another --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(record, sort_keys=True))


def _run(jobs, out: Path, renderer, workers: int, log) -> list[TrackResult]:
    results = []

    def report(result: TrackResult) -> None:
        results.append(result)
        state = "already complete" if result.skipped else "rendered"
        log(f"[{len(results)}/{len(jobs)}] {result.split}/{layout.track_name(result.number)}: "
            f"{result.stems} stems, {result.seconds:.1f} s, {state}")

    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            report(render_track(job, out, renderer))
        return results
    # "spawn": forking a process that may hold JAX/XLA threads (tests, notebooks) can deadlock.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(jobs)),
                                                mp_context=context) as pool:
        futures = [pool.submit(render_track, job, out, renderer) for job in jobs]
        try:
            for future in concurrent.futures.as_completed(futures):
                report(future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return results
