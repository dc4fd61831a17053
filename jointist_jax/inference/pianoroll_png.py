"""The piano-roll picture of a song's notes: one panel per instrument (matplotlib, Agg).

One renderer serves both the transcription CLI's ``<song>.pianoroll.png`` (notes only, one colour
per instrument) and the evaluation's TensorBoard images (with ``reference``: reference notes as
grey boxes, predicted notes as red outlines on top). Matplotlib's object-oriented Agg canvas
only (no pyplot global state), so it is safe in any process.
"""

from __future__ import annotations

import io
from typing import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from jointist_jax import instruments
from jointist_jax.music import LOWEST_MIDI_NOTE, NUM_PITCHES, Notes

_PANEL_HEIGHT_INCHES = 1.6
_REFERENCE_COLOUR = "0.7"
_PREDICTED_COLOUR = "C3"
_MIN_BOX_SECONDS = 0.01  # zero-length notes stay visible


def pianoroll_png(notes_by_class: Mapping[int, Notes], *, duration: float, title: str = "",
                  reference: Mapping[int, Notes] | None = None) -> bytes:
    """PNG bytes with one piano-roll panel per class (x: seconds, y: MIDI pitch).

    Without ``reference``: the classes of ``notes_by_class`` in its order, each panel's notes
    filled in its own colour. With ``reference``: the classes of either, ascending, reference notes
    as grey boxes and ``notes_by_class`` as red outlines.
    """
    comparing = reference is not None
    reference = reference or {}
    class_ids = sorted(set(reference) | set(notes_by_class)) if comparing else list(notes_by_class)
    panels = max(len(class_ids), 1)
    figure = Figure(figsize=(12, 0.8 + _PANEL_HEIGHT_INCHES * panels))
    FigureCanvasAgg(figure)
    axes = figure.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    for i, (ax, cls) in enumerate(zip(axes, class_ids)):
        notes = notes_by_class.get(cls, Notes.empty())
        name = instruments.CLASS_NAMES[cls]
        # One collection per panel: an artist per note would take minutes for a dense song.
        if comparing:
            ref = reference.get(cls, Notes.empty())
            ax.add_collection(PolyCollection(_note_boxes(ref), facecolors=_REFERENCE_COLOUR, edgecolors="none"))
            ax.add_collection(PolyCollection(_note_boxes(notes), facecolors="none", edgecolors=_PREDICTED_COLOUR,
                                             linewidths=0.8))
            ax.set_ylabel(f"{name}\n{len(ref)} ref / {len(notes)} pred", fontsize=8)
            pitches = np.concatenate([ref.pitches, notes.pitches])
        else:
            colour = f"C{i % 10}"
            ax.add_collection(PolyCollection(_note_boxes(notes), facecolors=colour, edgecolors="none"))
            ax.set_ylabel("pitch")
            ax.set_title(f"{name} ({len(notes)} notes)", fontsize=9, loc="left", color=colour)
            pitches = notes.pitches
        if len(pitches):
            ax.set_ylim(int(pitches.min()) - 2, int(pitches.max()) + 2)
        else:
            ax.set_ylim(LOWEST_MIDI_NOTE - 1, LOWEST_MIDI_NOTE + NUM_PITCHES)
    if not class_ids:
        axes[0].text(0.5, 0.5, "no instruments", ha="center", va="center", transform=axes[0].transAxes)
    axes[-1].set_xlim(0, max(duration, 1e-3))
    axes[-1].set_xlabel("time (s)")
    if comparing:
        title += "  (grey: reference, red: prediction)"
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def _note_boxes(notes: Notes) -> np.ndarray:
    """(N, 4, 2) rectangle corners (time, pitch) of the notes, 0.8 semitones tall."""
    onset = notes.onsets
    offset = np.maximum(notes.offsets, onset + _MIN_BOX_SECONDS)
    low = notes.pitches - 0.4
    high = low + 0.8
    return np.stack([np.stack([onset, low], 1), np.stack([offset, low], 1),
                     np.stack([offset, high], 1), np.stack([onset, high], 1)], axis=1)
