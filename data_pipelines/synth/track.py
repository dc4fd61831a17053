"""Renders one track into Slakh's layout; the unit of work the worker processes run."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from data_pipelines.synth import compose, layout
from data_pipelines.synth import midi as midi_lib
from data_pipelines.synth.errors import SynthError
from data_pipelines.synth.fluidsynth import RENDER_SAMPLE_RATE, Renderer

# User MIDI files are rendered at full length plus this much, so the last notes can ring out.
RELEASE_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class TrackJob:
    """What to render as track ``number``: a composed song (``seconds``) or a user's MIDI file."""

    number: int
    split: str
    seed: int
    seconds: float | None = None
    midi_path: str | None = None
    max_stems: int = compose.MAX_STEMS  # composed songs only

    @property
    def name(self) -> str:
        return layout.track_name(self.number)


@dataclasses.dataclass(frozen=True)
class TrackResult:
    """What happened to one track: rendered or skipped (already complete), and its length."""

    number: int
    split: str
    seconds: float
    stems: int
    skipped: bool


def render_track(job: TrackJob, out_dir: Path, renderer: Renderer) -> TrackResult:
    """Writes ``out_dir/<split>/TrackNNNNN`` unless it is already there.

    The track is assembled in ``out_dir/.partial/<split>/TrackNNNNN`` (any leftover of an
    interrupted run is deleted first) and renamed into place at the end.

    Raises:
      SynthError: naming the track (and the MIDI file) when rendering fails.
    """
    final = Path(out_dir) / job.split / job.name
    if final.is_dir():
        return _existing(job, final)
    partial = layout.partial_dir(final)
    if partial.exists():
        shutil.rmtree(partial)
    try:
        result = _write_track(job, partial, renderer)
    except BaseException as e:
        # Best effort: a run killed outright leaves the folder, and the next run removes it.
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(e, SynthError):
            raise SynthError(f"{job.split}/{job.name}: {e}") from e
        raise
    final.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(final)
    return result


def _write_track(job: TrackJob, folder: Path, renderer: Renderer) -> TrackResult:
    """Writes every file of the track into ``folder``."""
    (folder / "stems").mkdir(parents=True)
    (folder / "MIDI").mkdir()
    song, extra_meta, uuid_source, num_samples = _song_of(job)
    stems_audio = []
    with tempfile.TemporaryDirectory(prefix="synth_slakh_") as scratch:
        for i, stem in enumerate(song.stems):
            name = layout.stem_name(i)
            (folder / "MIDI" / f"{name}.mid").write_bytes(
                midi_lib.midi_bytes(song, [midi_lib.written_instrument(stem)]))
            # FluidSynth plays a separate file: sounding pitches (the stored bass is an octave
            # up) and a stop at the end of the track.
            render_path = Path(scratch) / f"{name}_sounding.mid"
            render_path.write_bytes(midi_lib.midi_bytes(
                song, [midi_lib.sounding_instrument(stem, stop_at=num_samples / RENDER_SAMPLE_RATE)]))
            stems_audio.append(
                renderer.render(render_path, Path(scratch) / f"{name}.raw", num_samples))
    all_src = midi_lib.midi_bytes(song, [midi_lib.written_instrument(s) for s in song.stems])
    (folder / "all_src.mid").write_bytes(all_src)

    stems_audio = np.stack(stems_audio)
    gain = layout.track_gain(stems_audio)
    stems_q, mix_q = layout.quantise_track(stems_audio, gain)
    for i, samples in enumerate(stems_q):
        layout.write_flac(folder / "stems" / f"{layout.stem_name(i)}.flac", samples, RENDER_SAMPLE_RATE)
    layout.write_flac(folder / "mix.flac", mix_q, RENDER_SAMPLE_RATE)

    layout.write_metadata(folder / "metadata.yaml", {
        "UUID": hashlib.md5(uuid_source or all_src).hexdigest(),
        "audio_dir": "stems",
        "midi_dir": "MIDI",
        "normalized": True,
        "overall_gain": float(gain),
        "target_peak": layout.TARGET_PEAK_DBFS,
        "sample_rate": RENDER_SAMPLE_RATE,
        "stems": {layout.stem_name(i): layout.stem_metadata(s.program_num, renderer.plugin_name)
                  for i, s in enumerate(song.stems)},
        **extra_meta,
    })
    return TrackResult(job.number, job.split, num_samples / RENDER_SAMPLE_RATE, len(song.stems), False)


def _song_of(job: TrackJob):
    """(stems, extra metadata, bytes whose MD5 is the UUID or None, length in samples)."""
    if job.midi_path is not None:
        path = Path(job.midi_path)
        song = midi_lib.load_midi_file(path)
        seconds = song.end_time + RELEASE_SECONDS
        # Like Slakh, whose UUID is the Lakh MIDI file's MD5, name the track by its source file.
        return (song, {"source_midi": str(path)}, path.read_bytes(),
                math.ceil(seconds * RENDER_SAMPLE_RATE))
    if job.seconds is None:
        raise ValueError(f"{job}: a track needs either seconds or midi_path")
    composed = compose.compose_song(job.seed, job.number, job.seconds, job.max_stems)
    extra = {"composition": {"seed": job.seed, "tempo": composed.tempo,
                             "key": f"{composed.key} {composed.mode}",
                             "progression_degrees": [d + 1 for d in composed.progression]}}
    return (midi_lib.song_to_midi(composed), extra, None, round(job.seconds * RENDER_SAMPLE_RATE))


def _existing(job: TrackJob, final: Path) -> TrackResult:
    """Describes a track a previous run completed, from its files."""
    info = sf.info(str(final / "mix.flac"))
    stems = len(list((final / "stems").glob("S*.flac")))
    return TrackResult(job.number, job.split, info.frames / info.samplerate, stems, True)
