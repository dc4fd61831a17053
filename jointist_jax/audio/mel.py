"""The transcriber's and recognizer's log-mel front end (docs/reference.md §1.1, docs/deviations.md 2).

torchaudio ``MelSpectrogram(sample_rate=16000, n_fft=2048, hop_length=160, n_mels=229, f_min=0,
f_max=8000, normalized=True, power=2)`` followed by ``log(x + 1e-10)``: periodic Hann window,
centered reflect padding, power spectrum divided by the window energy sum(w²) = 768, HTK-scale
triangular filters without area normalisation. 10 s at 16 kHz gives 1001 frames.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jointist_jax.audio.stft import hann_window, stft
from jointist_jax.music import HOP_SAMPLES, SAMPLE_RATE

N_FFT = 2048
N_MELS = 229
F_MIN = 0.0
F_MAX = 8000.0
LOG_OFFSET = 1e-10


def hz_to_mel_htk(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``2595 log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz_htk(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel_htk`."""
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=8)
def _filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float, f_max: float) -> np.ndarray:
    all_freqs = np.linspace(0.0, sample_rate // 2, n_freqs)
    m_pts = np.linspace(hz_to_mel_htk(f_min), hz_to_mel_htk(f_max), n_mels + 2)
    f_pts = mel_to_hz_htk(m_pts)
    f_diff = np.diff(f_pts)  # (n_mels + 1,)
    slopes = f_pts[None, :] - all_freqs[:, None]  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = np.maximum(0.0, np.minimum(down, up)).astype(np.float32)
    fb.setflags(write=False)  # cached: callers must not mutate the shared array
    return fb


def mel_filterbank(
    *,
    n_freqs: int = N_FFT // 2 + 1,
    n_mels: int = N_MELS,
    sample_rate: int = SAMPLE_RATE,
    f_min: float = F_MIN,
    f_max: float = F_MAX,
) -> np.ndarray:
    """Triangular HTK mel filterbank ``(n_freqs, n_mels)`` float32, no norm (default (1025, 229)).

    Same construction as torchaudio ``melscale_fbanks(..., norm=None, mel_scale='htk')``:
    ``n_freqs`` linearly spaced bin frequencies from 0 to ``sample_rate // 2``; ``n_mels + 2`` edge
    frequencies equally spaced in mel between ``f_min`` and ``f_max``; filter ``m`` rises from edge
    ``m`` to ``m + 1`` and falls to ``m + 2`` with peak 1. Computed in float64, returned as float32
    (read-only; copy it to modify).
    """
    if not 0.0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"mel_filterbank: need 0 <= f_min < f_max <= sample_rate/2, got {f_min}, {f_max}")
    if n_freqs < 2 or n_mels < 1:
        raise ValueError(f"mel_filterbank: need n_freqs >= 2 and n_mels >= 1, got {n_freqs}, {n_mels}")
    return _filterbank(int(n_freqs), int(n_mels), int(sample_rate), float(f_min), float(f_max))


def mel_power(waveform: jnp.ndarray) -> jnp.ndarray:
    """Mel power spectrogram ``(..., L) -> (..., L // 160 + 1, 229)`` float32, before the log.

    Power of the window-normalised STFT (divided by sum(w²) = 768), projected on the filterbank.
    """
    window = hann_window(N_FFT)
    spec = stft(waveform, n_fft=N_FFT, hop=HOP_SAMPLES, window=window)
    power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
    power = power * np.float32(1.0 / np.sum(window.astype(np.float64) ** 2))
    # HIGHEST: GPUs/TPUs would otherwise run this float32 matmul in TF32/bfloat16 passes, and
    # the log then magnifies the error of small mel energies.
    return jnp.matmul(power, jnp.asarray(mel_filterbank()), precision=jax.lax.Precision.HIGHEST)


def log_mel(waveform: jnp.ndarray) -> jnp.ndarray:
    """Log-mel features ``(..., L) -> (..., L // 160 + 1, 229)`` float32: ``log(mel_power + 1e-10)``.

    16 kHz input; 160000 samples give 1001 frames. Any leading batch shape; works under
    ``jit``/``vmap``.
    """
    return jnp.log(mel_power(waveform) + LOG_OFFSET)
