"""MT3-style multi-instrument note F1 ("onset + offset + program"), beside Jointist's metrics.

MT3 (Gardner et al.) scores a whole multi-instrument transcription at once: a note is a hit only
if onset (50 ms), pitch (50 cents, in Hz) and offset (max(20 % of the duration, 50 ms)) match
*and* it belongs to the same instrument track at the chosen granularity. Drum notes are matched
among drums only, on onset and pitch (no offset). Our transcriptions are class-level, so a class
stands for the program that :func:`jointist_jax.instruments.output_program` writes for it.

Granularities (the program a non-drum class is mapped to before grouping):

==============  ==============================================================================
granularity     tracks compared
==============  ==============================================================================
flat            all non-drum notes form one track (program ignored); drums are a second one
midi_class      GM family: output program // 8; drums are their own class
full_program    the exact output program (one per class); drums are their own class
==============  ==============================================================================

Unlike Jointist's per-class scores, MT3 takes the union of the tracks in the reference and the
estimate, so notes of an instrument absent from the reference count as false positives.

Pooling: counts (matches, reference notes, estimated notes) add up over tracks within a song, as
in MT3, and over songs for the set-level ``mt3/...`` numbers (precision = all matches / all
estimated notes). MT3's own papers average the per-song F1 over songs instead; that is reported
as ``..._song_mean`` so both can be quoted (see ``transcription_metrics`` for the names).
"""

from __future__ import annotations

from jointist_jax import instruments
from jointist_jax.metrics.matching import MatchCounts, SongNotes, count_matches
from jointist_jax.music import Notes, concatenate

GRANULARITIES = ("flat", "midi_class", "full_program")


def track_key(class_index: int, granularity: str) -> tuple[int, bool]:
    """``(program at this granularity, is_drum)``: the track a class's notes belong to."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"MT3 granularity: expected one of {GRANULARITIES}, got {granularity!r}")
    program, is_drum = instruments.output_program(class_index)
    if is_drum:
        return 0, True
    if granularity == "flat":
        return 0, False
    if granularity == "midi_class":
        return program // 8, False
    return program, False


def _tracks(song: SongNotes, granularity: str) -> dict[tuple[int, bool], Notes]:
    grouped: dict[tuple[int, bool], list[Notes]] = {}
    for cls in sorted(song):
        grouped.setdefault(track_key(cls, granularity), []).append(song[cls])
    return {key: concatenate(parts) for key, parts in grouped.items()}


def mt3_counts(ref: SongNotes, est: SongNotes, granularity: str) -> MatchCounts:
    """Onset + offset + program matches of one song, summed over its tracks (drums onset-only)."""
    ref_tracks, est_tracks = _tracks(ref, granularity), _tracks(est, granularity)
    total = MatchCounts()
    for key in sorted(set(ref_tracks) | set(est_tracks)):
        is_drum = key[1]
        total += count_matches(ref_tracks.get(key, Notes.empty()), est_tracks.get(key, Notes.empty()),
                               with_offset=not is_drum)
    return total
