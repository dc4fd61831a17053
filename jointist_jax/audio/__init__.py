"""Signal front ends in JAX: log-mel, STFT magnitude and inverse STFT.

``log_mel`` is the recognizer's and transcriber's input (docs/reference.md §1.1); ``stft``/``istft``/
``magnitude`` serve the separator (n_fft 1024, hop 160 or 320, docs/reference.md §1.4-1.5).
"""

from jointist_jax.audio.mel import log_mel, mel_filterbank, mel_power
from jointist_jax.audio.stft import frame, hann_window, istft, magnitude, num_frames, overlap_add, stft

__all__ = [
    "frame",
    "hann_window",
    "istft",
    "log_mel",
    "magnitude",
    "mel_filterbank",
    "mel_power",
    "num_frames",
    "overlap_add",
    "stft",
]
