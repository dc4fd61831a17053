"""The audio rate, the piano-roll grid and the one note-list type of the project.

Constants (docs/reference.md §1.1, §4.4, §7.1):

* ``SAMPLE_RATE``: 16 kHz, the rate of every waveform the models read or write;
* ``FRAMES_PER_SECOND``: 100 piano-roll / posteriorgram frames per second, so one frame is
  ``HOP_SAMPLES = 160`` samples (the log-mel hop);
* ``LOWEST_MIDI_NOTE``, ``NUM_PITCHES``: the 88 piano keys, key 0 = MIDI 21 (A0);
* ``DEFAULT_VELOCITY``: 100, the velocity of every decoded note.

:class:`Notes` is a value type: parallel 1-D arrays of onsets and offsets (seconds), MIDI
pitches, velocities and, for a whole song's labels, the instrument class of each note
(``jointist_jax.instruments``). Every part of the project that holds notes holds one of these:
the dataset's labels, the decoder's output, the metrics' inputs, the MIDI/JSON/PNG writers.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Sequence

import numpy as np

from jointist_jax import instruments

SAMPLE_RATE = 16000
FRAMES_PER_SECOND = 100
HOP_SAMPLES = SAMPLE_RATE // FRAMES_PER_SECOND
LOWEST_MIDI_NOTE = 21  # piano key 0 is A0
NUM_PITCHES = 88
DEFAULT_VELOCITY = 100

_FIELDS = ("onsets", "offsets", "pitches", "velocities")


def _as_1d(name: str, values, dtype) -> np.ndarray:
    array = np.asarray(values, dtype=dtype)
    if array.ndim != 1:
        raise ValueError(f"Notes.{name}: expected a 1-D array, got shape {array.shape}")
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class Notes:
    """Notes as parallel 1-D arrays; equal when every array is equal.

    Attributes:
      onsets: float64 (M,) note start times in seconds, >= 0.
      offsets: float64 (M,) note end times, >= onsets.
      pitches: int32 (M,) MIDI pitches in 0..127.
      velocities: int32 (M,) MIDI velocities; ``None`` gives ``DEFAULT_VELOCITY`` everywhere.
      classes: int32 (M,) class index of each note (0..38), or ``None`` for the notes of one
        instrument.
    """

    onsets: np.ndarray
    offsets: np.ndarray
    pitches: np.ndarray
    velocities: np.ndarray | None = None
    classes: np.ndarray | None = None

    def __post_init__(self):
        onsets = _as_1d("onsets", self.onsets, np.float64)
        offsets = _as_1d("offsets", self.offsets, np.float64)
        raw_pitches = _as_1d("pitches", self.pitches, np.float64)
        n = len(onsets)
        velocities = (np.full(n, DEFAULT_VELOCITY, np.float64) if self.velocities is None
                      else _as_1d("velocities", self.velocities, np.float64))
        columns = [("offsets", offsets), ("pitches", raw_pitches), ("velocities", velocities)]
        classes = None
        if self.classes is not None:
            classes = _as_1d("classes", self.classes, np.int64)
            columns.append(("classes", classes))
        for name, array in columns:
            if len(array) != n:
                raise ValueError(f"Notes.{name}: expected {n} entries like onsets, got {len(array)}")
        if not (np.all(np.isfinite(onsets)) and np.all(np.isfinite(offsets))):
            raise ValueError("Notes.onsets/offsets: expected finite times")
        if np.any(onsets < 0):
            raise ValueError(f"Notes.onsets: expected times >= 0, got minimum {onsets.min()}")
        if np.any(offsets < onsets):
            bad = int(np.argmax(offsets < onsets))
            raise ValueError(f"Notes.offsets: note {bad} ends ({offsets[bad]}) before it starts ({onsets[bad]})")
        if np.any(raw_pitches != np.round(raw_pitches)) or np.any((raw_pitches < 0) | (raw_pitches > 127)):
            raise ValueError(f"Notes.pitches: expected integer MIDI pitches in 0..127, got {raw_pitches.tolist()}")
        if classes is not None and np.any((classes < 0) | (classes >= instruments.NUM_CLASSES)):
            raise ValueError(f"Notes.classes: expected class indices 0..{instruments.NUM_CLASSES - 1}, got "
                             f"{sorted(set(classes.tolist()))}")
        object.__setattr__(self, "onsets", onsets)
        object.__setattr__(self, "offsets", offsets)
        object.__setattr__(self, "pitches", raw_pitches.astype(np.int32))
        object.__setattr__(self, "velocities", velocities.astype(np.int32))
        object.__setattr__(self, "classes", None if classes is None else classes.astype(np.int32))

    def __len__(self) -> int:
        return len(self.onsets)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Notes):
            return NotImplemented
        if (self.classes is None) != (other.classes is None):
            return False
        names = _FIELDS if self.classes is None else _FIELDS + ("classes",)
        return all(np.array_equal(getattr(self, name), getattr(other, name)) for name in names)

    def __repr__(self) -> str:
        classes = "" if self.classes is None else f", classes={self.classes.tolist()}"
        return (f"Notes(onsets={self.onsets.tolist()}, offsets={self.offsets.tolist()}, "
                f"pitches={self.pitches.tolist()}, velocities={self.velocities.tolist()}{classes})")

    def _select(self, sel) -> "Notes":
        return Notes(self.onsets[sel], self.offsets[sel], self.pitches[sel], self.velocities[sel],
                     None if self.classes is None else self.classes[sel])

    @classmethod
    def empty(cls) -> "Notes":
        """A note list with no notes."""
        return cls(np.zeros(0), np.zeros(0), np.zeros(0, np.int32))

    @classmethod
    def from_frames(cls, onset_frames, offset_frames, keys,
                    frames_per_second: float = FRAMES_PER_SECOND) -> "Notes":
        """Notes of piano-roll coordinates: times ``frame / frames_per_second``, pitch
        ``key + LOWEST_MIDI_NOTE``, velocity ``DEFAULT_VELOCITY``."""
        return cls(onsets=np.asarray(onset_frames) / frames_per_second,
                   offsets=np.asarray(offset_frames) / frames_per_second,
                   pitches=np.asarray(keys) + LOWEST_MIDI_NOTE)

    @classmethod
    def from_events(cls, events: Iterable[Mapping[str, float]]) -> "Notes":
        """Notes of event dicts (``onset_time``, ``offset_time``, ``midi_note``, optional ``velocity``
        defaulting to 100): the reference post-processor's format (docs/reference.md §7.1) and the
        ``notes`` of a transcription's ``notes.json``; the inverse of :meth:`to_events`."""
        events = list(events)
        for i, event in enumerate(events):
            missing = {"onset_time", "offset_time", "midi_note"} - set(event)
            if missing:
                raise ValueError(f"note event {i}: missing field(s) {sorted(missing)}")
        return cls(onsets=[e["onset_time"] for e in events], offsets=[e["offset_time"] for e in events],
                   pitches=[e["midi_note"] for e in events],
                   velocities=[e.get("velocity", DEFAULT_VELOCITY) for e in events])

    def to_events(self) -> list[dict]:
        """One JSON-able dict per note: ``onset_time``, ``offset_time`` (seconds), ``midi_note``, ``velocity``."""
        return [{"onset_time": float(on), "offset_time": float(off), "midi_note": int(p), "velocity": int(v)}
                for on, off, p, v in zip(self.onsets, self.offsets, self.pitches, self.velocities)]

    def of_class(self, cls: int) -> "Notes":
        """The notes of class ``cls`` (classes kept); needs ``classes``."""
        if self.classes is None:
            raise ValueError("Notes.of_class: these notes carry no classes")
        return self._select(self.classes == cls)

    def by_class(self) -> dict[int, "Notes"]:
        """``{class: notes of that class}`` (without ``classes``), for each class with a note, ascending."""
        if self.classes is None:
            raise ValueError("Notes.by_class: these notes carry no classes")
        return {int(cls): dataclasses.replace(self.of_class(cls), classes=None) for cls in np.unique(self.classes)}

    def transposed(self, semitones: int) -> "Notes":
        """The notes moved by ``semitones``, pitches clipped to 0..127."""
        return dataclasses.replace(self, pitches=np.clip(self.pitches.astype(np.int64) + semitones, 0, 127))

    def longer_than(self, min_duration: float) -> "Notes":
        """The notes lasting at least ``min_duration`` seconds."""
        return self._select(self.offsets - self.onsets >= min_duration)


def concatenate(parts: Sequence[Notes]) -> Notes:
    """All notes of ``parts`` in one list, in order; classes are kept only if every part has them."""
    if not parts:
        return Notes.empty()
    with_classes = all(p.classes is not None for p in parts)
    return Notes(*(np.concatenate([getattr(p, name) for p in parts]) for name in _FIELDS),
                 classes=np.concatenate([p.classes for p in parts]) if with_classes else None)
