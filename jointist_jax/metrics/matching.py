"""Note matching for evaluation: mir_eval's note hits counted on :class:`jointist_jax.music.Notes`.

A song's notes are a ``dict[int, Notes]`` keyed by class index (``jointist_jax.instruments``;
Drums = 38). Times are seconds from the song start, pitches are MIDI numbers (bass already
shifted as in the labels, docs/reference.md §4.2).

Matching goes through ``mir_eval.transcription.match_notes`` so every note metric in this package
counts hits exactly as mir_eval does. Two pitch conventions exist (docs/deviations.md 18):

* primary: MIDI pitch converted to Hz, ``440 * 2 ** ((m - 69) / 12)``, the standard practice;
* ``paper_compat``: the MIDI number itself passed as if it were Hz, as the reference code does
  (docs/reference.md §0 item 9). With mir_eval's 50-cent tolerance a +/-1-semitone error then counts as a
  hit for pitches >= 35, +/-2 for >= 69.

mir_eval rejects zero-length notes; like note_seq (used by MT3) we drop notes whose offset equals
their onset before matching. (The reference code raises on them and its bare ``except`` then skips
the whole instrument, docs/reference.md §10 item 27.)
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import mir_eval
import numpy as np

from jointist_jax import instruments
from jointist_jax.music import Notes

# mir_eval's defaults, which the reference uses (docs/reference.md §7.3).
ONSET_TOLERANCE = 0.05
OFFSET_RATIO = 0.2
OFFSET_MIN_TOLERANCE = 0.05
PITCH_TOLERANCE_CENTS = 50.0

SongNotes = Mapping[int, Notes]


def validate_class(index: int, where: str) -> int:
    """Returns ``index`` if it is one of the 39 real classes, else raises naming ``where``."""
    if not isinstance(index, (int, np.integer)) or not 0 <= index < instruments.NUM_CLASSES:
        raise ValueError(f"{where}: expected class indices 0..{instruments.NUM_CLASSES - 1}, got {index!r}")
    return int(index)


def validate_song_notes(song: SongNotes, where: str) -> dict[int, Notes]:
    """Checks a ``{class: Notes}`` mapping and returns it as a plain dict."""
    if not isinstance(song, Mapping):
        raise ValueError(f"{where}: expected a dict class index -> Notes, got {type(song).__name__}")
    out = {}
    for cls, notes in song.items():
        validate_class(cls, where)
        if not isinstance(notes, Notes):
            raise ValueError(f"{where}[{cls}]: expected a Notes, got {type(notes).__name__}")
        out[int(cls)] = notes
    return out


def midi_to_hz(pitches: np.ndarray) -> np.ndarray:
    """Frequency in Hz of MIDI pitches (A4 = 69 = 440 Hz)."""
    return 440.0 * 2.0 ** ((np.asarray(pitches, np.float64) - 69.0) / 12.0)


def to_mir_eval(notes: Notes, *, paper_compat: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(intervals (M, 2), pitches (M,))`` for mir_eval, zero-length notes dropped.

    ``paper_compat=True`` passes MIDI numbers as if they were Hz (the reference's call).
    """
    keep = notes.offsets > notes.onsets
    intervals = np.stack([notes.onsets[keep], notes.offsets[keep]], axis=1).reshape(-1, 2)
    pitches = notes.pitches[keep]
    if paper_compat:
        if np.any(pitches <= 0):
            raise ValueError("paper_compat note metrics pass MIDI numbers as Hz, which needs pitches >= 1; "
                             "got MIDI pitch 0")
        return intervals, pitches.astype(np.float64)
    return intervals, midi_to_hz(pitches)


@dataclasses.dataclass(frozen=True)
class MatchCounts:
    """Matched notes (``tp``) and note counts of a reference and an estimate; they add up."""

    tp: int = 0
    n_ref: int = 0
    n_est: int = 0

    def __add__(self, other: "MatchCounts") -> "MatchCounts":
        return MatchCounts(self.tp + other.tp, self.n_ref + other.n_ref, self.n_est + other.n_est)

    def precision_recall_f1(self) -> tuple[float, float, float]:
        """P = tp / n_est, R = tp / n_ref, F = their harmonic mean; 0 where undefined (as mir_eval)."""
        precision = self.tp / self.n_est if self.n_est else 0.0
        recall = self.tp / self.n_ref if self.n_ref else 0.0
        return precision, recall, float(mir_eval.util.f_measure(precision, recall))


def count_matches(ref: Notes, est: Notes, *, with_offset: bool, paper_compat: bool = False) -> MatchCounts:
    """mir_eval note matching: onset within 50 ms, pitch within 50 cents, and, if ``with_offset``,
    offset within max(0.2 x reference duration, 50 ms)."""
    ref_intervals, ref_pitches = to_mir_eval(ref, paper_compat=paper_compat)
    est_intervals, est_pitches = to_mir_eval(est, paper_compat=paper_compat)
    tp = 0
    # mir_eval builds dense (reference x estimate) matrices: quadratic in the notes of a song.
    # Notes whose onsets are further apart than the tolerance can never match, so the matching
    # splits exactly into independent blocks of nearby onsets, each matched on its own.
    for ref_idx, est_idx in _onset_blocks(ref_intervals[:, 0], est_intervals[:, 0]):
        tp += len(mir_eval.transcription.match_notes(
            ref_intervals[ref_idx], ref_pitches[ref_idx], est_intervals[est_idx], est_pitches[est_idx],
            onset_tolerance=ONSET_TOLERANCE, pitch_tolerance=PITCH_TOLERANCE_CENTS,
            offset_ratio=OFFSET_RATIO if with_offset else None, offset_min_tolerance=OFFSET_MIN_TOLERANCE))
    return MatchCounts(tp, len(ref_pitches), len(est_pitches))


def _onset_blocks(ref_onsets: np.ndarray, est_onsets: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Index sets of reference and estimated notes whose onsets chain within the tolerance.

    Consecutive onsets (of both lists together, sorted) more than the tolerance apart start a new
    block; the margin of one unit in the last decimal mir_eval rounds distances to keeps pairs
    that its rounding would still match in one block. Blocks lacking either reference or
    estimated notes are dropped (no match).
    """
    margin = 10.0 ** -mir_eval.transcription.N_DECIMALS
    onsets = np.concatenate([ref_onsets, est_onsets])
    is_ref = np.arange(len(onsets)) < len(ref_onsets)
    order = np.argsort(onsets, kind="stable")
    cuts = np.flatnonzero(np.diff(onsets[order]) > ONSET_TOLERANCE + margin) + 1
    blocks = []
    for members in np.split(order, cuts):
        ref_idx = members[is_ref[members]]
        est_idx = members[~is_ref[members]] - len(ref_onsets)
        if len(ref_idx) and len(est_idx):
            blocks.append((ref_idx, est_idx))
    return blocks
