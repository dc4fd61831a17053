"""PNG images for evaluation reports: per-instrument bars and reference-vs-prediction piano rolls.

Matplotlib's object-oriented Agg canvas only (no pyplot global state), so it is safe in any
process. Each function returns the PNG's bytes.
"""

from __future__ import annotations

import io
from typing import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from jointist_jax import instruments
from jointist_jax.metrics import Notes
from jointist_jax.inference.postprocess import Note

_REFERENCE_COLOUR = "0.7"
_PREDICTED_COLOUR = "C3"


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def bar_chart_png(values: Mapping[str, float], *, title: str, ylabel: str) -> bytes:
    """One bar per instrument (in the given order), its value written above it."""
    names = list(values)
    figure = Figure(figsize=(max(4.0, 0.45 * len(names) + 1.5), 4.0))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    heights = [float(values[n]) for n in names]
    bars = axes.bar(np.arange(len(names)), heights, color="C0")
    axes.bar_label(bars, labels=[f"{h:.2f}" for h in heights], fontsize=7)
    axes.set_xticks(np.arange(len(names)), names, rotation=60, ha="right", fontsize=8)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.axhline(0.0, color="black", linewidth=0.6)
    figure.tight_layout()
    return _png(figure)


def _boxes(onsets, offsets, pitches) -> list[np.ndarray]:
    return [np.array([[on, p - 0.4], [max(off, on + 0.01), p - 0.4], [max(off, on + 0.01), p + 0.4],
                      [on, p + 0.4]]) for on, off, p in zip(onsets, offsets, pitches)]


def pianoroll_comparison_png(reference: Mapping[int, Notes], predicted: Mapping[int, list[Note]], *,
                             duration: float, title: str = "") -> bytes:
    """One panel per instrument of the reference or the prediction: reference notes as grey
    boxes, predicted notes as red outlines on top (x: seconds, y: MIDI pitch)."""
    class_ids = sorted(set(reference) | set(predicted))
    panels = max(len(class_ids), 1)
    figure = Figure(figsize=(12, 0.8 + 1.6 * panels))
    FigureCanvasAgg(figure)
    axes = figure.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    for ax, cls in zip(axes, class_ids):
        ref = reference.get(cls, Notes.empty())
        est = predicted.get(cls, [])
        ref_boxes = _boxes(ref.onsets, ref.offsets, ref.pitches)
        est_boxes = _boxes([n.onset_time for n in est], [n.offset_time for n in est], [n.midi_note for n in est])
        ax.add_collection(PolyCollection(ref_boxes, facecolors=_REFERENCE_COLOUR, edgecolors="none"))
        ax.add_collection(PolyCollection(est_boxes, facecolors="none", edgecolors=_PREDICTED_COLOUR,
                                         linewidths=0.8))
        pitches = list(ref.pitches) + [n.midi_note for n in est]
        low, high = (min(pitches) - 2, max(pitches) + 2) if pitches else (20, 109)
        ax.set_ylim(low, high)
        ax.set_ylabel(f"{instruments.CLASS_NAMES[cls]}\n{len(ref)} ref / {len(est)} pred", fontsize=8)
    axes[-1].set_xlim(0, max(duration, 1e-3))
    axes[-1].set_xlabel("seconds")
    figure.suptitle(title + "  (grey: reference, red: prediction)", fontsize=10)
    figure.tight_layout()
    return _png(figure)
