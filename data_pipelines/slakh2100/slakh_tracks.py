"""Reads one Slakh2100 track directory into class-level stems and labelled notes.

A track directory holds ``mix.flac``, ``stems/Sxx.flac``, ``MIDI/Sxx.mid``, ``all_src.mid``
(never used) and ``metadata.yaml`` (``stems: {Sxx: {program_num, is_drum, plugin_name,
midi_saved, audio_rendered, ...}}``). Both the original split layout and ``slakh2100_flac_redux``
(whose extra ``omitted`` folder is ignored) are read the same way.

Labels (docs/deviations.md 11, docs/reference.md §4.2):
  * notes come from the per-stem MIDI files only; a stem with ``midi_saved: false`` is skipped
    entirely: it has no notes, and its audio is not a class stem either (the reference packs
    only stems with ``midi_saved and audio_rendered``);
  * the class comes from the metadata ``program_num`` through
    :func:`jointist_jax.instruments.class_of_program`; a drum stem
    (:func:`~jointist_jax.instruments.is_drum_stem`: a Slakh drum-kit plugin or program 128) is
    class ``Drums`` and keeps only pitches 24-90, unshifted (the reference's duplicate-event bug
    for other drum pitches is fixed: those notes are simply dropped);
  * other stems drop notes with pitch >= 109, and notes of a MIDI file whose own program is a
    bass (32-39) are shifted down 12 semitones; velocity is kept;
  * note times are quantised to 2**-15 s (see ``jointist_jax/data/packing.py``), notes starting after the end of
    the mix audio are dropped (one starting exactly at the end is kept, as in the reference: its
    onset falls on the last spectrogram frame), and notes are sorted by (onset, class, pitch,
    offset, velocity).

Audio: every FLAC is mixed down to mono (channel mean) and resampled to the target rate with
``scipy.signal.resample_poly`` (polyphase, Kaiser window; 44.1 kHz -> 16 kHz is up 160 / down 441).
The reference used torchaudio's sinc-Hann resampler; the two agree up to the filter's
transition band just below 8 kHz. A stem is a class stem only if ``midi_saved`` and
``audio_rendered`` are true; stems of one class are summed in float32 (docs/deviations.md 17) and stored
as ``int16(clip(round(x * 32767), -32768, 32767))``. A class without any labelled note (every
stem of it note-less after the label filters, e.g. a MIDI track without a note over silent
audio) gets no class stem: it is neither a label nor a separation target (docs/deviations.md 33). Stems are cut or zero-padded to the mix
length; a stem more than :data:`MAX_LENGTH_MISMATCH_SECONDS` longer or shorter than the mix
means a broken track.

Bad input -- never a silent wrong example:
  * missing or unparsable ``metadata.yaml``, or a stem entry without a valid ``program_num``,
    ``midi_saved`` or ``audio_rendered`` -> :class:`SlakhFormatError` naming the file and field
    (the build stops: the directory is not Slakh);
  * a MIDI file with several instruments -> :class:`SlakhFormatError` naming the track and file
    (the build stops, as in the reference);
  * missing or unreadable ``mix.flac``, a missing or unreadable stem FLAC although
    ``audio_rendered: true``, a missing or unreadable MIDI file although ``midi_saved: true``,
    a stem whose length is far from the mix's, audio shorter than one clip, or a track without
    any note -> :class:`TrackSkipped` with the reason; the builder logs it, skips the track and
    counts it in the build summary.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import numpy as np
import pretty_midi
import scipy.signal
import soundfile
import yaml

from jointist_jax import instruments, music, storage
from jointist_jax.data import packing

SPLITS = ("train", "validation", "test")
IGNORED_SPLITS = ("omitted",)  # slakh2100_flac_redux keeps its removed duplicates here
DRUM_PITCH_RANGE = (24, 90)  # inclusive, docs/reference.md §4.2
MAX_PITCH_EXCLUSIVE = 109
MAX_LENGTH_MISMATCH_SECONDS = 1.0
DRUMS_CLASS = instruments.class_of_program(instruments.DRUMS_PROGRAM)


class SlakhFormatError(ValueError):
    """The directory does not follow the Slakh2100 layout; the build must stop."""


class TrackSkipped(Exception):
    """One track cannot give a correct example; it is skipped with :attr:`reason`."""

    def __init__(self, track_id: str, reason: str):
        # Both go to args so the exception pickles back from a worker process.
        super().__init__(track_id, reason)
        self.track_id = track_id
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.track_id}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class StemInfo:
    """One ``stems`` entry of ``metadata.yaml``."""

    stem_id: str
    program_num: int
    plugin_name: str
    midi_saved: bool
    audio_rendered: bool

    @property
    def is_drum(self) -> bool:
        return instruments.is_drum_stem(self.plugin_name, self.program_num)

    @property
    def class_index(self) -> int:
        return DRUMS_CLASS if self.is_drum else instruments.class_of_program(self.program_num)


@dataclasses.dataclass
class Track:
    """One track at the target rate: int16 mix [N], class stems [C, N] and note arrays."""

    track_id: str
    mix: np.ndarray
    stem_classes: np.ndarray
    stems: np.ndarray
    notes: dict[str, np.ndarray]

    @property
    def num_samples(self) -> int:
        return int(self.mix.shape[0])

    @property
    def track_classes(self) -> np.ndarray:
        return np.unique(self.notes["note_class"]).astype(np.int32)


def find_splits(slakh_dir: str | os.PathLike) -> dict[str, list[str]]:
    """Sorted track directories of each split folder present in ``slakh_dir``.

    Raises:
      SlakhFormatError: if ``slakh_dir`` has none of the split folders train/validation/test.
    """
    root = storage.path(slakh_dir)
    slakh_dir = os.fspath(slakh_dir)
    found = {}
    for split in SPLITS:
        split_dir = root / split
        if split_dir.is_dir():
            found[split] = sorted(os.fspath(p) for p in split_dir.iterdir() if p.is_dir())
    if not found:
        raise SlakhFormatError(
            f"{slakh_dir}: no Slakh2100 split folder; expected at least one of "
            f"{', '.join(SPLITS)} (each holding TrackNNNNN/ folders; "
            f"{', '.join(IGNORED_SPLITS)} is ignored)")
    return found


def read_metadata(track_dir: str) -> list[StemInfo]:
    """Parses ``metadata.yaml`` of one track into its stems, sorted by stem id.

    Raises:
      SlakhFormatError: naming the file and the field, if it is missing or malformed.
    """
    path = os.fspath(storage.path(track_dir) / "metadata.yaml")
    try:
        meta = yaml.safe_load(storage.path(path).read_bytes())
    except OSError as e:
        raise SlakhFormatError(f"{path}: cannot read the track metadata ({e})") from e
    except yaml.YAMLError as e:
        raise SlakhFormatError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("stems"), dict):
        raise SlakhFormatError(f"{path}: expected a mapping with a 'stems' mapping")
    return [_stem_info(path, str(stem_id), entry)
            for stem_id, entry in sorted(meta["stems"].items(), key=lambda kv: str(kv[0]))]


def _stem_info(path: str, stem_id: str, entry: Any) -> StemInfo:
    if not isinstance(entry, dict):
        raise SlakhFormatError(f"{path}: stems.{stem_id} must be a mapping")
    program = entry.get("program_num")
    if isinstance(program, bool) or not isinstance(program, int) or not 0 <= program <= 128:
        raise SlakhFormatError(f"{path}: stems.{stem_id}.program_num must be an integer 0..128, "
                               f"got {program!r}")
    flags = {}
    for field in ("midi_saved", "audio_rendered"):
        if not isinstance(entry.get(field), bool):
            raise SlakhFormatError(f"{path}: stems.{stem_id}.{field} must be true or false, "
                                   f"got {entry.get(field)!r}")
        flags[field] = entry[field]
    plugin = entry.get("plugin_name") or ""
    if not isinstance(plugin, str):
        raise SlakhFormatError(f"{path}: stems.{stem_id}.plugin_name must be a string")
    return StemInfo(stem_id=stem_id, program_num=program,
                    plugin_name=os.path.splitext(os.path.basename(plugin))[0], **flags)


def read_stem_notes(midi_path: str, stem: StemInfo, track_id: str) -> dict[str, np.ndarray]:
    """Label notes of one stem's MIDI file (class, pitch, velocity, onset, offset in s).

    Raises:
      TrackSkipped: if the file is missing or unreadable.
      SlakhFormatError: if it holds more than one instrument.
    """
    try:
        midi = pretty_midi.PrettyMIDI(storage.source(midi_path))
    except Exception as e:  # pretty_midi/mido raise many types for corrupt files
        raise TrackSkipped(track_id, f"MIDI file {midi_path} is missing or unreadable "
                                     f"({type(e).__name__}: {e}) although midi_saved is true")
    if len(midi.instruments) > 1:
        raise SlakhFormatError(f"{track_id}: {midi_path} holds {len(midi.instruments)} "
                               f"instruments; a Slakh stem MIDI file must hold one")
    rows = []
    for instrument in midi.instruments:
        shift = (instruments.BASS_OCTAVE_SHIFT
                 if not stem.is_drum and instrument.program in instruments.BASS_PROGRAMS else 0)
        for note in instrument.notes:
            if stem.is_drum:
                if not DRUM_PITCH_RANGE[0] <= note.pitch <= DRUM_PITCH_RANGE[1]:
                    continue
            elif note.pitch >= MAX_PITCH_EXCLUSIVE:
                continue
            rows.append((note.pitch + shift, note.velocity, note.start, note.end))
    table = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    return {
        "note_class": np.full(len(rows), stem.class_index, np.int32),
        "note_pitch": table[:, 0].astype(np.int32),
        "note_velocity": table[:, 1].astype(np.int32),
        "note_onset": table[:, 2],
        "note_offset": table[:, 3],
    }


def sort_notes(notes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Notes sorted by (onset, class, pitch, offset, velocity) -- a total, reproducible order."""
    order = np.lexsort((notes["note_velocity"], notes["note_offset"], notes["note_pitch"],
                        notes["note_class"], notes["note_onset"]))
    return {name: values[order] for name, values in notes.items()}


def read_audio(path: str, sample_rate: int, track_id: str, what: str) -> np.ndarray:
    """Mono float32 audio of one FLAC resampled to ``sample_rate``.

    Raises:
      TrackSkipped: if the file is missing or unreadable.
    """
    try:
        data, file_rate = soundfile.read(storage.source(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError or OSError
        raise TrackSkipped(track_id, f"{what} {path} is missing or unreadable "
                                     f"({type(e).__name__}: {e})")
    return resample(data.mean(axis=1), file_rate, sample_rate)


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling (``scipy.signal.resample_poly``) as float32."""
    if from_rate == to_rate:
        return x.astype(np.float32)
    g = math.gcd(int(from_rate), int(to_rate))
    return scipy.signal.resample_poly(x, to_rate // g, from_rate // g).astype(np.float32)


def to_int16(x: np.ndarray) -> np.ndarray:
    """``int16(clip(round(x * 32767), -32768, 32767))``: clips instead of overflowing."""
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def _fit_length(x: np.ndarray, n: int, sample_rate: int, track_id: str, what: str) -> np.ndarray:
    if abs(x.shape[0] - n) > MAX_LENGTH_MISMATCH_SECONDS * sample_rate:
        raise TrackSkipped(track_id, f"{what} has {x.shape[0] / sample_rate:.2f} s of audio but "
                                     f"the mix has {n / sample_rate:.2f} s")
    if x.shape[0] >= n:
        return x[:n]
    return np.pad(x, (0, n - x.shape[0]))


def load_track(track_dir: str, sample_rate: int = music.SAMPLE_RATE, clip_samples: int = 160000) -> Track:
    """Reads one track directory into a :class:`Track` (module docstring: rules and errors).

    Raises:
      SlakhFormatError: malformed metadata or a multi-instrument MIDI file.
      TrackSkipped: a track that cannot give a correct example, with the reason.
    """
    folder = storage.path(track_dir)
    track_id = folder.name
    stems = read_metadata(track_dir)
    mix = read_audio(os.fspath(folder / "mix.flac"), sample_rate, track_id, "mix")
    n = mix.shape[0]
    if n < clip_samples:
        raise TrackSkipped(track_id, f"audio is {n / sample_rate:.2f} s long, shorter than one "
                                     f"{clip_samples / sample_rate:g}-s clip")

    note_parts = []
    class_audio: dict[int, np.ndarray] = {}
    for stem in stems:
        if not stem.midi_saved:
            continue
        note_parts.append(read_stem_notes(os.fspath(folder / "MIDI" / f"{stem.stem_id}.mid"),
                                          stem, track_id))
        if stem.audio_rendered:
            audio = read_audio(os.fspath(folder / "stems" / f"{stem.stem_id}.flac"),
                               sample_rate, track_id, f"stem {stem.stem_id}")
            audio = _fit_length(audio, n, sample_rate, track_id, f"stem {stem.stem_id}")
            if stem.class_index in class_audio:
                class_audio[stem.class_index] += audio  # float32 sum (docs/deviations.md 17)
            else:
                class_audio[stem.class_index] = audio

    notes = _concat_notes(note_parts)
    notes["note_onset"] = packing.quantize_times(notes["note_onset"])
    notes["note_offset"] = packing.quantize_times(notes["note_offset"])
    audible = notes["note_onset"] <= n / sample_rate
    notes = sort_notes({name: values[audible] for name, values in notes.items()})
    if notes["note_onset"].size == 0:
        raise TrackSkipped(track_id, "no notes (no MIDI note inside the audio after the label "
                                     "filters)")

    # A class with no labelled note is not in the track (its stems play nothing we label, e.g. an
    # empty MIDI track over silence): no label, and no class stem either (docs/deviations.md 33).
    labelled = set(notes["note_class"].tolist())
    stem_classes = np.asarray(sorted(c for c in class_audio if c in labelled), dtype=np.int32)
    stem_audio = (np.stack([to_int16(class_audio[c]) for c in stem_classes]) if class_audio
                  else np.zeros((0, n), np.int16))
    return Track(track_id=track_id, mix=to_int16(mix), stem_classes=stem_classes,
                 stems=stem_audio, notes=notes)


def load_track_or_skip(track_dir: str, sample_rate: int = music.SAMPLE_RATE,
                       clip_samples: int = 160000) -> Track | TrackSkipped:
    """:func:`load_track`, returning (not raising) :class:`TrackSkipped` -- for worker pools."""
    try:
        return load_track(track_dir, sample_rate, clip_samples)
    except TrackSkipped as skipped:
        return skipped


def _concat_notes(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not parts:
        return {name: np.zeros(0, np.float64 if name in ("note_onset", "note_offset") else np.int32)
                for name in packing.NOTE_FIELDS}
    return {name: np.concatenate([p[name] for p in parts]) for name in packing.NOTE_FIELDS}
