"""The composed Jointist model: recognizer -> conditions -> transcriber -> separator.

One clip's log-mel is computed once and shared by the recognizer and the transcriber; the K
requested instruments of a clip run in one batched call (docs/deviations.md B1, "Beyond the reference").

The recognizer's choice of instruments is data-dependent, so the composition is split in two
jittable stages with a host-side decision between them:

1. :meth:`Jointist.recognize` -> per-window probabilities (B, 39) (:func:`instrument_probabilities`,
   also what :class:`jointist_jax.inference.predictor.Predictor` runs on whole songs);
   :func:`select_instruments` thresholds them (0.5) and aggregates the windows of one song
   (``"any"``: OR of thresholded windows, the reference; ``"mean"``: threshold the mean
   probability, docs/deviations.md 19).
2. :meth:`Jointist.transcribe_and_separate` with the (B, K, 40) conditions -> per-instrument
   onset and frame posteriorgrams and separated waveforms.

:meth:`Jointist.__call__` runs both, skipping stage 1 when the user names the instruments.
"""

from __future__ import annotations

from typing import Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jointist_jax import audio, instruments
from jointist_jax.models.recognizer import Recognizer
from jointist_jax.models.separator import Separator
from jointist_jax.models.transcriber import Transcriber


@jax.custom_vjp
def straight_through_binarise(x: jax.Array, threshold: float) -> jax.Array:
    """(x > threshold) in the forward pass; gradient passed through clipped to [-1, 1] (docs/reference.md §2.4)."""
    return (x > threshold).astype(x.dtype)


def _ste_fwd(x, threshold):
    return straight_through_binarise(x, threshold), None


def _ste_bwd(_, g):
    return jnp.clip(g, -1.0, 1.0), None


straight_through_binarise.defvjp(_ste_fwd, _ste_bwd)


def select_instruments(probabilities: np.ndarray, *, threshold: float = 0.5,
                       aggregate: Literal["any", "mean"] = "any") -> list[int]:
    """Class indices the recognizer detects in a song, from per-window probabilities (W, 39).

    ``"any"`` switches an instrument on if any window passes the threshold (the reference);
    ``"mean"`` thresholds the mean probability over windows (docs/deviations.md 19).
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 2 or probabilities.shape[1] != instruments.NUM_CLASSES:
        raise ValueError(f"probabilities must be (windows, {instruments.NUM_CLASSES}), got {probabilities.shape}")
    if aggregate == "any":
        detected = np.any(probabilities > threshold, axis=0)
    elif aggregate == "mean":
        detected = probabilities.mean(axis=0) > threshold
    else:
        raise ValueError(f"ir_aggregate must be 'any' or 'mean', got {aggregate!r}")
    return [int(i) for i in np.flatnonzero(detected)]


def instrument_probabilities(recognizer: Recognizer, waveform: jax.Array, *, logmel: jax.Array | None = None,
                             rngs: nnx.Rngs | None = None) -> jax.Array:
    """Per-clip instrument probabilities (B, 39) of a recognizer for waveforms (B, L), in float32."""
    if logmel is None:
        logmel = audio.log_mel(waveform)
    return jax.nn.sigmoid(recognizer(logmel, rngs=rngs).astype(jnp.float32))


class Jointist(nnx.Module):
    """Recognizer, transcriber and separator composed as in the paper's end-to-end system.

    Args:
      recognizer: the instrument recognizer, or None when instruments are always user-given.
      transcriber: the FiLM onsets-and-frames transcriber (required).
      separator: the FiLM U-Net separator in ``"sum"`` mode, or None to transcribe only.
      straight_through: feed the separator the binarised frame roll (at ``frame_threshold``)
        with a straight-through gradient instead of the posteriorgram (off in the paper's model).
      frame_threshold: the binarisation threshold (docs/reference.md §2.4: the frame threshold, 0.1).
    """

    def __init__(self, *, recognizer: Recognizer | None, transcriber: Transcriber,
                 separator: Separator | None, straight_through: bool = False,
                 frame_threshold: float = 0.1):
        if separator is not None and separator.mode != "sum":
            raise ValueError("Jointist composes a separator in 'sum' mode (it reads the transcriber's roll)")
        self.recognizer = recognizer
        self.transcriber = transcriber
        self.separator = separator
        self.straight_through = straight_through
        self.frame_threshold = frame_threshold

    def recognize(self, waveform: jax.Array, *, logmel: jax.Array | None = None,
                  rngs: nnx.Rngs | None = None) -> jax.Array:
        """Per-clip instrument probabilities (B, 39) for waveforms (B, L)."""
        if self.recognizer is None:
            raise ValueError("this Jointist has no recognizer: name the instruments instead")
        return instrument_probabilities(self.recognizer, waveform, logmel=logmel, rngs=rngs)

    def transcribe_and_separate(self, waveform: jax.Array, conditions: jax.Array, *,
                                logmel: jax.Array | None = None,
                                rngs: nnx.Rngs | None = None) -> dict[str, jax.Array]:
        """Posteriorgrams (B, K, T, 88) and, with a separator, waveforms (B, K, L).

        Args:
          waveform: (B, L) mixture clips at 16 kHz.
          conditions: (B, K, 40) one-hot instrument conditions.
          logmel: the clips' log-mel, if already computed.
        """
        if logmel is None:
            logmel = audio.log_mel(waveform)
        outputs = dict(self.transcriber(logmel, conditions, rngs=rngs))
        if self.separator is not None:
            roll = outputs["frame_output"]
            if self.straight_through:
                roll = straight_through_binarise(roll, self.frame_threshold)
            separated = self.separator(waveform, conditions, roll, rngs=rngs)
            outputs["waveform"] = separated["waveform"]
        return outputs

    def __call__(self, waveform: jax.Array, instrument_ids: Sequence[int] | None = None, *,
                 ir_threshold: float = 0.5, ir_aggregate: Literal["any", "mean"] = "any",
                 rngs: nnx.Rngs | None = None) -> dict:
        """End-to-end on the windows (B, L) of one song.

        With ``instrument_ids`` (class indices) the recognizer is bypassed. Otherwise its
        detections over the B windows are aggregated into one instrument set for the song.
        Returns the stage outputs plus ``instrument_ids`` (list) and, when the recognizer ran,
        ``instrument_probabilities`` (B, 39).
        """
        logmel = audio.log_mel(waveform)
        result: dict = {}
        if instrument_ids is None:
            probabilities = self.recognize(waveform, logmel=logmel, rngs=rngs)
            result["instrument_probabilities"] = probabilities
            instrument_ids = select_instruments(np.asarray(probabilities), threshold=ir_threshold,
                                                aggregate=ir_aggregate)
        instrument_ids = [int(i) for i in instrument_ids]
        result["instrument_ids"] = instrument_ids
        if not instrument_ids:
            return result
        conditions = jnp.broadcast_to(
            jnp.asarray(instruments.condition_one_hot(instrument_ids)),
            (waveform.shape[0], len(instrument_ids), instruments.CONDITION_SIZE))
        result.update(self.transcribe_and_separate(waveform, conditions, logmel=logmel, rngs=rngs))
        return result
