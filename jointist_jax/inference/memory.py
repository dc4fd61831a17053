"""A memory budget for whole-song inference: how many instruments go into one model call.

A song's inference holds three kinds of memory:

* what the process already holds when the song starts (runtime, weights, compiled programs, the
  song's samples): read from ``/proc/self/statm`` (:func:`process_rss_bytes`);
* the outputs of one group of instruments, which grow with the song and the group
  (:func:`output_bytes`): the group's stitched (g, T, 88) onset and frame posteriorgrams and
  (g, L) stems, finished over the whole song, decoded and written before the next group starts
  (:meth:`~jointist_jax.inference.predictor.Predictor.predict_groups`), plus one instrument's
  decoding temporaries. The outputs of the other instruments are on disk by then;
* one model call: a fixed part plus a part per instrument (:class:`GroupBytes`, measured from
  the compiled step's memory analysis, its temporaries times :data:`TEMP_FACTOR`, by the
  :class:`~jointist_jax.inference.predictor.Predictor`).

:func:`instruments_per_call` picks the largest group of instruments whose call and outputs fit
in what the budget leaves after the first. The default budget is what the process holds plus 90 %
of the machine's available memory (``MemAvailable`` of ``/proc/meminfo``; :func:`default_budget`).
"""

from __future__ import annotations

import dataclasses
import os
import re

MB = 1 << 20
# Share of the machine's available memory a default budget may take.
AVAILABLE_SHARE = 0.9
# Share of the budget left over as slack (allocator fragmentation, compiling a new call shape).
SLACK_SHARE = 0.08
# What a call's temporaries really take over what the compiled step's memory analysis reports:
# on the CPU backend the full-size joint model's peak RSS above the process before a call was
# 1.6x (1 instrument), 1.8x (2) and 1.9x (4) its ``temp_size_in_bytes`` (measured on a 2-core
# CPU, /proc/self/status VmHWM after resetting it).
TEMP_FACTOR = 2.0

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "M": MB, "MB": MB, "G": 1 << 30, "GB": 1 << 30}


class MemoryBudgetError(ValueError):
    """A budget too small for even one instrument per call."""


@dataclasses.dataclass(frozen=True)
class GroupBytes:
    """Bytes of something made for a group of g instruments (one model call, or the group's
    outputs over a song): ``fixed + g * per_instrument``."""

    fixed: int
    per_instrument: int

    def bytes_for(self, group: int) -> int:
        return self.fixed + group * self.per_instrument


def parse_size(text: str | int) -> int:
    """Bytes of ``4GB``, ``3500M``, ``512MB``, ``1.5G`` or a plain number of bytes (binary units)."""
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMG]?B?)\s*", str(text).upper())
        if not match:
            raise ValueError(f"memory_budget must be a size such as 4GB, 3500MB or a number of bytes, got {text!r}")
        value = int(float(match.group(1)) * _UNITS[match.group(2)])
    if value <= 0:
        raise ValueError(f"memory_budget must be positive, got {text!r}")
    return value


def _meminfo_bytes(field: str) -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name == field:
                    return int(rest.split()[0]) * 1024
    except OSError:
        pass
    return None


def available_bytes() -> int:
    """The machine's available memory (``MemAvailable``; free pages where there is no /proc)."""
    value = _meminfo_bytes("MemAvailable")
    if value is None:
        value = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return value


def process_rss_bytes() -> int:
    """The resident memory of this process now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def default_budget() -> int:
    """What this process holds plus :data:`AVAILABLE_SHARE` of the machine's available memory."""
    return process_rss_bytes() + int(AVAILABLE_SHARE * available_bytes())


def budget_of(text: str | None) -> int:
    """The budget of a ``--memory_budget`` flag: :func:`parse_size`, or :func:`default_budget` for None."""
    return default_budget() if text is None else parse_size(text)


def output_bytes(length: int, *, num_frames: int, transcribe: bool, separate: bool) -> GroupBytes:
    """A group's outputs over a song of ``length`` samples and ``num_frames`` frames: per
    instrument, its onset and frame posteriorgrams (float32, 88 keys) and its stem; fixed,
    decoding one instrument (:func:`jointist_jax.rolls.decode_note_frames`: two int32 and four
    boolean (T, 88) temporaries, 3 x one posteriorgram)."""
    posteriorgram = num_frames * 88 * 4 if transcribe else 0
    stem = length * 4 if separate else 0
    return GroupBytes(fixed=3 * posteriorgram, per_instrument=2 * posteriorgram + stem)


def instruments_per_call(budget: int, *, held: int, outputs: GroupBytes,
                         cost: GroupBytes, num_instruments: int) -> int:
    """The most instruments (at most ``num_instruments``) whose call and outputs fit in ``budget``
    bytes beside ``held`` (the process now) and a slack of :data:`SLACK_SHARE`.

    Raises:
      MemoryBudgetError: not even one instrument fits; the message gives each part in MB.
    """
    left = budget - int(SLACK_SHARE * budget) - held - cost.fixed - outputs.fixed
    group = min(num_instruments, left // max(cost.per_instrument + outputs.per_instrument, 1))
    if group < 1:
        raise MemoryBudgetError(
            f"memory_budget {budget / MB:.0f} MB is too small: the process holds {held / MB:.0f} MB, one "
            f"instrument's outputs over the song need {outputs.bytes_for(1) / MB:.0f} MB and one model call with "
            f"one instrument {cost.bytes_for(1) / MB:.0f} MB (+{SLACK_SHARE:.0%} slack); raise it, or use a "
            "shorter song or a smaller batch_windows")
    return int(group)
