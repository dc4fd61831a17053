"""A piano-roll picture of a song's notes: one panel and one colour per instrument (matplotlib, Agg)."""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from jointist_jax import instruments
from jointist_jax.inference.postprocess import Note

_PANEL_HEIGHT_INCHES = 1.6


def save_pianoroll_png(path: str | os.PathLike, notes_by_class: Mapping[int, list[Note]], *,
                       duration: float, title: str = "") -> None:
    """Writes a PNG with one piano-roll panel per class (x: seconds, y: MIDI pitch).

    Uses the object-oriented Agg canvas, so it never touches pyplot's global backend state.
    """
    class_ids = list(notes_by_class)
    panels = max(len(class_ids), 1)
    figure = Figure(figsize=(12, 0.8 + _PANEL_HEIGHT_INCHES * panels))
    FigureCanvasAgg(figure)
    axes = figure.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    colours = [f"C{i % 10}" for i in range(panels)]
    for ax, class_id, colour in zip(axes, class_ids, colours):
        notes = notes_by_class[class_id]
        if notes:
            # One collection per panel: an artist per note would take minutes for a dense song.
            ax.add_collection(PolyCollection(_note_boxes(notes), facecolors=colour, edgecolors="none"))
        pitches = [n.midi_note for n in notes] or [60]
        ax.set_ylim(min(pitches) - 2, max(pitches) + 2)
        ax.set_ylabel("pitch")
        ax.set_title(f"{instruments.CLASS_NAMES[class_id]} ({len(notes)} notes)", fontsize=9, loc="left",
                     color=colour)
    if not class_ids:
        axes[0].text(0.5, 0.5, "no instruments", ha="center", va="center", transform=axes[0].transAxes)
    axes[-1].set_xlim(0, max(duration, 1e-3))
    axes[-1].set_xlabel("time (s)")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(os.fspath(path), dpi=80)


def _note_boxes(notes: list[Note]) -> np.ndarray:
    """(N, 4, 2) rectangle corners (time, pitch) of the notes, 0.8 semitones tall."""
    onset = np.array([n.onset_time for n in notes])
    offset = np.array([n.offset_time for n in notes])
    low = np.array([n.midi_note for n in notes]) - 0.4
    high = low + 0.8
    return np.stack([np.stack([onset, low], 1), np.stack([offset, low], 1),
                     np.stack([offset, high], 1), np.stack([onset, high], 1)], axis=1)
