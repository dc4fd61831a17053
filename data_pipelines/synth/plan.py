"""Which track goes to which split: parsing ``--splits`` and numbering tracks like Slakh2100.

Tracks are numbered globally from 1 in split order (train, then validation, then test), as in
the original Slakh2100 (Track00001-01500 train, 01501-01875 validation, 01876-02100 test).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from data_pipelines.synth import compose
from data_pipelines.synth.errors import SynthError
from data_pipelines.synth.layout import SPLITS
from data_pipelines.synth.track import TrackJob

DEFAULT_SPLITS = "train=0.7,validation=0.15,test=0.15"


def parse_splits(text: str) -> dict[str, float] | dict[str, int]:
    """Parses ``train=0.7,validation=0.15,test=0.15`` (fractions) or ``train=16,...`` (counts).

    All-integer values are counts; otherwise the values are fractions that must sum to 1.
    Splits not named get nothing.

    Raises:
      SynthError: for an unknown split name, a malformed or negative value, or fractions that do
        not sum to 1.
    """
    raw: dict[str, str] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in SPLITS:
            raise SynthError(f"--splits {text!r}: expected comma-separated NAME=VALUE with NAME in "
                             f"{', '.join(SPLITS)}, got {item!r}")
        if name in raw:
            raise SynthError(f"--splits {text!r}: split {name!r} is given twice")
        raw[name] = value.strip()
    try:
        counts = {name: int(v) for name, v in raw.items()}
    except ValueError:
        counts = None
    if counts is not None:
        if any(c < 0 for c in counts.values()):
            raise SynthError(f"--splits {text!r}: track counts must not be negative")
        return {name: counts.get(name, 0) for name in SPLITS}
    try:
        fractions = {name: float(v) for name, v in raw.items()}
    except ValueError as e:
        raise SynthError(f"--splits {text!r}: values must be integer counts or fractions") from e
    if any(not 0.0 <= f <= 1.0 for f in fractions.values()):
        raise SynthError(f"--splits {text!r}: fractions must lie in [0, 1]")
    if not math.isclose(sum(fractions.values()), 1.0, abs_tol=1e-6):
        raise SynthError(f"--splits {text!r}: fractions sum to {sum(fractions.values()):g}, not 1")
    return {name: fractions.get(name, 0.0) for name in SPLITS}


def split_counts(splits: dict, total: int | None) -> dict[str, int]:
    """Tracks per split for ``total`` tracks.

    Fractions are turned into counts by the largest-remainder rule (ties go to the earlier
    split), so the counts always add up to ``total``. Counts are returned as they are; ``total``
    must then be None or equal to their sum.

    Raises:
      SynthError: if counts disagree with ``total``, or fractions come without a total.
    """
    if all(isinstance(v, int) for v in splits.values()):
        if total is not None and sum(splits.values()) != total:
            raise SynthError(f"--splits counts add up to {sum(splits.values())} tracks but "
                             f"--tracks is {total}")
        return dict(splits)
    if total is None:
        raise SynthError("--tracks is needed when --splits gives fractions")
    exact = {name: splits[name] * total for name in SPLITS}
    counts = {name: int(math.floor(exact[name] + 1e-9)) for name in SPLITS}
    by_remainder = sorted(SPLITS, key=lambda n: (-(exact[n] - counts[n]), SPLITS.index(n)))
    for name in by_remainder[: total - sum(counts.values())]:
        counts[name] += 1
    return counts


def number_tracks(counts: dict[str, int]) -> list[tuple[int, str]]:
    """``(track number, split)`` for every track, numbered from 1 in split order."""
    out = []
    for split in SPLITS:
        for _ in range(counts[split]):
            out.append((len(out) + 1, split))
    return out


def composed_jobs(counts: dict[str, int], seconds: float, seed: int,
                  max_stems: int = compose.MAX_STEMS) -> list[TrackJob]:
    """Jobs for composed songs of ``seconds`` seconds with at most ``max_stems`` parts."""
    return [TrackJob(number, split, seed, seconds=seconds, max_stems=max_stems)
            for number, split in number_tracks(counts)]


def midi_jobs(files: list[Path], counts: dict[str, int], seed: int) -> list[TrackJob]:
    """Jobs for user MIDI files: the files, in sorted order, are shuffled with ``seed`` and dealt
    to the splits in order, so the assignment is deterministic for a seed.
    """
    numbered = number_tracks(counts)
    if len(numbered) > len(files):
        raise SynthError(f"{len(numbered)} tracks were asked for but --midi_dir has only "
                         f"{len(files)} MIDI files")
    order = np.random.default_rng(seed).permutation(len(files))
    return [TrackJob(number, split, seed, midi_path=str(files[order[k]]))
            for k, (number, split) in enumerate(numbered)]
