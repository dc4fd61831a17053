"""The composed Jointist model: recognizer -> conditions -> transcriber -> separator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jointist_jax import audio, instruments
from jointist_jax.models import Jointist, Recognizer, Separator, Transcriber, select_instruments
from jointist_jax.models.jointist import straight_through_binarise

SECONDS = 0.7  # the recognizer needs >= 64 frames (six (2, 2) poolings)
LENGTH = int(SECONDS * 16000)


@pytest.fixture(scope="module")
def model():
    rngs = nnx.Rngs(0)
    jointist = Jointist(
        recognizer=Recognizer(channels=(4, 4, 8, 8, 8, 8), d_model=16, num_heads=2, num_layers=1, ff_dim=16,
                              rngs=rngs),
        transcriber=Transcriber((4, 4, 4, 4), acoustic_dim=16, gru_hidden=8, rngs=rngs),
        separator=Separator("sum", channels=(4, 4, 4, 4, 4, 4), rngs=rngs))
    jointist.eval()
    return jointist


@pytest.fixture(scope="module")
def waveform():
    return jnp.asarray(np.random.default_rng(0).normal(size=(2, LENGTH)) * 0.1, jnp.float32)


def test_select_instruments_any_and_mean():
    probs = np.zeros((3, 39))
    probs[0, 5] = 0.9  # one window only
    probs[:, 10] = 0.6  # every window
    assert select_instruments(probs) == [5, 10]
    assert select_instruments(probs, aggregate="mean") == [10]
    with pytest.raises(ValueError, match="ir_aggregate"):
        select_instruments(probs, aggregate="max")
    with pytest.raises(ValueError, match="39"):
        select_instruments(np.zeros((3, 40)))


def test_user_instruments_bypass_the_recognizer(model, waveform):
    out = model(waveform, [instruments.class_index("piano"), instruments.class_index("drums")])
    assert "instrument_probabilities" not in out
    assert out["instrument_ids"] == [0, 38]
    frames = LENGTH // 160 + 1
    assert out["frame_output"].shape == out["reg_onset_output"].shape == (2, 2, frames, 88)
    assert out["waveform"].shape == (2, 2, LENGTH)


def test_recognizer_chooses_the_instruments(model, waveform):
    probs = np.asarray(model.recognize(waveform))
    expected = select_instruments(probs)
    out = model(waveform)
    np.testing.assert_allclose(np.asarray(out["instrument_probabilities"]), probs, rtol=1e-5)
    assert out["instrument_ids"] == expected
    if expected:
        assert out["frame_output"].shape[1] == len(expected)
    else:
        assert "frame_output" not in out


def test_stages_share_one_log_mel_and_match_the_modules(model, waveform):
    conditions = jnp.broadcast_to(jnp.asarray(instruments.condition_one_hot([1, 2])), (2, 2, 40))
    out = model.transcribe_and_separate(waveform, conditions)
    direct = model.transcriber(audio.log_mel(waveform), conditions)
    np.testing.assert_allclose(np.asarray(out["frame_output"]), np.asarray(direct["frame_output"]), atol=1e-6)
    separated = model.separator(waveform, conditions, direct["frame_output"])
    np.testing.assert_allclose(np.asarray(out["waveform"]), np.asarray(separated["waveform"]), atol=1e-6)


def test_straight_through_binarisation_forward_and_gradient():
    x = jnp.array([0.05, 0.1, 0.2, 0.9])
    np.testing.assert_array_equal(np.asarray(straight_through_binarise(x, 0.1)), [0, 0, 1, 1])
    grad = jax.grad(lambda v: jnp.sum(straight_through_binarise(v, 0.1) * jnp.array([3.0, -0.5, 0.2, -4.0])))(x)
    np.testing.assert_allclose(np.asarray(grad), [1.0, -0.5, 0.2, -1.0])  # hardtanh of the incoming gradient


def test_straight_through_feeds_the_separator_a_binary_roll(model, waveform):
    conditions = jnp.broadcast_to(jnp.asarray(instruments.condition_one_hot([3])), (2, 1, 40))
    binary = Jointist(recognizer=None, transcriber=model.transcriber, separator=model.separator,
                      straight_through=True)
    out = binary.transcribe_and_separate(waveform, conditions)
    roll = (out["frame_output"] > 0.1).astype(jnp.float32)
    expected = model.separator(waveform, conditions, roll)["waveform"]
    np.testing.assert_allclose(np.asarray(out["waveform"]), np.asarray(expected), atol=1e-6)


def test_no_recognizer_means_instruments_are_required(model, waveform):
    bare = Jointist(recognizer=None, transcriber=model.transcriber, separator=None)
    with pytest.raises(ValueError, match="name the instruments"):
        bare(waveform)
    out = bare(waveform, [0])
    assert "waveform" not in out and out["frame_output"].shape[1] == 1


def test_separator_must_read_the_roll(model):
    standalone = Separator("standalone", channels=(4, 4, 4, 4, 4, 4), rngs=nnx.Rngs(1))
    with pytest.raises(ValueError, match="sum"):
        Jointist(recognizer=None, transcriber=model.transcriber, separator=standalone)


def test_whole_song_recognition_uses_the_model_path(model):
    """Predictor.recognize (what jointist-transcribe and the evaluation run) gives the probabilities
    of Jointist.recognize on the song's windows."""
    from jointist_jax.inference.predictor import Predictor
    from jointist_jax.inference.windows import split_windows

    song = (np.random.default_rng(1).normal(size=12 * 16000) * 0.1).astype(np.float32)  # 2 windows
    whole_song = Predictor(None, recognizer=model.recognizer, batch_windows=1).recognize(song)
    windows = np.asarray(model.recognize(jnp.asarray(split_windows(song))))
    assert whole_song.shape == (2, 39)
    np.testing.assert_allclose(whole_song, windows, rtol=1e-4, atol=1e-5)


def test_predictor_compiles_every_program_with_its_compiler_options(model):
    """Predictor(compiler_options=...) reaches each program it compiles (the recognizer, the
    transcriber step, the transcriber + separator step): XLA refuses an invalid value in each, by name."""
    from jointist_jax.inference.predictor import Predictor

    predictor = Predictor(model, batch_windows=1,
                          compiler_options={"xla_cpu_experimental_ynn_fusion_type": "NO_SUCH_FUSION_TYPE"})
    song = np.zeros(16000, np.float32)
    refused = "xla_cpu_experimental_ynn_fusion_type, 'NO_SUCH_FUSION_TYPE' is not a valid"
    with pytest.raises(jax.errors.JaxRuntimeError, match=refused):
        predictor.recognize(song)
    for separate in (False, True):
        with pytest.raises(jax.errors.JaxRuntimeError, match=refused):
            predictor.predict(song, [0], separate=separate)
