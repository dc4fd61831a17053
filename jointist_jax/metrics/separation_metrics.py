"""Separation metric of the Jointist paper: plain SNR-style SDR (docs/reference.md §7.4).

``SDR(ref, est) = 10 * (log10(max(mean(ref^2), 1e-8)) - log10(max(mean((est - ref)^2), 1e-8)))``

per source, on the whole song. It is not BSS-eval SDR: no distortion filter is allowed. The
1e-8 floors bound it to [-80, 80] dB; a perfect estimate of an audible source gives
``10 * log10(mean(ref^2) / 1e-8)``.

Classes whose stem audio is absent are skipped (docs/deviations.md 16). The reference scores them
against silence, which gives very negative SDRs for a missing file, not a bad separation
(docs/reference.md §10 item 19).

Names in :attr:`MetricReport.scalars`:

==========================  ================================================================
name                        meaning
==========================  ================================================================
``sdr/source_wise``         mean over every scored (song, class)
``sdr/piece_wise``          mean over songs of the mean over the song's scored classes
``sdr/instrument_wise``     per-class mean over songs, then the mean over classes present
``sdr/num_sources``         number of scored (song, class) pairs
``sdr/num_skipped``         number of (song, class) pairs skipped for missing stem audio
==========================  ================================================================

:attr:`MetricReport.per_class` has ``sdr``: {class name: mean over the songs containing it}.

Whole songs are what we score. The reference scores its standalone separator (the ``S`` baseline)
on one fixed 10-s crop per test track instead (docs/deviations.md 32): the crop of
:func:`jointist_jax.metrics.recognition_metrics.paper_crop`, its classes those with a labelled
note in it. :func:`paper_compat_separation_scores` aggregates such crops' scores under the same
names with ``_paper_compat`` after the metric (``sdr_paper_compat/source_wise``, per-class
``sdr_paper_compat``, ...).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from jointist_jax import instruments
from jointist_jax.metrics.matching import validate_class
from jointist_jax.metrics.averaging import (PAPER_COMPAT, MetricReport, by_class_name, per_class_means,
                                            song_class_means)

POWER_FLOOR = 1e-8  # calculate_sdr's clamp on both powers


def sdr(reference, estimate) -> np.ndarray | float:
    """SDR in dB along the last axis (one value per row); a float for 1-D inputs.

    Raises ``ValueError`` if the shapes differ.
    """
    reference = np.asarray(reference, np.float64)
    estimate = np.asarray(estimate, np.float64)
    if reference.shape != estimate.shape:
        raise ValueError(f"sdr: reference shape {reference.shape} differs from estimate shape {estimate.shape}")
    signal = np.maximum(np.mean(reference ** 2, axis=-1), POWER_FLOOR)
    noise = np.maximum(np.mean((estimate - reference) ** 2, axis=-1), POWER_FLOOR)
    out = 10.0 * (np.log10(signal) - np.log10(noise))
    return float(out) if out.ndim == 0 else out


@dataclasses.dataclass(frozen=True)
class SongSeparationScores:
    """SDR of each scored class of one song, and the classes skipped for missing stem audio."""

    song: str
    sdr: dict[int, float]
    skipped: tuple[int, ...]


def song_separation_scores(sources: Mapping[int, tuple[np.ndarray | None, np.ndarray]], *,
                           song: str = "") -> SongSeparationScores:
    """SDR per class of one song.

    Args:
      sources: class index -> ``(reference stem or None, estimate)``, 1-D waveforms of equal
        length. Pass the classes to evaluate (the reference evaluates every class with notes);
        a ``None`` reference (no stem audio) skips the class.
      song: identifier kept in the result.
    """
    if not isinstance(sources, Mapping):
        raise ValueError(f"song {song!r}: expected a dict class index -> (reference, estimate), "
                         f"got {type(sources).__name__}")
    scores: dict[int, float] = {}
    skipped = []
    for cls in sorted(sources):
        validate_class(cls, f"song {song!r}: sources")
        pair = sources[cls]
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise ValueError(f"song {song!r}: sources[{cls}] must be a (reference, estimate) tuple")
        reference, estimate = pair
        if reference is None:
            skipped.append(int(cls))
            continue
        reference, estimate = np.asarray(reference), np.asarray(estimate)
        if reference.ndim != 1 or reference.shape != estimate.shape:
            raise ValueError(f"song {song!r}, class {cls} ({instruments.CLASS_NAMES[cls]}): expected 1-D "
                             f"reference and estimate of equal length, got {reference.shape} and {estimate.shape}")
        scores[int(cls)] = sdr(reference, estimate)
    return SongSeparationScores(song=song, sdr=scores, skipped=tuple(skipped))


def aggregate_separation(songs: Sequence[SongSeparationScores]) -> MetricReport:
    """Source-wise, piece-wise and instrument-wise mean SDR over songs (names in the module docstring).

    The three means are left out when nothing was scored.
    """
    songs = list(songs)
    for i, s in enumerate(songs):
        if not isinstance(s, SongSeparationScores):
            raise ValueError(f"aggregate_separation: item {i} is a {type(s).__name__}, "
                             "expected SongSeparationScores from song_separation_scores")
    values = [s.sdr for s in songs]
    scalars = {f"sdr/{k}": v for k, v in song_class_means(values).items()}
    scalars["sdr/num_sources"] = float(sum(len(v) for v in values))
    scalars["sdr/num_skipped"] = float(sum(len(s.skipped) for s in songs))
    return MetricReport(scalars=scalars, per_class={"sdr": by_class_name(per_class_means(values))})


def paper_compat_separation_scores(crops: Sequence[SongSeparationScores]) -> MetricReport:
    """:func:`aggregate_separation` of the reference's crops (one per track, each scored with
    :func:`song_separation_scores`), with ``_paper_compat`` after each metric's name."""
    return aggregate_separation(crops).with_suffix(PAPER_COMPAT)
