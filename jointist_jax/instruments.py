"""The Jointist instrument taxonomy: 39 classes plus ``Empty`` (docs/reference.md §5, docs/deviations.md 1).

The tables are read from ``resources/instruments.tsv`` (class index, name, GM programs, output
MIDI program and drum flag, Slakh occurrence count) and ``resources/gm_program_to_class.tsv``
(GM program 0-127 plus 128 for drums -> class name).

Class *indices* are what the FiLM condition one-hot and the recognizer outputs use; the
condition vector has ``CONDITION_SIZE = 40`` entries, the last one being ``Empty``, which is
never a positive label. The recognizer has ``NUM_CLASSES = 39`` outputs.

Name lookup (:func:`class_index`) is case-insensitive, ignores ``_``/``-``/extra spaces, and
accepts the class names, the 128 General MIDI instrument names, and these aliases:

=================  ===================
alias              class
=================  ===================
drums, drum, kit   Drums
piano              Piano
bass               Bass
guitar             Electric Guitar
electric piano     Electric Piano
keys               Electric Piano
acoustic guitar    Acoustic Guitar
strings            Strings
vocals, vocal      Voice
sax                Saxophone
synth              Synth Lead
pad                Synth Pad
=================  ===================
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.resources
import re
from typing import Iterable, Sequence

import numpy as np

NUM_CLASSES = 39
CONDITION_SIZE = 40
EMPTY_INDEX = 39
DRUMS_PROGRAM = 128
BASS_PROGRAMS = range(32, 40)
BASS_OCTAVE_SHIFT = -12

# Slakh's drum plugins (docs/reference.md §4.2): a stem rendered by one of these is a drum stem,
# whatever its metadata says.
DRUM_PLUGIN_NAMES = frozenset({
    "ar_modern_sparkle_kit_full",
    "ar_modern_white_kit_full",
    "funk_kit",
    "garage_kit_lite",
    "pop_kit",
    "session_kit_full",
    "stadium_kit_full",
    "street_knowledge_kit",
})

ALIASES = {
    "drums": "Drums",
    "drum": "Drums",
    "kit": "Drums",
    "piano": "Piano",
    "bass": "Bass",
    "guitar": "Electric Guitar",
    "electric piano": "Electric Piano",
    "keys": "Electric Piano",
    "acoustic guitar": "Acoustic Guitar",
    "strings": "Strings",
    "vocals": "Voice",
    "vocal": "Voice",
    "sax": "Saxophone",
    "synth": "Synth Lead",
    "pad": "Synth Pad",
}


class UnknownInstrumentError(ValueError):
    """Raised for an instrument name that is neither a class, a GM name nor an alias."""


@dataclasses.dataclass(frozen=True)
class InstrumentClass:
    """One row of ``instruments.tsv``."""

    index: int
    name: str
    gm_programs: tuple[int, ...]
    output_program: int | None
    output_is_drum: bool
    slakh_occurrence: float


def _read_tsv(filename: str) -> list[dict[str, str]]:
    text = importlib.resources.files("jointist_jax").joinpath("resources", filename).read_text()
    return list(csv.DictReader(text.splitlines(), delimiter="\t"))


def _parse_programs(field: str) -> tuple[int, ...]:
    if field.strip() == "-":
        return ()
    programs: list[int] = []
    for part in field.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            programs.extend(range(int(lo), int(hi) + 1))
        else:
            programs.append(int(part))
    return tuple(programs)


@functools.cache
def classes() -> tuple[InstrumentClass, ...]:
    """All 40 condition entries (39 classes + ``Empty``), ordered by index."""
    rows = []
    for row in _read_tsv("instruments.tsv"):
        program = row["output_program"].strip()
        rows.append(InstrumentClass(
            index=int(row["class_index"]),
            name=row["class_name"],
            gm_programs=_parse_programs(row["gm_programs"]),
            output_program=None if program == "-" else int(program),
            output_is_drum=row["output_is_drum"] == "1",
            slakh_occurrence=float(row["slakh_occurrence"]),
        ))
    if [c.index for c in rows] != list(range(CONDITION_SIZE)):
        raise ValueError("instruments.tsv: expected class indices 0..39 in order")
    return tuple(rows)


CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in classes())


@functools.cache
def _program_table() -> tuple[tuple[int, ...], tuple[str, ...]]:
    name_to_index = {c.name: c.index for c in classes()}
    class_of_program, gm_names = [], []
    for expected, row in enumerate(_read_tsv("gm_program_to_class.tsv")):
        if int(row["gm_program"]) != expected:
            raise ValueError("gm_program_to_class.tsv: expected programs 0..128 in order")
        class_of_program.append(name_to_index[row["class_name"]])
        gm_names.append(row["gm_instrument_name"])
    return tuple(class_of_program), tuple(gm_names)


def class_of_program(program: int) -> int:
    """Class index of a GM program (0-127), or of 128 (Slakh's drum program)."""
    table, _ = _program_table()
    if not 0 <= program < len(table):
        raise ValueError(f"MIDI program {program} is outside 0..128")
    return table[program]


def gm_instrument_name(program: int) -> str:
    """The General MIDI instrument name of a program (0-127), ``Drums`` for 128."""
    _, names = _program_table()
    return names[program]


def _normalise(name: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[_\-]", " ", name)).strip().lower()


@functools.cache
def _name_index() -> dict[str, int]:
    index: dict[str, int] = {}
    _, gm_names = _program_table()
    for program, gm_name in enumerate(gm_names):
        index[_normalise(gm_name)] = class_of_program(program)
    for alias, class_name in ALIASES.items():
        index[_normalise(alias)] = CLASS_NAMES.index(class_name)
    for c in classes()[:NUM_CLASSES]:
        index[_normalise(c.name)] = c.index
    return index


def class_index(name: str) -> int:
    """Class index (0..38) of a class name, GM instrument name or alias, case-insensitive.

    Raises:
      UnknownInstrumentError: listing the valid class names and aliases.
    """
    key = _normalise(name)
    if key not in _name_index():
        raise UnknownInstrumentError(
            f"unknown instrument {name!r}. Valid class names: {', '.join(CLASS_NAMES[:NUM_CLASSES])}. "
            f"Aliases: {', '.join(sorted(ALIASES))}. General MIDI instrument names are accepted too.")
    return _name_index()[key]


def class_indices(names: Iterable[str]) -> list[int]:
    """Class indices of several names, in order, without duplicates."""
    out: list[int] = []
    for name in names:
        idx = class_index(name)
        if idx not in out:
            out.append(idx)
    return out


def condition_one_hot(indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """(K, 40) float32 one-hot FiLM conditions for class indices."""
    indices = np.asarray(indices, dtype=np.int64)
    if np.any((indices < 0) | (indices >= CONDITION_SIZE)):
        raise ValueError(f"class indices must lie in 0..{CONDITION_SIZE - 1}, got {indices.tolist()}")
    return np.eye(CONDITION_SIZE, dtype=np.float32)[indices]


def output_program(index: int) -> tuple[int, bool]:
    """(MIDI program, is_drum) used when writing class ``index`` to a MIDI file."""
    c = classes()[index]
    if c.output_program is None:
        raise ValueError(f"class {c.name!r} has no output MIDI program")
    return c.output_program, c.output_is_drum


def occurrence_weights(temperature: float = 0.5) -> np.ndarray:
    """Un-normalised sampler weights (1/occurrence)^temperature over the 39 classes."""
    occ = np.array([c.slakh_occurrence for c in classes()[:NUM_CLASSES]], dtype=np.float64)
    return (1.0 / occ) ** temperature


def is_drum_stem(plugin_name: str | None, program_num: int) -> bool:
    """docs/deviations.md 11: a stem is drums if its plugin is a Slakh drum kit or its program is 128."""
    return program_num == DRUMS_PROGRAM or (plugin_name or "") in DRUM_PLUGIN_NAMES
