"""Reading songs (wav/flac/ogg/mp3, any rate, mono or stereo) and writing 16-kHz stems.

Decoding uses libsndfile through ``soundfile`` (1.1+ reads MP3 and Ogg/Vorbis without ffmpeg);
channels are averaged to mono block by block (a long song is held once, as mono samples) and the
signal is resampled to 16 kHz with soxr (``librosa``).
Songs may be local or in a bucket (``gs://``; read through :mod:`jointist_jax.storage`).
"""

from __future__ import annotations

import os

import librosa
import numpy as np
import soundfile

from jointist_jax import storage
from jointist_jax.music import SAMPLE_RATE

SUPPORTED_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
# Peak below which a song counts as silent (about -120 dBFS): nothing to transcribe.
SILENCE_PEAK = 1e-6
# Frames decoded (and samples checked) at a time.
BLOCK = 1 << 20


class AudioError(ValueError):
    """A song that cannot be used: missing, unreadable, unsupported, empty or silent."""


def _suffix(path) -> str:
    return os.path.splitext(path.name)[1]


def check_extension(path) -> None:
    """Raises AudioError unless ``path`` has a supported audio extension."""
    if _suffix(path).lower() not in SUPPORTED_EXTENSIONS:
        raise AudioError(f"{str(path)!r}: unsupported audio format {_suffix(path) or '(no extension)'!r}; "
                         f"expected one of {', '.join(SUPPORTED_EXTENSIONS)}")


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A song as a mono float32 array (L,) at ``sample_rate``.

    Raises:
      AudioError: missing file, unsupported extension, undecodable content, no samples, or silence.
    """
    path = storage.path(path)
    if not path.is_file():
        raise AudioError(f"{str(path)!r}: no such audio file")
    check_extension(path)
    try:
        mono, rate = _read_mono(storage.source(path))
    except (soundfile.LibsndfileError, RuntimeError, EOFError) as error:
        raise AudioError(f"{str(path)!r}: cannot decode audio ({error})") from error
    if mono.shape[0] == 0:
        raise AudioError(f"{str(path)!r}: the audio is empty (0 samples)")
    if rate != sample_rate:
        mono = librosa.resample(mono, orig_sr=rate, target_sr=sample_rate, res_type="soxr_hq").astype(np.float32,
                                                                                                     copy=False)
    if mono.shape[0] == 0:
        raise AudioError(f"{str(path)!r}: the audio is shorter than one sample at {sample_rate} Hz")
    peak = _peak(mono)
    if not np.isfinite(peak):
        raise AudioError(f"{str(path)!r}: the audio contains NaN or infinite samples")
    if peak < SILENCE_PEAK:
        raise AudioError(f"{str(path)!r}: the audio is silent (peak below {SILENCE_PEAK:g}); nothing to transcribe")
    return mono


def _read_mono(source) -> tuple[np.ndarray, int]:
    """(mono float32 samples, rate) of a sound file, decoded :data:`BLOCK` frames at a time into
    one array (its length from the file's header, trimmed or grown if the decoder disagrees)."""
    with soundfile.SoundFile(source) as sound:
        mono = np.empty(max(sound.frames, 0), np.float32)
        filled = 0
        for block in sound.blocks(blocksize=BLOCK, dtype="float32", always_2d=True):
            if filled + block.shape[0] > mono.shape[0]:
                mono = np.concatenate([mono[:filled], np.empty(max(filled + block.shape[0], 2 * filled), np.float32)])
            np.mean(block, axis=1, out=mono[filled:filled + block.shape[0]])
            filled += block.shape[0]
        return mono[:filled], sound.samplerate


def _peak(samples: np.ndarray) -> float:
    """The largest absolute sample, NaN or infinite if any sample is (checked block by block)."""
    peak = 0.0
    for first in range(0, samples.shape[0], BLOCK):
        block_peak = float(np.max(np.abs(samples[first:first + BLOCK])))
        if not np.isfinite(block_peak):
            return block_peak
        peak = max(peak, block_peak)
    return peak


def find_audio_files(path) -> list[storage.Path]:
    """The song files named by ``path``: the file itself, or every supported file under a folder (sorted)."""
    given = path
    path = storage.path(path)
    if path.is_file():
        check_extension(path)
        return [path]
    if path.is_dir():
        files = [f for f in storage.files_under(path) if _suffix(f).lower() in SUPPORTED_EXTENSIONS]
        if not files:
            raise AudioError(f"{str(path)!r}: no audio files ({', '.join(SUPPORTED_EXTENSIONS)}) in this folder")
        return files
    bucket = storage.bucket_of(path)
    if bucket is not None and not storage.bucket_exists(bucket):
        raise AudioError(f"{str(given)!r}: bucket gs://{bucket} does not exist")
    raise AudioError(f"{str(given)!r}: no such file or folder")


def song_names(files: list, root) -> list[str]:
    """Unique output names: the path relative to ``root`` without extension, '/' -> '__'.

    Files that would collide (``a.wav`` and ``a.flac``) keep their extension in the name.
    """
    root = storage.path(root)
    base = os.fspath(root if root.is_dir() else root.parent)
    stems = ["__".join(os.path.splitext(os.path.relpath(os.fspath(f), base))[0].split("/")) for f in files]
    names = []
    for f, stem in zip(files, stems):
        names.append(f"{stem}_{_suffix(f).lower().lstrip('.')}" if stems.count(stem) > 1 else stem)
    return names


def write_wav(path, waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Writes a mono float32 WAV (32-bit float: no clipping of the separator's output)."""
    soundfile.write(str(path), np.asarray(waveform, np.float32), sample_rate, subtype="FLOAT")
