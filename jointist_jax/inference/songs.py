"""One song, end to end: which instruments, then posteriorgrams (and stems) and decoded notes.

The one song-level path of ``jointist-transcribe`` (:mod:`jointist_jax.inference.cli`) and of the
evaluation (:mod:`jointist_jax.evaluation.runner`):

1. :func:`choose_instruments`: the recognizer's per-window probabilities, thresholded and
   aggregated over the song's windows (docs/deviations.md 19); a song where it detects nothing
   gets all 39 classes, as the reference does (docs/reference.md §6.1).
2. :func:`decoded_groups`: the :class:`~jointist_jax.inference.predictor.Predictor` over the
   song's windows, one group of instruments at a time, then onset-gated decoding of each
   instrument's posteriorgram; :func:`transcribe_into` hands each group to a
   :class:`~jointist_jax.inference.outputs.SongWriter` and frees it before the next (bounded
   memory for any number of instruments), :func:`predict_and_decode` keeps every group (the
   evaluation scores the posteriorgrams).

:class:`SongOptions` holds the options of both steps and is the one place they are checked
(the decoding thresholds through :class:`~jointist_jax.rolls.DecodeOptions`,
the batching through :func:`~jointist_jax.inference.predictor.check_batching`).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Literal, Protocol, Sequence

import numpy as np

from jointist_jax import instruments, rolls
from jointist_jax.inference import outputs
from jointist_jax.inference.predictor import Predictor, SongPrediction, check_batching, join_predictions
from jointist_jax.inference.windows import WindowSpec
from jointist_jax.models.jointist import select_instruments
from jointist_jax.music import Notes

AGGREGATES = ("any", "mean")


@dataclasses.dataclass(frozen=True)
class SongOptions:
    """How a song is processed (defaults: the reference's thresholds).

    Attributes:
      batch_windows, max_rows: :class:`Predictor` batching (windows per call; at most this many
        window x instrument rows per call, None for no limit).
      memory_budget: bytes the process may use in all; the rows per call are the most that fit
        (:mod:`jointist_jax.inference.memory`; None: no budget).
      onset_threshold, frame_threshold, min_note_frames: note decoding (docs/reference.md §7.1).
      ir_threshold, ir_aggregate: the recognizer's decision over a song's windows
        (docs/deviations.md 19).
      window_hop: samples between the starts of consecutive 10-s windows: 80000 (5 s, 50 %
        overlap, the reference's) up to 160000 (no overlap: about half the windows of a long
        song, docs/deviations.md 38).

    Every message of a bad value starts with the field's name.
    """

    batch_windows: int = 2
    max_rows: int | None = 16
    memory_budget: int | None = None
    onset_threshold: float = rolls.DEFAULT_THRESHOLD
    frame_threshold: float = rolls.DEFAULT_THRESHOLD
    min_note_frames: int = 1
    ir_threshold: float = 0.5
    ir_aggregate: Literal["any", "mean"] = "any"
    window_hop: int = WindowSpec.hop

    def __post_init__(self):
        check_batching(self.batch_windows, self.max_rows)
        if self.memory_budget is not None and self.memory_budget <= 0:
            raise ValueError(f"memory_budget must be positive, got {self.memory_budget}")
        self.decode_options()  # checks the decoding thresholds and min_note_frames
        if not 0.0 <= self.ir_threshold < 1.0:
            raise ValueError(f"ir_threshold must be in [0, 1), got {self.ir_threshold}")
        if self.ir_aggregate not in AGGREGATES:
            raise ValueError(f"ir_aggregate must be 'any' or 'mean', got {self.ir_aggregate!r}")
        try:
            self.window_spec()
        except ValueError as error:
            raise ValueError(f"window_hop must give a valid window geometry: {error}") from None

    def window_spec(self) -> WindowSpec:
        """The song's window geometry."""
        return WindowSpec(hop=self.window_hop)

    def decode_options(self) -> rolls.DecodeOptions:
        """The decoding part of the options."""
        return rolls.DecodeOptions(onset_threshold=self.onset_threshold,
                                         frame_threshold=self.frame_threshold,
                                         min_note_frames=self.min_note_frames)


@dataclasses.dataclass(frozen=True)
class InstrumentChoice:
    """The recognizer's instruments for one song.

    Attributes:
      classes: the class indices to transcribe or separate: ``detected``, or all 39 classes when
        the recognizer detected none.
      detected: the class indices the recognizer detected (possibly none).
      window_probabilities: (N, 39) float32 per-window probabilities.
    """

    classes: list[int]
    detected: list[int]
    window_probabilities: np.ndarray

    @property
    def detected_none(self) -> bool:
        """True where the recognizer detected nothing and every class is processed."""
        return not self.detected


class Progress(Protocol):
    """Where a song stands: a stage of ``windows`` window calls starts; calls of ``windows`` are done."""

    def start(self, stage: str, windows: int) -> None: ...

    def advance(self, windows: int) -> None: ...


@dataclasses.dataclass(frozen=True)
class SongOutput:
    """One song's predictions.

    Attributes:
      prediction: stitched posteriorgrams (and stems) of the instruments asked for.
      notes: class index -> decoded notes; empty for a model that does not transcribe.
    """

    prediction: SongPrediction
    notes: dict[int, Notes]


def make_predictor(model, recognizer, options: SongOptions) -> Predictor:
    """The :class:`Predictor` of a loaded run (and recognizer) batched as ``options`` say."""
    return Predictor(model, recognizer=recognizer, batch_windows=options.batch_windows, max_rows=options.max_rows,
                     memory_budget=options.memory_budget, spec=options.window_spec())


def choose_instruments(predictor: Predictor, waveform: np.ndarray, options: SongOptions = SongOptions(),
                       progress: Progress | None = None) -> InstrumentChoice:
    """The instruments the recognizer of ``predictor`` hears in a mono 16-kHz song (L,)."""
    advance = None
    if progress is not None:
        progress.start("recognizing the instruments", predictor.spec.num_windows(len(waveform)))
        advance = progress.advance
    probabilities = predictor.recognize(waveform, advance)
    detected = select_instruments(probabilities, threshold=options.ir_threshold, aggregate=options.ir_aggregate)
    classes = list(detected) if detected else list(range(instruments.NUM_CLASSES))
    return InstrumentChoice(classes=classes, detected=detected, window_probabilities=probabilities)


def stage_name(predictor: Predictor, separate: bool) -> str:
    """``transcribing and separating``, ``transcribing`` or ``separating``."""
    return " and ".join(["transcribing"] * predictor.can_transcribe + ["separating"] * separate)


def decoded_groups(predictor: Predictor, waveform: np.ndarray, class_ids: Sequence[int],
                   options: SongOptions = SongOptions(), *, separate: bool = False,
                   progress: Progress | None = None) -> Iterator[SongOutput]:
    """Posteriorgrams (and stems with ``separate``) and notes of a song, one group of
    ``class_ids`` at a time (:meth:`~jointist_jax.inference.predictor.Predictor.instrument_groups`)."""
    groups = predictor.instrument_groups(len(waveform), class_ids, separate)
    advance = None
    if progress is not None:
        progress.start(stage_name(predictor, separate), len(groups) * predictor.spec.num_windows(len(waveform)))
        advance = progress.advance
    for prediction in predictor.predict_groups(waveform, groups, separate=separate, progress=advance):
        notes = {}
        if predictor.can_transcribe:
            notes = rolls.decode_instruments(prediction.reg_onset_output, prediction.frame_output,
                                             prediction.class_ids, options.decode_options())
        yield SongOutput(prediction=prediction, notes=notes)
        del prediction, notes  # before the next group is computed


def predict_and_decode(predictor: Predictor, waveform: np.ndarray, class_ids: Sequence[int],
                       options: SongOptions = SongOptions(), *, separate: bool = False,
                       progress: Progress | None = None) -> SongOutput:
    """Posteriorgrams (and stems with ``separate``) of ``class_ids`` in a song, and their notes,
    every group kept (memory grows with the instruments; :func:`transcribe_into` does not)."""
    parts = list(decoded_groups(predictor, waveform, class_ids, options, separate=separate, progress=progress))
    return SongOutput(prediction=join_predictions([p.prediction for p in parts]),
                      notes={c: n for p in parts for c, n in p.notes.items()})


def transcribe_into(writer: outputs.SongWriter, predictor: Predictor, waveform: np.ndarray,
                    class_ids: Sequence[int], options: SongOptions = SongOptions(), *, separate: bool = False,
                    progress: Progress | None = None) -> dict[int, Notes]:
    """Each group's outputs of a song handed to ``writer`` and freed before the next group
    starts; returns every instrument's notes (for ``writer.finish``)."""
    notes = {}
    for part in decoded_groups(predictor, waveform, class_ids, options, separate=separate, progress=progress):
        writer.add(part.prediction)
        notes.update(part.notes)
        del part  # before the next group is computed
    return notes
