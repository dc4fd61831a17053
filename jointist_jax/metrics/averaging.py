"""What every aggregate returns, and the three averaging schemes the paper reports.

Given one value per (song, class):

* ``source_wise``: the mean over all (song, class) pairs;
* ``piece_wise``: the mean over songs of each song's mean over its classes;
* ``instrument_wise``: for each class, the mean over the songs that contain it; then the
  unweighted mean over the classes that occur. The reference divides by the number of classes
  present, not by 39 as the paper's formula says (docs/reference.md §7.3, §9).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from jointist_jax import instruments

# What follows the name of a metric computed as the reference computes it, where ours differs
# (docs/deviations.md 18, 23, 24, 32).
PAPER_COMPAT = "_paper_compat"


@dataclasses.dataclass(frozen=True)
class MetricReport:
    """Scalars ready for TensorBoard and per-class values for bar charts.

    Attributes:
      scalars: metric name -> value (names are documented by the module that builds the report).
      per_class: metric name -> {class name -> value}.
    """

    scalars: dict[str, float]
    per_class: dict[str, dict[str, float]]

    def with_suffix(self, suffix: str) -> "MetricReport":
        """The same report with ``suffix`` after each metric's name, before any ``/average``:
        ``ir_f1/macro`` -> ``ir_f1_paper_compat/macro``, ``ap`` -> ``ap_paper_compat``."""

        def rename(name: str) -> str:
            metric, slash, average = name.partition("/")
            return metric + suffix + slash + average

        return MetricReport(scalars={rename(k): v for k, v in self.scalars.items()},
                            per_class={rename(k): v for k, v in self.per_class.items()})


def per_class_means(values: Sequence[Mapping[int, float]]) -> dict[int, float]:
    """Class index -> mean of its values over the songs (the entries of ``values``) that have it."""
    collected: dict[int, list[float]] = {}
    for song in values:
        for cls, value in song.items():
            collected.setdefault(cls, []).append(value)
    return {cls: float(np.mean(v)) for cls, v in sorted(collected.items())}


def song_class_means(values: Sequence[Mapping[int, float]]) -> dict[str, float]:
    """``source_wise``, ``piece_wise`` and ``instrument_wise`` means of per-(song, class) values.

    Songs without any value are left out of the piece-wise mean; an aggregate with nothing to
    average is left out of the result rather than reported as NaN.
    """
    out: dict[str, float] = {}
    every = [v for song in values for v in song.values()]
    if every:
        out["source_wise"] = float(np.mean(every))
        out["piece_wise"] = float(np.mean([np.mean(list(song.values())) for song in values if song]))
        out["instrument_wise"] = float(np.mean(list(per_class_means(values).values())))
    return out


def by_class_name(values: Mapping[int, float]) -> dict[str, float]:
    """Re-keys a class-index mapping by class name, for charts."""
    return {instruments.CLASS_NAMES[cls]: value for cls, value in values.items()}
