"""The reference's flat note lists: the instruments' rolls OR'ed, then decoded again (docs/reference.md §7.3).

For its instrument-agnostic ("flat") note F1 the reference does not merge note lists. It ORs the
thresholded rolls of every non-drum instrument into one (T, 88) roll per side and runs the
onset-gated decoder (docs/reference.md §7.1) on the OR:

* estimate: frame roll = OR of ``frame > frame_threshold``, onset roll = OR of
  ``onset > onset_threshold``;
* reference: the OR of the target frame rolls serves as both the frame and the onset roll, so
  every maximal run of active frames becomes one note.

Notes of the same pitch then fuse wherever their frames touch or overlap: two instruments playing
the same pitch at overlapping times give one note, and so do repeated notes whose frames are
adjacent. These fused lists feed the flat ``_paper_compat`` note scores
(:mod:`jointist_jax.metrics.transcription_metrics`); our default flat score merges the exact
note lists instead (docs/deviations.md 24).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from jointist_jax import instruments
from jointist_jax.rolls import DecodeOptions, decode_notes
from jointist_jax.music import Notes

DRUMS_INDEX = instruments.class_index("Drums")


def or_rolls(rolls: Mapping[int, np.ndarray], threshold: float, where: str) -> np.ndarray | None:
    """Boolean (T, P) OR of ``roll > threshold`` over the non-drum classes of ``rolls``, truncated to
    the shortest roll; None if there is no non-drum class."""
    kept = []
    for cls, roll in sorted(rolls.items()):
        roll = np.asarray(roll)
        if roll.ndim != 2:
            raise ValueError(f"{where}[{cls}]: expected a (frames, pitches) roll, got shape {roll.shape}")
        if cls != DRUMS_INDEX:
            kept.append(roll)
    if not kept:
        return None
    if len({r.shape[1] for r in kept}) != 1:
        raise ValueError(f"{where}: rolls have different pitch counts {sorted({r.shape[1] for r in kept})}")
    length = min(len(r) for r in kept)
    # In place, one roll at a time: a whole song has ~30k frames and up to 39 classes.
    out = kept[0][:length] > threshold
    for roll in kept[1:]:
        out |= roll[:length] > threshold
    return out


def decode_roll(onset_roll: np.ndarray, frame_roll: np.ndarray) -> Notes:
    """Onset-gated decoding (:func:`jointist_jax.rolls.decode_notes`) of
    boolean (T, 88) rolls into one note list at 100 frames per second, velocity 100."""
    return decode_notes(onset_roll.astype(np.float32), frame_roll.astype(np.float32),
                        DecodeOptions(onset_threshold=0.5, frame_threshold=0.5))


def fused_flat_notes(ref_rolls: Mapping[int, np.ndarray], est_frame_rolls: Mapping[int, np.ndarray],
                     est_onset_rolls: Mapping[int, np.ndarray], *, frame_threshold: float,
                     onset_threshold: float, where: str = "") -> tuple[Notes, Notes]:
    """``(reference, estimate)`` flat note lists as the reference builds them (module docstring).

    Only classes with both a reference roll and an estimate enter either OR: the reference adds an
    instrument to its flat rolls inside its per-instrument scoring loop, which runs over the
    predicted instruments and skips one without a target (a false positive); an instrument it did
    not predict (a miss) never enters the loop. With the labelled instruments as conditions both
    sets are the same.

    Args:
      ref_rolls: class index -> (T, 88) 0/1 target frame roll.
      est_frame_rolls, est_onset_rolls: class index -> (T, 88) frame / onset posteriorgrams, same
        classes and shapes. Drums (class 38) are left out on both sides.
      frame_threshold, onset_threshold: activity thresholds of the posteriorgrams (the reference:
        0.1 and 0.1).
      where: prefix for error messages.
    """
    if set(est_frame_rolls) != set(est_onset_rolls):
        raise ValueError(f"{where}: est_onset_rolls has classes {sorted(est_onset_rolls)}, est_rolls "
                         f"{sorted(est_frame_rolls)}; they must be the same")
    for cls in est_frame_rolls:
        if np.shape(est_frame_rolls[cls]) != np.shape(est_onset_rolls[cls]):
            raise ValueError(f"{where}: class {cls} has frame roll {np.shape(est_frame_rolls[cls])} and onset roll "
                             f"{np.shape(est_onset_rolls[cls])}; they must have the same shape")
    both = set(ref_rolls) & set(est_frame_rolls)
    ref_rolls = {c: r for c, r in ref_rolls.items() if c in both}
    est_frame_rolls = {c: r for c, r in est_frame_rolls.items() if c in both}
    est_onset_rolls = {c: r for c, r in est_onset_rolls.items() if c in both}
    ref_or = or_rolls(ref_rolls, frame_threshold, f"{where} ref_rolls")
    ref = Notes.empty() if ref_or is None else decode_roll(ref_or, ref_or)
    est_frames = or_rolls(est_frame_rolls, frame_threshold, f"{where} est_rolls")
    if est_frames is None:
        return ref, Notes.empty()
    est_onsets = or_rolls(est_onset_rolls, onset_threshold, f"{where} est_onset_rolls")
    return ref, decode_roll(est_onsets, est_frames)
