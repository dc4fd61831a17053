"""PNG bar charts for evaluation reports, one bar per instrument.

The reports' reference-vs-prediction piano rolls come from
:func:`jointist_jax.inference.pianoroll_png.pianoroll_png`.

Matplotlib's object-oriented Agg canvas only (no pyplot global state), so it is safe in any
process. Each function returns the PNG's bytes.
"""

from __future__ import annotations

import io
from typing import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


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
