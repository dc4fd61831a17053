"""Transcription metrics of the Jointist paper (docs/reference.md §7.3, docs/deviations.md 18) and MT3's note F1.

Per song, :func:`song_transcription_scores` scores each class *present in the reference* (at
least one note): predicted classes absent from the reference are ignored, and a present class
with no estimated notes scores P = R = F = 0. :func:`aggregate_transcription` averages the songs.

Metrics per (song, class):

* ``note``: onset within 50 ms and pitch within 50 cents (mir_eval, offsets ignored). All
  classes, drums included.
* ``note_with_offset``: ``note`` plus offset within max(0.2 x reference duration, 50 ms).
  Non-drum classes only.
* ``frame``: binary precision/recall/F1 of the flattened (T, 88) rolls, truncated to their common
  length; a roll cell is active where its value exceeds ``frame_threshold`` (0.1, the reference's
  frame threshold, so 0/1 target rolls and posteriorgrams can both be passed). sklearn's
  ``precision_recall_fscore_support(average='binary', zero_division=0)`` semantics. Only computed
  when rolls are given.

``note`` and ``note_with_offset`` come in two pitch conventions: the primary one converts MIDI to
Hz; ``_paper_compat`` passes MIDI numbers as Hz like the reference (a +/-1-semitone error counts
as a hit for pitch >= 35).

Flat (instrument-agnostic) metric, per song with any non-drum reference note: all non-drum
reference notes merged into one list, all non-drum estimated notes (every estimated class,
present in the reference or not) merged into another, scored once; frame F1 on the OR of the
non-drum rolls. Merging note lists needs no decoder and keeps the reference notes exact.

The flat ``_paper_compat`` note scores follow the reference instead (given the rolls and the
estimated onset rolls): it ORs the rolls and decodes them again (:mod:`fused_notes`; the target
roll through the onset-gated decoder, so reference notes become maximal runs of active frames),
and passes MIDI numbers as Hz. Its ORs hold only the classes both in the reference and
estimated, as the reference's scoring loop does: with predicted instruments, a false-positive
instrument's notes and a missed instrument's notes are left out of it (ours counts them); a
song with no such non-drum class has no flat ``_paper_compat`` score. The two flat lists differ where notes of one pitch touch or
overlap in time, across instruments or repeated in one: the merged lists keep every note (each
must be found), the OR'ed rolls fuse them into one.

Names in :attr:`MetricReport.scalars` (``{metric}/{aggregation}``):

=====================================================  ===============================================
name                                                   meaning
=====================================================  ===============================================
``note_{precision,recall,f1}/piece_wise``              mean over songs of the mean over their classes
``note_{precision,recall,f1}/instrument_wise``         per-class mean over songs, then mean over classes
``note_{precision,recall,f1}/flat``                    mean over songs of the flat score
``note_{precision,recall,f1}_paper_compat/...``        the same three, MIDI numbers passed as Hz;
                                                       ``/flat`` on the OR'ed and re-decoded rolls
``note_with_offset_{precision,recall,f1}/...``         the same three, offsets matched, no drums
``note_with_offset_{...}_paper_compat/...``            offsets matched, MIDI numbers passed as Hz
``frame_{precision,recall,f1}/...``                    the same three on rolls (with rolls only)
``mt3/onset_offset_program_{precision,recall,f1}/G``   MT3 note F1 at granularity G (``flat``,
                                                       ``midi_class``, ``full_program``), counts
                                                       pooled over all songs
``mt3/onset_offset_program_f1_song_mean/G``            MT3's own convention: mean over songs of the
                                                       per-song F1
=====================================================  ===============================================

:attr:`MetricReport.per_class` maps each per-(song, class) metric name (e.g. ``note_f1``,
``frame_f1``, ``note_with_offset_f1_paper_compat``) to {class name: mean over the songs that
contain the class}: the bars behind the instrument-wise number.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from jointist_jax import instruments
from jointist_jax.metrics import fused_notes, mt3_metrics
from jointist_jax.metrics.matching import (MatchCounts, SongNotes, count_matches, validate_class,
                                           validate_song_notes)
from jointist_jax.music import Notes, concatenate
from jointist_jax.metrics.averaging import MetricReport, by_class_name, per_class_means, song_class_means

DRUMS_INDEX = instruments.class_index("Drums")
FRAME_THRESHOLD = 0.1  # Original.yaml evaluation.frame_threshold (docs/reference.md §7.1)
ONSET_THRESHOLD = 0.1  # Original.yaml evaluation.onset_threshold (docs/reference.md §7.1)
PRIMARY = (("", False),)
BOTH_CONVENTIONS = (("", False), ("_paper_compat", True))
_STATS = ("precision", "recall", "f1")


def note_f1(ref: Notes, est: Notes, *, with_offset: bool = False,
            paper_compat: bool = False) -> tuple[float, float, float]:
    """``(precision, recall, f1)`` of one note list against another, as
    ``mir_eval.transcription.precision_recall_f1_overlap`` with onset tolerance 50 ms and
    ``offset_ratio`` 0.2 if ``with_offset`` else None. Either list empty gives (0, 0, 0).

    ``paper_compat=True`` passes MIDI numbers as Hz (the reference's call, docs/deviations.md 18).
    """
    return count_matches(ref, est, with_offset=with_offset, paper_compat=paper_compat).precision_recall_f1()


def _active(roll, name: str, threshold: float) -> np.ndarray:
    roll = np.asarray(roll)
    if roll.ndim != 2:
        raise ValueError(f"{name}: expected a (frames, pitches) roll, got shape {roll.shape}")
    return roll > threshold


def frame_f1(ref_roll, est_roll, *, threshold: float = FRAME_THRESHOLD) -> tuple[float, float, float]:
    """``(precision, recall, f1)`` over all cells of two (T, P) rolls, truncated to the shorter T.

    A cell is active where the roll exceeds ``threshold``. Undefined ratios are 0, as sklearn's
    ``precision_recall_fscore_support(average='binary', zero_division=0)``.
    """
    ref, est = _active(ref_roll, "ref_roll", threshold), _active(est_roll, "est_roll", threshold)
    if ref.shape[1] != est.shape[1]:
        raise ValueError(f"frame_f1: ref_roll has {ref.shape[1]} pitch columns, est_roll {est.shape[1]}")
    length = min(len(ref), len(est))
    ref, est = ref[:length], est[:length]
    tp = int(np.sum(ref & est))
    fp, fn = int(np.sum(est)) - tp, int(np.sum(ref)) - tp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return precision, recall, f1


def _named(kind: str, values: tuple[float, float, float], suffix: str = "") -> dict[str, float]:
    return {f"{kind}_{stat}{suffix}": float(v) for stat, v in zip(_STATS, values)}


def _note_scores(ref: Notes, est: Notes, *, with_offset: bool,
                 conventions=BOTH_CONVENTIONS) -> dict[str, float]:
    kind = "note_with_offset" if with_offset else "note"
    out = {}
    for suffix, compat in conventions:
        out.update(_named(kind, note_f1(ref, est, with_offset=with_offset, paper_compat=compat), suffix))
    return out


@dataclasses.dataclass(frozen=True)
class SongTranscriptionScores:
    """The scores of one song.

    Attributes:
      song: an identifier, for reports.
      per_class: class index -> metric name -> value, for the classes present in the reference.
      flat: metric name -> value of the flat score; empty if the song has no non-drum notes.
      mt3: MT3 granularity -> match counts of the song.
    """

    song: str
    per_class: dict[int, dict[str, float]]
    flat: dict[str, float]
    mt3: dict[str, MatchCounts]


def _check_rolls(rolls: Mapping | None, where: str) -> dict[int, np.ndarray]:
    if rolls is None:
        return {}
    if not isinstance(rolls, Mapping):
        raise ValueError(f"{where}: expected a dict class index -> (frames, 88) roll, got {type(rolls).__name__}")
    return {validate_class(cls, where): np.asarray(roll) for cls, roll in rolls.items()}


def song_transcription_scores(ref: SongNotes, est: SongNotes, ref_rolls: Mapping | None = None,
                              est_rolls: Mapping | None = None, *, song: str = "",
                              frame_threshold: float = FRAME_THRESHOLD, est_onset_rolls: Mapping | None = None,
                              onset_threshold: float = ONSET_THRESHOLD) -> SongTranscriptionScores:
    """Scores one song's transcription (the module docstring lists the metrics).

    Args:
      ref: class index -> reference notes. Classes with no note are not scored.
      est: class index -> estimated notes; a missing class is an empty estimate.
      ref_rolls, est_rolls: optional class index -> (T, 88) frame rolls for frame F1. Give both or
        neither; ``ref_rolls`` must cover every scored class, a class missing from ``est_rolls``
        is an all-silent estimate.
      song: identifier kept in the result.
      frame_threshold: a roll cell is active above this value.
      est_onset_rolls: optional class index -> (T, 88) onset posteriorgram, the same classes as
        ``est_rolls`` (which it needs). With it the flat ``_paper_compat`` note scores are the
        reference's (OR'ed rolls decoded again); without it they are left out.
      onset_threshold: an onset cell is active above this value (flat ``_paper_compat`` only).
    """
    ref = validate_song_notes(ref, f"song {song!r}: ref")
    est = validate_song_notes(est, f"song {song!r}: est")
    if (ref_rolls is None) != (est_rolls is None):
        raise ValueError(f"song {song!r}: give both ref_rolls and est_rolls for frame F1, or neither")
    if est_onset_rolls is not None and est_rolls is None:
        raise ValueError(f"song {song!r}: est_onset_rolls needs ref_rolls and est_rolls")
    ref_rolls = _check_rolls(ref_rolls, f"song {song!r}: ref_rolls")
    est_rolls = _check_rolls(est_rolls, f"song {song!r}: est_rolls")
    with_frames = bool(ref_rolls) or bool(est_rolls)
    present = sorted(cls for cls, notes in ref.items() if len(notes))

    per_class: dict[int, dict[str, float]] = {}
    for cls in present:
        est_notes = est.get(cls, Notes.empty())
        scores = _note_scores(ref[cls], est_notes, with_offset=False)
        if cls != DRUMS_INDEX:
            scores.update(_note_scores(ref[cls], est_notes, with_offset=True))
        if with_frames:
            if cls not in ref_rolls:
                raise ValueError(f"song {song!r}: ref_rolls has no roll for class {cls} "
                                 f"({instruments.CLASS_NAMES[cls]}), which has reference notes")
            ref_roll = ref_rolls[cls]
            est_roll = est_rolls.get(cls, np.zeros_like(ref_roll, dtype=np.float32))
            scores.update(_named("frame", frame_f1(ref_roll, est_roll, threshold=frame_threshold)))
        per_class[cls] = scores

    flat: dict[str, float] = {}
    flat_ref = concatenate([ref[c] for c in present if c != DRUMS_INDEX])
    if len(flat_ref):
        flat_est = concatenate([notes for c, notes in sorted(est.items()) if c != DRUMS_INDEX])
        flat.update(_note_scores(flat_ref, flat_est, with_offset=False, conventions=PRIMARY))
        flat.update(_note_scores(flat_ref, flat_est, with_offset=True, conventions=PRIMARY))
        if with_frames:
            # Never None: every present non-drum class has a roll (checked above).
            ref_or = fused_notes.or_rolls(ref_rolls, frame_threshold, f"song {song!r}: ref_rolls")
            est_or = fused_notes.or_rolls(est_rolls, frame_threshold, f"song {song!r}: est_rolls")
            if est_or is None:
                est_or = np.zeros_like(ref_or)
            # Both ORs are 0/1, so any threshold in [0, 1) reads them back unchanged.
            flat.update(_named("frame", frame_f1(ref_or.astype(np.float32), est_or.astype(np.float32),
                                                 threshold=0.5)))
        if est_onset_rolls is not None:
            onset_rolls = _check_rolls(est_onset_rolls, f"song {song!r}: est_onset_rolls")
            fused_ref, fused_est = fused_notes.fused_flat_notes(
                {c: ref_rolls[c] for c in present}, est_rolls, onset_rolls, frame_threshold=frame_threshold,
                onset_threshold=onset_threshold, where=f"song {song!r}")
            if len(fused_ref):  # some non-drum class is both in the reference and estimated
                paper = (("_paper_compat", True),)
                flat.update(_note_scores(fused_ref, fused_est, with_offset=False, conventions=paper))
                flat.update(_note_scores(fused_ref, fused_est, with_offset=True, conventions=paper))

    mt3 = {g: mt3_metrics.mt3_counts(ref, est, g) for g in mt3_metrics.GRANULARITIES}
    return SongTranscriptionScores(song=song, per_class=per_class, flat=flat, mt3=mt3)


def aggregate_transcription(songs: Sequence[SongTranscriptionScores]) -> MetricReport:
    """Flat, piece-wise and instrument-wise means and MT3 pooled scores over songs.

    Names are listed in the module docstring. A metric no song has (e.g. ``frame_*`` without
    rolls) is left out.
    """
    songs = list(songs)
    for i, s in enumerate(songs):
        if not isinstance(s, SongTranscriptionScores):
            raise ValueError(f"aggregate_transcription: item {i} is a {type(s).__name__}, "
                             "expected SongTranscriptionScores from song_transcription_scores")
    scalars: dict[str, float] = {}
    per_class: dict[str, dict[str, float]] = {}
    names = sorted({name for s in songs for row in s.per_class.values() for name in row})
    for name in names:
        values = [{cls: row[name] for cls, row in s.per_class.items() if name in row} for s in songs]
        means = song_class_means(values)
        scalars[f"{name}/piece_wise"] = means["piece_wise"]
        scalars[f"{name}/instrument_wise"] = means["instrument_wise"]
        per_class[name] = by_class_name(per_class_means(values))
    for name in sorted({name for s in songs for name in s.flat}):
        scalars[f"{name}/flat"] = float(np.mean([s.flat[name] for s in songs if name in s.flat]))
    if songs:
        for granularity in mt3_metrics.GRANULARITIES:
            pooled = sum((s.mt3[granularity] for s in songs), MatchCounts())
            scalars.update({f"mt3/onset_offset_program_{stat}/{granularity}": v
                            for stat, v in zip(_STATS, pooled.precision_recall_f1())})
            scalars[f"mt3/onset_offset_program_f1_song_mean/{granularity}"] = float(
                np.mean([s.mt3[granularity].precision_recall_f1()[2] for s in songs]))
    return MetricReport(scalars=scalars, per_class=per_class)
