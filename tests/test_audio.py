"""Signal front ends against librosa and against hand-written numpy references.

Accuracy definitions used below (float32 JAX vs a float64 librosa reference):
* STFT: max |ours - ref| / max |ref| over all bins.
* log-mel: (a) max |ours - ref| / max |ref| over all log-mel values (the "relative error" we hold it to);
  (b) max |ours - ref| over bins whose mel power is above 1e-6 of the clip's maximum (60 dB), where
  the log does not magnify float32 rounding of near-silent bins; (c) mel power: max |ours - ref|
  relative to the clip's maximum power.
  Measured: rendered clip (a) 2.0e-5, (b) 2.7e-5, (c) 1.6e-7; synthesized clip (b) 2.6e-5,
  (c) < 1e-6, but (a) 1.4e-4: its low bins fall to 1e-11 of the peak power, below the float32 FFT
  rounding floor (librosa computes its FFT in float64; the PyTorch reference, like us, in float32),
  so (a) is only asserted on the rendered clip, whose quiet bins are exactly silent.
"""

import shutil
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from jointist_jax import audio

SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")


def _librosa_mel_power(y):
    s = librosa.feature.melspectrogram(
        y=np.asarray(y, np.float64), sr=16000, n_fft=2048, hop_length=160, window="hann",
        center=True, pad_mode="reflect", power=2.0, n_mels=229, fmin=0.0, fmax=8000.0,
        htk=True, norm=None,
    )
    return s.T / 768.0  # torchaudio normalized=True: power / sum(w^2)


def _synth_clip(seconds=2.0, sr=16000, seed=0):
    """Plucked-string-like notes (decaying harmonics), a noise burst and silence: real-sounding."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = np.zeros_like(t)
    for k, (f0, start) in enumerate([(110.0, 0.0), (261.6, 0.3), (392.0, 0.6), (659.3, 0.9)]):
        tt = t - start
        env = np.where(tt >= 0, np.exp(-3.0 * np.clip(tt, 0, None)), 0.0)
        for h in range(1, 12):
            if f0 * h < sr / 2:
                y += env * np.sin(2 * np.pi * f0 * h * tt + k) / h**1.3
    burst = (t > 1.2) & (t < 1.35)
    y[burst] += 0.3 * rng.standard_normal(burst.sum())
    y[t > 1.7] = 0.0
    return (0.2 * y).astype(np.float32)


@pytest.fixture(scope="module")
def rendered_clip(tmp_path_factory):
    """A 16-kHz mono clip rendered with fluidsynth from a short three-instrument MIDI."""
    if shutil.which("fluidsynth") is None or not SOUNDFONT.exists():
        pytest.skip("fluidsynth or the TimGM6mb soundfont is not installed")
    tmp = tmp_path_factory.mktemp("render")
    pm = pretty_midi.PrettyMIDI()
    for program, base in [(0, 60), (33, 36), (40, 72)]:
        inst = pretty_midi.Instrument(program=program)
        for i, step in enumerate([0, 4, 7, 12, 7, 4, 2, 5]):
            inst.notes.append(pretty_midi.Note(velocity=90, pitch=base + step, start=0.25 * i, end=0.25 * i + 0.4))
        pm.instruments.append(inst)
    pm.write(str(tmp / "clip.mid"))
    subprocess.run(
        ["fluidsynth", "-ni", "-q", "-g", "0.8", "-r", "16000", "-F", str(tmp / "clip.wav"),
         str(SOUNDFONT), str(tmp / "clip.mid")],
        check=True, capture_output=True, timeout=60,
    )
    y, sr = sf.read(tmp / "clip.wav", dtype="float32")
    assert sr == 16000
    return y.mean(axis=1) if y.ndim == 2 else y


def _check_log_mel_against_librosa(y, *, global_relative=True):
    ours_log = np.asarray(audio.log_mel(jnp.asarray(y)))
    ours_power = np.asarray(audio.mel_power(jnp.asarray(y)))
    ref_power = _librosa_mel_power(y)
    ref_log = np.log(ref_power + 1e-10)
    assert ours_log.shape == ref_log.shape == (len(y) // 160 + 1, 229)
    assert ours_log.dtype == np.float32
    diff = np.abs(ours_log - ref_log)
    if global_relative:
        assert diff.max() / np.abs(ref_log).max() <= 1e-4
    audible = ref_power > 1e-6 * ref_power.max()
    assert audible.mean() > 0.2  # the comparison must cover a real part of the clip
    assert diff[audible].max() <= 1e-4
    assert np.abs(ours_power - ref_power).max() <= 1e-6 * ref_power.max()


def test_log_mel_matches_librosa_on_rendered_audio(rendered_clip):
    _check_log_mel_against_librosa(rendered_clip)


def test_log_mel_matches_librosa_on_synthesized_audio():
    _check_log_mel_against_librosa(_synth_clip(), global_relative=False)


def test_hann_window_is_periodic_with_energy_768():
    w = audio.hann_window(2048)
    assert w.dtype == np.float32 and w.shape == (2048,)
    k = np.arange(2048)
    np.testing.assert_allclose(w, 0.5 - 0.5 * np.cos(2 * np.pi * k / 2048), atol=1e-7)
    assert w[0] == 0.0 and w[1024] == pytest.approx(1.0)
    np.testing.assert_allclose(w[1:], w[1:][::-1], atol=1e-7)  # periodic: symmetric after w[0]
    assert float(np.sum(w.astype(np.float64) ** 2)) == pytest.approx(768.0, rel=1e-6)
    np.testing.assert_allclose(w, librosa.filters.get_window("hann", 2048, fftbins=True), atol=1e-7)
    with pytest.raises(ValueError, match="positive int"):
        audio.hann_window(0)


def test_mel_filterbank_matches_librosa_htk_no_norm():
    fb = audio.mel_filterbank()
    assert fb.shape == (1025, 229) and fb.dtype == np.float32
    ref = librosa.filters.mel(sr=16000, n_fft=2048, n_mels=229, fmin=0.0, fmax=8000.0, htk=True, norm=None).T
    np.testing.assert_allclose(fb, ref, atol=1e-6)
    assert fb.max() <= 1.0 and fb.min() == 0.0
    assert np.all(fb.sum(axis=0) > 0.0)  # no empty filter
    half = audio.mel_filterbank(f_max=4000.0)
    assert np.all(half[513:] == 0.0)  # nothing above f_max = 4 kHz (bin 512)
    small = audio.mel_filterbank(n_freqs=257, n_mels=40, f_max=4000.0)
    ref_small = librosa.filters.mel(sr=16000, n_fft=512, n_mels=40, fmin=0.0, fmax=4000.0, htk=True, norm=None).T
    np.testing.assert_allclose(small, ref_small, atol=1e-6)
    with pytest.raises(ValueError, match="f_max"):
        audio.mel_filterbank(f_max=9000.0)


def test_log_mel_frame_count_for_ten_seconds():
    y = np.random.default_rng(1).standard_normal(160000).astype(np.float32) * 0.1
    feats = audio.log_mel(y)
    assert feats.shape == (1001, 229) and feats.dtype == jnp.float32
    assert audio.num_frames(160000, 160) == 1001


def test_log_mel_of_silence_is_the_log_floor():
    feats = np.asarray(audio.log_mel(np.zeros(4000, np.float32)))
    np.testing.assert_allclose(feats, np.log(np.float32(1e-10)), rtol=1e-6)


@pytest.mark.parametrize("n_fft,hop", [(1024, 160), (1024, 320), (2048, 160), (16, 5)])
def test_stft_matches_librosa(n_fft, hop):
    x = np.random.default_rng(n_fft + hop).standard_normal(8000 + 37).astype(np.float32)
    ours = np.asarray(audio.stft(x, n_fft=n_fft, hop=hop))
    ref = librosa.stft(x.astype(np.float64), n_fft=n_fft, hop_length=hop, window="hann", center=True, pad_mode="reflect").T
    assert ours.dtype == np.complex64
    assert ours.shape == ref.shape == (len(x) // hop + 1, n_fft // 2 + 1)
    assert np.abs(ours - ref).max() / np.abs(ref).max() <= 1e-6


def test_stft_normalized_divides_by_window_energy_root():
    x = np.random.default_rng(2).standard_normal(3000).astype(np.float32)
    plain = np.asarray(audio.stft(x, n_fft=2048, hop=160))
    norm = np.asarray(audio.stft(x, n_fft=2048, hop=160, normalized=True))
    np.testing.assert_allclose(norm, plain / np.sqrt(768.0), rtol=1e-5, atol=1e-6)


def test_magnitude_is_float32_abs():
    spec = audio.stft(np.random.default_rng(3).standard_normal(2000).astype(np.float32), n_fft=1024, hop=160)
    mag = audio.magnitude(spec)
    assert mag.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(mag), np.abs(np.asarray(spec)), rtol=1e-6)


@pytest.mark.parametrize("n_fft,hop,length", [(1024, 160, 16000), (1024, 320, 16000), (1024, 160, 16037), (2048, 160, 9999)])
def test_istft_inverts_stft_over_the_full_length(n_fft, hop, length):
    x = np.random.default_rng(length).standard_normal(length).astype(np.float32)
    y = np.asarray(audio.istft(audio.stft(x, n_fft=n_fft, hop=hop), n_fft=n_fft, hop=hop, length=length))
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.abs(y - x)[n_fft:-n_fft].max() <= 1e-5
    assert np.abs(y - x).max() <= 1e-5  # reflect padding makes even the edges exact


def _numpy_istft(spec, n_fft, hop, length):
    """torch.istft(center=True, window=periodic hann, length=length), one frame at a time."""
    w = librosa.filters.get_window("hann", n_fft, fftbins=True)
    count = spec.shape[0]
    total = n_fft + hop * (count - 1)
    y = np.zeros(total)
    env = np.zeros(total)
    for t in range(count):
        y[t * hop : t * hop + n_fft] += np.fft.irfft(spec[t], n=n_fft) * w
        env[t * hop : t * hop + n_fft] += w**2
    start = n_fft // 2
    out = y[start : start + length] / env[start : start + length]
    return np.pad(out, (0, length - out.size))


@pytest.mark.parametrize("length", [4000, 4100, 3500])
def test_istft_of_an_arbitrary_spectrogram_matches_torch_semantics(length):
    # Masked magnitudes with borrowed phase are not consistent spectrograms; the window
    # weighting and envelope division matter there, and round trips would not show them.
    rng = np.random.default_rng(length)
    spec = (rng.standard_normal((26, 513)) + 1j * rng.standard_normal((26, 513))).astype(np.complex64)
    ours = np.asarray(audio.istft(jnp.asarray(spec), n_fft=1024, hop=160, length=length))
    ref = _numpy_istft(spec.astype(np.complex128), 1024, 160, length)
    assert ours.shape == (length,)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
    if length == 4100:  # past the last frame's samples: zero-filled, as torch.istft
        assert np.all(ours[1024 + 160 * 25 - 512 :] == 0.0)


def test_frame_and_overlap_add_match_numpy_loops():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 1000)).astype(np.float32)
    frames = np.asarray(audio.frame(jnp.asarray(x), frame_length=64, hop=10))
    ref = np.stack([x[:, s : s + 64] for s in range(0, 1000 - 64 + 1, 10)], axis=1)
    np.testing.assert_array_equal(frames, ref)
    f = rng.standard_normal((3, 7, 64)).astype(np.float32)
    ola = np.asarray(audio.overlap_add(jnp.asarray(f), hop=10))
    expect = np.zeros((3, 64 + 10 * 6), np.float32)
    for t in range(7):
        expect[:, t * 10 : t * 10 + 64] += f[:, t]
    np.testing.assert_allclose(ola, expect, rtol=1e-6, atol=1e-6)


def test_batch_dims_jit_and_vmap_agree():
    x = np.random.default_rng(5).standard_normal((2, 3, 3200)).astype(np.float32)
    batched = np.asarray(audio.log_mel(x))
    assert batched.shape == (2, 3, 21, 229)
    single = np.asarray(audio.log_mel(x[1, 2]))
    np.testing.assert_allclose(batched[1, 2], single, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.jit(audio.log_mel)(x)), batched, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.vmap(audio.log_mel)(x)), batched, rtol=1e-5, atol=1e-5)

    def roundtrip(w):
        return audio.istft(audio.stft(w, n_fft=1024, hop=160), n_fft=1024, hop=160, length=w.shape[-1])

    y = jax.jit(jax.vmap(roundtrip))(x.reshape(6, 3200))
    assert y.shape == (6, 3200) and y.dtype == jnp.float32
    assert np.abs(np.asarray(y) - x.reshape(6, 3200)).max() <= 1e-5


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="too short"):
        audio.stft(np.zeros(100, np.float32), n_fft=1024, hop=160)
    with pytest.raises(ValueError, match="window must have shape"):
        audio.stft(np.zeros(4000, np.float32), n_fft=1024, hop=160, window=np.ones(512, np.float32))
    with pytest.raises(ValueError, match="hop"):
        audio.stft(np.zeros(4000, np.float32), n_fft=256, hop=512)
    with pytest.raises(ValueError, match=r"\(\.\.\., frames, 513\)"):
        audio.istft(jnp.zeros((10, 512), jnp.complex64), n_fft=1024, hop=160, length=1600)
    # A periodic Hann window with hop == n_fft is zero at every frame start: not invertible.
    with pytest.raises(ValueError, match="overlap-add vanishes"):
        audio.istft(jnp.zeros((10, 3), jnp.complex64), n_fft=4, hop=4, length=30)
