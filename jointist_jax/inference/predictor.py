"""Whole-song inference: recognizer, transcriber and separator over batched 10-s windows.

A song is cut into fixed windows (:mod:`jointist_jax.inference.windows`), processed
``batch_windows`` windows at a time with all K requested instruments in the same call (the
window's log-mel is computed once and shared by its K conditions), and the outputs are stitched
batch by batch with the centre rule. The last batch is padded with silent windows, so the
compiled function has one input shape per K whatever the song's length.

Each window's separator reads that window's own frame posteriorgram (the reference stitched
the whole song's posteriorgram first and cut it again into windows; REFERENCE §6.2).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jointist_jax import audio, instruments
from jointist_jax.inference.windows import WindowSpec, split_windows, stitch_into
from jointist_jax.models.jointist import Jointist, select_instruments
from jointist_jax.models.recognizer import Recognizer
from jointist_jax.models.transcriber import Transcriber

ProgressFn = Callable[[int], None]


@dataclasses.dataclass
class SongPrediction:
    """Stitched outputs for one song and K instruments.

    Attributes:
      class_ids: the K class indices, in the order of the leading axis.
      reg_onset_output, frame_output: (K, T, 88) float32 posteriorgrams, T = floor(L/160) + 1.
      waveform: (K, L) float32 separated stems, or None without separation.
    """

    class_ids: list[int]
    reg_onset_output: np.ndarray
    frame_output: np.ndarray
    waveform: np.ndarray | None = None


def _batches(windows: np.ndarray, batch: int):
    """(first index, count, padded batch) triples; the last batch is padded with silent windows."""
    for first in range(0, windows.shape[0], batch):
        chunk = windows[first:first + batch]
        count = chunk.shape[0]
        if count < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - count,) + chunk.shape[1:], chunk.dtype)])
        yield first, count, chunk


class Predictor:
    """Runs a trained transcriber (optionally with a separator and a recognizer) on whole songs.

    Args:
      model: a :class:`Transcriber` or a :class:`Jointist` (transcriber + optional separator),
        in eval mode.
      recognizer: a :class:`Recognizer` for automatic instrument selection, or None.
      batch_windows: windows per compiled call (memory grows with batch_windows x K).
      spec: window geometry.
    """

    def __init__(self, model: Transcriber | Jointist, *, recognizer: Recognizer | None = None,
                 batch_windows: int = 2, spec: WindowSpec = WindowSpec()):
        if batch_windows < 1:
            raise ValueError(f"batch_windows must be >= 1, got {batch_windows}")
        if isinstance(model, Jointist):
            transcriber, separator = model.transcriber, model.separator
            if recognizer is None:
                recognizer = model.recognizer
        elif isinstance(model, Transcriber):
            transcriber, separator = model, None
        else:
            raise TypeError(f"Predictor needs a Transcriber or a Jointist, got {type(model).__name__}")
        if recognizer is not None and not isinstance(recognizer, Recognizer):
            raise TypeError(f"recognizer must be a Recognizer, got {type(recognizer).__name__}")
        self.batch_windows = batch_windows
        self.spec = spec
        self.can_separate = separator is not None
        self.can_recognize = recognizer is not None
        self._jointist = Jointist(recognizer=None, transcriber=transcriber, separator=separator)
        self._jointist.eval()
        graphdef, self._state = nnx.split(self._jointist)

        def run(state, windows, conditions, separate: bool):
            model = nnx.merge(graphdef, state, copy=True)
            if separate:
                return model.transcribe_and_separate(windows, conditions)
            return model.transcriber(audio.log_mel(windows), conditions)

        self._run = jax.jit(run, static_argnames="separate")
        if recognizer is not None:
            recognizer.eval()
            ir_graphdef, self._ir_state = nnx.split(recognizer)

            def recognize(state, windows):
                model = nnx.merge(ir_graphdef, state, copy=True)
                return jax.nn.sigmoid(model(audio.log_mel(windows)).astype(jnp.float32))

            self._recognize = jax.jit(recognize)

    def recognize(self, waveform: np.ndarray, progress: ProgressFn | None = None) -> np.ndarray:
        """Per-window instrument probabilities (N, 39) of a mono 16-kHz song (L,)."""
        if not self.can_recognize:
            raise ValueError("this Predictor has no recognizer")
        windows = split_windows(waveform, self.spec)
        out = np.zeros((windows.shape[0], instruments.NUM_CLASSES), np.float32)
        for first, count, chunk in _batches(windows, self.batch_windows):
            out[first:first + count] = np.asarray(self._recognize(self._ir_state, jnp.asarray(chunk)))[:count]
            if progress is not None:
                progress(count)
        return out

    def select_instruments(self, waveform: np.ndarray, *, threshold: float = 0.5,
                           aggregate: Literal["any", "mean"] = "any",
                           progress: ProgressFn | None = None) -> tuple[list[int], np.ndarray]:
        """(detected class indices, per-window probabilities) for a song (DECISIONS 19)."""
        probabilities = self.recognize(waveform, progress)
        return select_instruments(probabilities, threshold=threshold, aggregate=aggregate), probabilities

    def predict(self, waveform: np.ndarray, class_ids: Sequence[int], *, separate: bool = False,
                progress: ProgressFn | None = None) -> SongPrediction:
        """Stitched posteriorgrams (and stems with ``separate``) of a mono 16-kHz song (L,)."""
        class_ids = [int(c) for c in class_ids]
        if not class_ids:
            raise ValueError("predict needs at least one instrument class")
        if separate and not self.can_separate:
            raise ValueError("this model has no separator: it cannot separate")
        waveform = np.asarray(waveform, np.float32)
        length = waveform.shape[0]
        spec = self.spec
        windows = split_windows(waveform, spec)
        n, k = windows.shape[0], len(class_ids)
        total_frames = spec.num_frames(length)
        onset = np.zeros((k, total_frames, 88), np.float32)
        frame = np.zeros((k, total_frames, 88), np.float32)
        stems = np.zeros((k, length), np.float32) if separate else None
        one_hot = instruments.condition_one_hot(class_ids)
        conditions = jnp.asarray(np.broadcast_to(one_hot, (self.batch_windows,) + one_hot.shape))
        for first, count, chunk in _batches(windows, self.batch_windows):
            outputs = jax.device_get(self._run(self._state, jnp.asarray(chunk), conditions, separate))
            for j in range(count):
                i = first + j
                stitch_into(onset, outputs["reg_onset_output"][j], i, n, spec.frames_per_hop, axis=1)
                stitch_into(frame, outputs["frame_output"][j], i, n, spec.frames_per_hop, axis=1)
                if separate:
                    stitch_into(stems, outputs["waveform"][j], i, n, spec.hop, axis=1)
            if progress is not None:
                progress(count)
        return SongPrediction(class_ids=class_ids, reg_onset_output=onset, frame_output=frame, waveform=stems)
