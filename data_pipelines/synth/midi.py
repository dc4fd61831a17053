"""MIDI for the synthetic dataset: stems from composed songs or user files, and Slakh's MIDI files.

A :class:`Stem` holds one ``pretty_midi.Instrument`` at *sounding* pitch: what FluidSynth must
play. Slakh writes bass stems (GM programs 32-39) one octave above what its audio sounds: its
Kontakt bass patches play an octave below General MIDI (as reported in the ethman/slakh-generation repository), and
the Jointist loader undoes that by shifting bass labels down 12 semitones (docs/reference.md §4.2,
docs/deviations.md 11). We keep that convention so the builder's labels match our audio: the stored
``MIDI/Sxx.mid`` and ``all_src.mid`` hold bass notes at sounding pitch + 12
(``-BASS_OCTAVE_SHIFT``), while FluidSynth, which plays GM pitch as written, renders the sounding
notes.

User MIDI files follow General MIDI, so their notes are taken as sounding pitches.
"""

from __future__ import annotations

import copy
import dataclasses
import io
from pathlib import Path

import pretty_midi

from jointist_jax import instruments

from data_pipelines.synth.compose import Song
from data_pipelines.synth.errors import SynthError

MIDI_SUFFIXES = (".mid", ".midi")
# Ticks per quarter note of the files we write: 960 keeps note times within ~1 ms at any tempo.
RESOLUTION = 960
ALL_SOUND_OFF = 120  # MIDI controller number


@dataclasses.dataclass
class Stem:
    """One instrument track: Slakh ``program_num`` (0-127, 128 for drums) and sounding notes."""

    program_num: int
    instrument: pretty_midi.Instrument

    @property
    def is_drum(self) -> bool:
        return self.program_num == instruments.DRUMS_PROGRAM

    @property
    def is_bass(self) -> bool:
        return not self.is_drum and self.program_num in instruments.BASS_PROGRAMS


@dataclasses.dataclass
class MidiSong:
    """The stems of one track plus the tempo and signatures to write into its MIDI files."""

    stems: list[Stem]
    tempo: float
    time_signatures: list[pretty_midi.TimeSignature]
    key_signatures: list[pretty_midi.KeySignature]

    @property
    def end_time(self) -> float:
        return max(s.instrument.get_end_time() for s in self.stems)


def song_to_midi(song: Song) -> MidiSong:
    """The stems of a composed song, in 4/4 and its key."""
    stems = []
    for part in song.parts:
        inst = pretty_midi.Instrument(program=0 if part.is_drum else part.program,
                                      is_drum=part.is_drum,
                                      name=instruments.gm_instrument_name(part.program))
        inst.notes = [pretty_midi.Note(n.velocity, n.pitch, n.start, n.end) for n in part.notes]
        stems.append(Stem(part.program, inst))
    key_number = pretty_midi.key_name_to_key_number(
        f"{song.key} {'Major' if song.mode == 'major' else 'minor'}")
    return MidiSong(stems, song.tempo, [pretty_midi.TimeSignature(4, 4, 0.0)],
                    [pretty_midi.KeySignature(key_number, 0.0)])


def list_midi_files(midi_dir: Path) -> list[Path]:
    """All ``*.mid`` / ``*.midi`` files under ``midi_dir`` (recursively), sorted.

    Hidden files (``.DS_Store`` and the like) are ignored.

    Raises:
      SynthError: if the folder does not exist, holds a file that is not MIDI, or holds none.
    """
    if not midi_dir.is_dir():
        raise SynthError(f"--midi_dir {midi_dir} is not a directory")
    files = []
    for path in sorted(midi_dir.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(midi_dir).parts) or path.is_dir():
            continue
        if path.suffix.lower() not in MIDI_SUFFIXES:
            raise SynthError(f"{path} in --midi_dir is not a MIDI file (expected only *.mid or "
                             "*.midi files); move it out of the folder")
        files.append(path)
    if not files:
        raise SynthError(f"no MIDI files (*.mid, *.midi) found in --midi_dir {midi_dir}")
    return files


def load_midi_file(path: Path) -> MidiSong:
    """One stem per ``pretty_midi`` instrument (with notes) of a user's MIDI file, full length.

    Raises:
      SynthError: naming the file, if it cannot be parsed or has no notes.
    """
    try:
        pm = pretty_midi.PrettyMIDI(str(path))
    except Exception as e:  # pretty_midi/mido raise many types for malformed files
        raise SynthError(f"{path} could not be read as a MIDI file: {type(e).__name__}: {e}") from e
    stems = []
    for inst in pm.instruments:
        if not inst.notes:
            continue
        program_num = instruments.DRUMS_PROGRAM if inst.is_drum else int(inst.program)
        stem_inst = pretty_midi.Instrument(program=inst.program, is_drum=inst.is_drum,
                                           name=inst.name)
        stem_inst.notes = sorted(copy.deepcopy(inst.notes), key=lambda n: (n.start, n.pitch))
        stem_inst.pitch_bends = copy.deepcopy(inst.pitch_bends)
        stem_inst.control_changes = copy.deepcopy(inst.control_changes)
        stems.append(Stem(program_num, stem_inst))
    if not stems:
        raise SynthError(f"{path} has no notes to render")
    _, tempi = pm.get_tempo_changes()
    tempo = float(tempi[0]) if len(tempi) else 120.0
    return MidiSong(stems, tempo, list(pm.time_signature_changes), list(pm.key_signature_changes))


def written_instrument(stem: Stem) -> pretty_midi.Instrument:
    """The stem as stored in Slakh's MIDI files: bass one octave above its sounding pitch.

    Bass notes that would leave the MIDI range (above 127 once shifted) are dropped; no bass
    instrument plays that high, and :func:`sounding_instrument` drops them too, so the audio and
    the files stay consistent.
    """
    inst = copy.deepcopy(stem.instrument)
    if stem.is_bass:
        shift = -instruments.BASS_OCTAVE_SHIFT
        inst.notes = [pretty_midi.Note(n.velocity, n.pitch + shift, n.start, n.end)
                      for n in inst.notes if n.pitch + shift <= 127]
    return inst


def sounding_instrument(stem: Stem, stop_at: float | None = None) -> pretty_midi.Instrument:
    """The stem as FluidSynth must play it (General MIDI: sounding pitch as written).

    With ``stop_at``, an All Sound Off controller at that time silences every voice: FluidSynth's
    file rendering otherwise runs on until the last release and reverb tail has died away, which
    for a short song costs more time than the song itself, only to be cut off afterwards.
    """
    inst = copy.deepcopy(stem.instrument)
    if stem.is_bass:
        inst.notes = [n for n in inst.notes if n.pitch - instruments.BASS_OCTAVE_SHIFT <= 127]
    if stop_at is not None:
        inst.control_changes.append(pretty_midi.ControlChange(ALL_SOUND_OFF, 0, stop_at))
    return inst


def midi_bytes(song: MidiSong, insts: list[pretty_midi.Instrument]) -> bytes:
    """A standard MIDI file holding ``insts`` with the song's tempo and signatures."""
    pm = pretty_midi.PrettyMIDI(resolution=RESOLUTION, initial_tempo=song.tempo)
    pm.time_signature_changes = list(song.time_signatures)
    pm.key_signature_changes = list(song.key_signatures)
    pm.instruments = list(insts)
    buffer = io.BytesIO()
    pm.write(buffer)
    return buffer.getvalue()
