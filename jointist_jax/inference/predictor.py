"""Whole-song inference: recognizer, transcriber and separator over batched 10-s windows.

A song is cut into fixed windows (:mod:`jointist_jax.inference.windows`), processed
``batch_windows`` windows at a time, and the outputs are stitched batch by batch with the centre
rule. The last batch is padded with silent windows, so the compiled function has one input shape
per group size whatever the song's length. The K requested instruments go in groups
(:meth:`Predictor.instrument_groups`): all K in one group without limits, at most
``max_rows // batch_windows`` with ``max_rows``, and with ``memory_budget`` (bytes for the whole
process) the most whose call and outputs fit beside what the process holds, from the memory
analysis of the step compiled for one and two instruments (:mod:`jointist_jax.inference.memory`).
The last group is padded by repeating its first instrument, so at most two shapes are compiled.

Groups are the outer loop and windows the inner one (:meth:`Predictor.predict_groups`): each
group's outputs are finished over the whole song and handed over before the next group starts,
so a caller that writes and frees them holds one group's outputs, not the song's; the windows
are cut batch by batch from the waveform, never all at once. The shared front end (log-mel) is
recomputed per group; each window's instruments of a group share it in one call.

A standalone separator (the ``separation`` stage's `S` baseline) reads no posteriorgram; its
predictions carry stems only.

Each window's separator reads that window's own frame posteriorgram (the reference stitched
the whole song's posteriorgram first and cut it again into windows; docs/reference.md §6.2).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jointist_jax import audio, instruments
from jointist_jax.inference import memory
from jointist_jax.inference.windows import WindowSpec, stitch_into, window_range
from jointist_jax.models.jointist import Jointist, instrument_probabilities
from jointist_jax.models.recognizer import Recognizer
from jointist_jax.models.separator import Separator
from jointist_jax.models.transcriber import Transcriber

ProgressFn = Callable[[int], None]


@dataclasses.dataclass
class SongPrediction:
    """Stitched outputs for one song and K instruments (or one group of them).

    Attributes:
      class_ids: the K class indices, in the order of the leading axis.
      reg_onset_output, frame_output: (K, T, 88) float32 posteriorgrams, T = floor(L/160) + 1;
        None for a standalone separator, which does not transcribe.
      waveform: (K, L) float32 separated stems, or None without separation.
    """

    class_ids: list[int]
    reg_onset_output: np.ndarray | None
    frame_output: np.ndarray | None
    waveform: np.ndarray | None = None


def _batches(waveform: np.ndarray, spec: WindowSpec, batch: int):
    """(first index, count, padded batch) triples over a song's windows; the last batch is
    padded with silent windows."""
    n = spec.num_windows(waveform.shape[0])
    for first in range(0, n, batch):
        count = min(batch, n - first)
        yield first, count, window_range(waveform, spec, first, count, rows=batch)


def check_batching(batch_windows: int, max_rows: int | None) -> None:
    """Raises ValueError (naming the argument first) unless ``batch_windows`` >= 1 and
    ``max_rows`` is None (no limit) or at least ``batch_windows``."""
    if batch_windows < 1:
        raise ValueError(f"batch_windows must be >= 1, got {batch_windows}")
    if max_rows is not None and max_rows < batch_windows:
        raise ValueError(f"max_rows must be at least batch_windows ({batch_windows}), or no limit; got {max_rows}")


class Predictor:
    """Runs a trained transcriber (optionally with a separator and a recognizer) on whole songs.

    Args:
      model: a :class:`Transcriber`, a :class:`Jointist` (transcriber + optional separator), a
        standalone :class:`Separator`, in eval mode, or None for a recognizer alone.
      recognizer: a :class:`Recognizer` for automatic instrument selection, or None.
      batch_windows: windows per compiled call.
      max_rows: at most this many (window, instrument) rows per call, or None for all K
        instruments in one call (memory grows with batch_windows x K).
      memory_budget: bytes this process may use in all (see :mod:`jointist_jax.inference.memory`):
        each song's rows per call are the most that fit, and at most ``max_rows``; None for no budget.
      spec: window geometry.
      compiler_options: XLA compile options for every program the predictor compiles (e.g.
        :data:`jointist_jax.xla_flags.INFERENCE_COMPILER_OPTIONS`); they override the process's
        ``XLA_FLAGS`` for these programs alone. None: ``XLA_FLAGS`` as they are.

    ``rows_per_call`` holds the rows per call of the last :meth:`predict`.
    """

    def __init__(self, model: Transcriber | Jointist | Separator | None, *, recognizer: Recognizer | None = None,
                 batch_windows: int = 2, max_rows: int | None = None, memory_budget: int | None = None,
                 spec: WindowSpec = WindowSpec(), compiler_options: dict | None = None):
        check_batching(batch_windows, max_rows)
        if memory_budget is not None and memory_budget <= 0:
            raise ValueError(f"memory_budget must be positive bytes or None, got {memory_budget}")
        if isinstance(model, Jointist):
            transcriber, separator = model.transcriber, model.separator
            if recognizer is None:
                recognizer = model.recognizer
        elif isinstance(model, Transcriber):
            transcriber, separator = model, None
        elif isinstance(model, Separator) and model.mode == "standalone":
            transcriber, separator = None, model
        elif model is None and recognizer is not None:
            transcriber, separator = None, None
        else:
            raise TypeError("Predictor needs a Transcriber, a Jointist, a standalone Separator or (alone) a "
                            "recognizer, got "
                            f"{type(model).__name__}" + (f" in {model.mode!r} mode" if isinstance(model, Separator)
                                                          else ""))
        if recognizer is not None and not isinstance(recognizer, Recognizer):
            raise TypeError(f"recognizer must be a Recognizer, got {type(recognizer).__name__}")
        self.batch_windows = batch_windows
        self.max_rows = max_rows
        self.memory_budget = memory_budget
        self.rows_per_call: int | None = None
        self.spec = spec
        options = None if compiler_options is None else dict(compiler_options)
        self._executables = {}
        self.can_transcribe = transcriber is not None
        self.can_separate = separator is not None
        self.can_recognize = recognizer is not None
        if transcriber is not None:
            self._model = Jointist(recognizer=None, transcriber=transcriber, separator=separator)
        else:
            self._model = separator
        if self._model is not None:
            self._model.eval()
            graphdef, self._state = nnx.split(self._model)

        def run(state, windows, conditions, separate: bool):
            model = nnx.merge(graphdef, state, copy=True)
            if isinstance(model, Separator):
                return {"waveform": model(windows, conditions)["waveform"]}
            if separate:
                return model.transcribe_and_separate(windows, conditions)
            return model.transcriber(audio.log_mel(windows), conditions)

        if self._model is not None:
            self._run = jax.jit(run, static_argnames="separate", compiler_options=options)
        if recognizer is not None:
            recognizer.eval()
            ir_graphdef, self._ir_state = nnx.split(recognizer)

            def recognize(state, windows):
                return instrument_probabilities(nnx.merge(ir_graphdef, state, copy=True), windows)

            self._recognize = jax.jit(recognize, compiler_options=options)

    def _executable(self, separate: bool, group: int):
        """The step compiled for ``batch_windows`` windows x ``group`` instruments (cached)."""
        key = (separate, group)
        if key not in self._executables:
            windows = jax.ShapeDtypeStruct((self.batch_windows, self.spec.window), jnp.float32)
            conditions = jax.ShapeDtypeStruct((self.batch_windows, group, instruments.CONDITION_SIZE), jnp.float32)
            self._executables[key] = self._run.lower(self._state, windows, conditions, separate=separate).compile()
        return self._executables[key]

    def call_cost(self, separate: bool, num_instruments: int) -> memory.GroupBytes:
        """Bytes of one call (XLA's temporaries times :data:`~jointist_jax.inference.memory.TEMP_FACTOR`
        plus the outputs twice: device buffers and host copies), from the memory analysis of the
        step compiled for 1 and 2 instruments (small, quick compilations); for a single
        instrument, all of its call counts per instrument."""
        sizes = []
        for group in range(1, min(num_instruments, 2) + 1):
            analysis = self._executable(separate, group).memory_analysis()
            if analysis is None:
                raise memory.MemoryBudgetError(f"the {jax.default_backend()} backend reports no memory analysis; "
                                               "give max_rows instead of a memory budget")
            sizes.append(int(memory.TEMP_FACTOR * analysis.temp_size_in_bytes) + 2 * analysis.output_size_in_bytes)
        if len(sizes) == 1:
            return memory.GroupBytes(fixed=0, per_instrument=sizes[0])
        per_instrument = max(sizes[1] - sizes[0], 1)
        return memory.GroupBytes(fixed=max(sizes[0] - per_instrument, 0), per_instrument=per_instrument)

    def instruments_per_call(self, length: int, num_instruments: int, separate: bool) -> int:
        """Instruments per call for a song of ``length`` samples: from ``memory_budget`` (with what
        the process holds now, and one group's outputs) and ``max_rows``, or all of them without either."""
        group = num_instruments
        if self.max_rows is not None:
            group = max(1, min(group, self.max_rows // self.batch_windows))
        if self.memory_budget is not None:
            outputs = memory.output_bytes(length, num_frames=self.spec.num_frames(length),
                                         transcribe=self.can_transcribe, separate=separate)
            group = min(group, memory.instruments_per_call(
                self.memory_budget, held=memory.process_rss_bytes(), outputs=outputs,
                cost=self.call_cost(separate, num_instruments), num_instruments=num_instruments))
        return group

    def instrument_groups(self, length: int, class_ids: Sequence[int], separate: bool) -> list[list[int]]:
        """The groups of ``class_ids`` (in order) that go into one call each, for a song of
        ``length`` samples (:meth:`instruments_per_call`); sets :attr:`rows_per_call`."""
        class_ids = [int(c) for c in class_ids]
        if not class_ids:
            raise ValueError("predict needs at least one instrument class")
        size = self.instruments_per_call(length, len(class_ids), separate)
        self.rows_per_call = size * self.batch_windows
        return [class_ids[first:first + size] for first in range(0, len(class_ids), size)]

    def recognize(self, waveform: np.ndarray, progress: ProgressFn | None = None) -> np.ndarray:
        """Per-window instrument probabilities (N, 39) of a mono 16-kHz song (L,)."""
        if not self.can_recognize:
            raise ValueError("this Predictor has no recognizer")
        waveform = np.asarray(waveform, np.float32)
        out = np.zeros((self.spec.num_windows(waveform.shape[0]), instruments.NUM_CLASSES), np.float32)
        for first, count, chunk in _batches(waveform, self.spec, self.batch_windows):
            out[first:first + count] = np.asarray(self._recognize(self._ir_state, jnp.asarray(chunk)))[:count]
            if progress is not None:
                progress(count)
        return out

    def _check_can_predict(self, separate: bool) -> None:
        if separate and not self.can_separate:
            raise ValueError("this model has no separator: it cannot separate")
        if not (self.can_separate or self.can_transcribe):
            raise ValueError("this Predictor has a recognizer only: it can neither transcribe nor separate")
        if not (separate or self.can_transcribe):
            raise ValueError("this model is a standalone separator: call predict with separate=True")

    def predict_groups(self, waveform: np.ndarray, groups: Sequence[Sequence[int]], *, separate: bool = False,
                       progress: ProgressFn | None = None) -> Iterator[SongPrediction]:
        """The stitched outputs of each group of :meth:`instrument_groups` in turn, each over the
        whole song before the next group starts (a consumer that frees them holds one group's
        outputs); ``progress`` gets the windows of each call (``len(groups)`` x N in all)."""
        self._check_can_predict(separate)
        waveform = np.asarray(waveform, np.float32)
        size = max(len(group) for group in groups)
        for group in groups:
            yield self._predict_group(waveform, [int(c) for c in group], size, separate, progress)

    def _predict_group(self, waveform: np.ndarray, group: list[int], size: int, separate: bool,
                       progress: ProgressFn | None) -> SongPrediction:
        """One group's outputs over every window; the group is padded to ``size`` instruments
        (the compiled shape) by repeating its first."""
        spec, real = self.spec, len(group)
        length = waveform.shape[0]
        n = spec.num_windows(length)
        one_hot = instruments.condition_one_hot(group + [group[0]] * (size - real))
        conditions = jnp.asarray(np.broadcast_to(one_hot, (self.batch_windows,) + one_hot.shape))
        total_frames = spec.num_frames(length)
        onset = np.zeros((real, total_frames, 88), np.float32) if self.can_transcribe else None
        frame = np.zeros((real, total_frames, 88), np.float32) if self.can_transcribe else None
        stems = np.zeros((real, length), np.float32) if separate else None
        step = self._executable(separate, size)
        for first, count, chunk in _batches(waveform, spec, self.batch_windows):
            outputs = jax.device_get(step(self._state, jnp.asarray(chunk), conditions))
            for j in range(count):
                i = first + j
                if self.can_transcribe:
                    stitch_into(onset, outputs["reg_onset_output"][j, :real], i, n, spec.frames_per_hop,
                                axis=1, margin=spec.frames_per_margin)
                    stitch_into(frame, outputs["frame_output"][j, :real], i, n, spec.frames_per_hop,
                                axis=1, margin=spec.frames_per_margin)
                if separate:
                    stitch_into(stems, outputs["waveform"][j, :real], i, n, spec.hop, axis=1, margin=spec.margin)
            del outputs
            if progress is not None:
                progress(count)
        return SongPrediction(class_ids=group, reg_onset_output=onset, frame_output=frame, waveform=stems)

    def predict(self, waveform: np.ndarray, class_ids: Sequence[int], *, separate: bool = False,
                progress: ProgressFn | None = None) -> SongPrediction:
        """Stitched posteriorgrams (and stems with ``separate``) of a mono 16-kHz song (L,), every
        group joined: it holds the outputs of all K instruments (short songs, the evaluation; a
        long song's writer uses :meth:`predict_groups`)."""
        self._check_can_predict(separate)
        waveform = np.asarray(waveform, np.float32)
        groups = self.instrument_groups(waveform.shape[0], class_ids, separate)
        return join_predictions(list(self.predict_groups(waveform, groups, separate=separate, progress=progress)))


def join_predictions(parts: Sequence[SongPrediction]) -> SongPrediction:
    """One :class:`SongPrediction` of the groups ``parts`` (instruments in their order)."""
    if len(parts) == 1:
        return parts[0]

    def joined(name):
        arrays = [getattr(p, name) for p in parts]
        return None if arrays[0] is None else np.concatenate(arrays)

    return SongPrediction(class_ids=[c for p in parts for c in p.class_ids],
                          reg_onset_output=joined("reg_onset_output"), frame_output=joined("frame_output"),
                          waveform=joined("waveform"))
