"""Memorisation checks of the whole learning path: targets -> loss -> optimiser -> decoder -> metrics.

A 1-s clip of two synthetic instruments (harmonic tones on exact frame boundaries) is built in
numpy; its targets come from the input pipeline's own code (:func:`jointist_jax.rolls.note_rolls`),
the training step and optimiser are the trainer's (``make_train_step``, ``make_optimizer``) with the
``runlocal`` models, and the eval-mode outputs (running BatchNorm statistics) go through the real
post-processing and metrics. Scoring is against the note list the clip was synthesised from, not
against the targets, so a target that drifts from the audio is caught:

* note F1 (the paper's metric: onset within 50 ms) >= 0.9 on the training clip;
* the decoded onsets fall on the exact frame of the true onsets (the metric's 50-ms tolerance
  could not see a one-frame shift of the targets or an onset decoded before its frame);
* the untrained model (posteriors at the output prior) decodes no note;
* the joint stage's separator SDR on its training clip is well above the untrained model's.

Dropout is off during these runs (memorisation is what it prevents); BatchNorm trains on batch
statistics and is evaluated with its running ones, as in real use. The transcriber trains 300
steps, then the joint model, started from it as ``joint_pretrained`` is, 100 more: about two
minutes on a 2-core CPU (3.5 minutes measured while other jobs shared the cores).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import built_once
from jointist_jax import instruments, rolls
from jointist_jax.metrics import separation_metrics, transcription_metrics
from jointist_jax.music import FRAMES_PER_SECOND, LOWEST_MIDI_NOTE, SAMPLE_RATE, Notes
from jointist_jax import optimizer, stages
from jointist_jax.train import steps

SECONDS = 1.0
FRAMES = rolls.num_frames(SECONDS)
# (onset frame, offset frame, MIDI pitch) of the two instruments; onsets on exact frames.
PIANO_NOTES = ((8, 35, 60), (20, 50, 67), (40, 65, 64), (55, 80, 72), (70, 95, 55), (85, 98, 76))
BASS_NOTES = ((5, 40, 36), (45, 70, 43), (72, 98, 40))
PIANO = instruments.class_index("Piano")
TRANSCRIBER_STEPS = 300
JOINT_STEPS = 100
BASS = instruments.class_index("Bass")


def _tone(notes, harmonics) -> np.ndarray:
    """Sum of decaying harmonic tones, each starting exactly at its onset frame (5-ms attack)."""
    t = np.arange(int(SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    out = np.zeros_like(t)
    for onset, offset, pitch in notes:
        start, end = onset / FRAMES_PER_SECOND, offset / FRAMES_PER_SECOND
        f0 = 440.0 * 2.0 ** ((pitch - 69) / 12)
        local = t - start
        envelope = np.clip(local / 0.005, 0, 1) * np.exp(-np.clip(local, 0, None) / 0.4)
        envelope *= np.clip((end - t) / 0.01, 0, 1) * (t >= start)
        out += envelope * sum(a * np.sin(2 * np.pi * h * f0 * t) for h, a in harmonics)
    return out.astype(np.float32)


def _rolls(notes) -> dict[str, np.ndarray]:
    on, off, pitch = (np.array([n[i] for n in notes], np.float64) for i in range(3))
    return rolls.note_rolls(on / FRAMES_PER_SECOND, off / FRAMES_PER_SECOND, pitch.astype(np.int64), start=0.0,
                              seconds=SECONDS)


def _clip_batch() -> dict[str, np.ndarray]:
    """One clip, two rows (piano, bass), as the input pipeline lays out a joint batch."""
    piano = 0.08 * _tone(PIANO_NOTES, ((1, 1.0), (2, 0.5), (3, 0.3), (4, 0.2)))
    bass = 0.08 * _tone(BASS_NOTES, ((1, 1.0), (3, 0.6), (5, 0.4), (7, 0.3)))
    rows = [_rolls(PIANO_NOTES), _rolls(BASS_NOTES)]
    batch = {key: np.stack([r[key] for r in rows])[None] for key in ("reg_onset_roll", "frame_roll", "mask_roll")}
    conditions = np.zeros((1, 2, instruments.CONDITION_SIZE), np.float32)
    conditions[0, 0, PIANO] = conditions[0, 1, BASS] = 1.0
    batch.update(waveform=(piano + bass)[None], conditions=conditions, source=np.stack([piano, bass])[None],
                 source_valid=np.ones((1, 2), np.float32))
    return batch


def _reference_notes(notes) -> Notes:
    return Notes(onsets=[n[0] / FRAMES_PER_SECOND for n in notes],
                 offsets=[n[1] / FRAMES_PER_SECOND for n in notes],
                 pitches=[n[2] for n in notes], velocities=[100] * len(notes))


def _train(config_name: str, num_steps: int, lr: float, cache: Path, *, transcriber_from=None):
    """Trains the config's runlocal model on the clip for ``num_steps``.

    ``transcriber_from`` (a trained transcription :class:`TrainState`) starts a joint model's
    transcriber from it, as ``joint_pretrained`` does. Returns (untrained, trained) eval-mode
    models and the trained state (parameters and BatchNorm statistics). The trained weights are
    kept in ``cache`` (:func:`conftest.built_once`): the test process that trains first saves them,
    the others load them, so the run is trained once per test run.
    """
    import importlib

    config = importlib.import_module(f"configs.{config_name}").get_config("runlocal")
    config.optimizer.lr = lr
    config.optimizer.warmup_steps = 10
    config.optimizer.decay_every = num_steps * 10  # one fixed learning rate after the warm-up
    model = stages.build_model(config, nnx.Rngs(params=config.seed, dropout=config.seed))
    model.train()
    # Dropout off (BatchNorm still trains on batch statistics): this checks memorisation, which
    # the regularisation is there to prevent, not generalisation.
    model.set_attributes(deterministic=True, raise_if_not_found=False)
    if transcriber_from is not None:
        nnx.update(model.transcriber, transcriber_from.params, transcriber_from.batch_stats)
    graphdef = stages.split_model(model)[0]
    tx, schedule = optimizer.make_optimizer(config.optimizer)
    untrained = steps.TrainState.create(model, tx)
    weights = (untrained.params, untrained.batch_stats)
    saved = cache / "weights.npz"
    if saved.exists():
        with np.load(saved) as arrays:
            trained_weights = jax.tree.unflatten(jax.tree.structure(weights),
                                                 [jnp.asarray(arrays[f"a{i}"]) for i in range(len(arrays.files))])
    else:
        state = untrained
        train_step = jax.jit(steps.make_train_step(graphdef, tx, schedule, config.stage, jax.random.key(0)))
        batch = jax.tree.map(jnp.asarray, _clip_batch())
        for _ in range(num_steps):
            state, _ = train_step(state, batch)
        trained_weights = (state.params, state.batch_stats)
        np.savez(saved, **{f"a{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(trained_weights))})
    trained = dataclasses.replace(untrained, params=trained_weights[0], batch_stats=trained_weights[1],
                                  opt_state=None)

    def eval_model(s):
        m = nnx.merge(graphdef, s.params, s.batch_stats, s.rest, copy=True)
        m.eval()
        return m

    return eval_model(untrained), eval_model(trained), trained


def _transcribe(transcriber, batch) -> dict[str, np.ndarray]:
    from jointist_jax import audio

    out = transcriber(audio.log_mel(jnp.asarray(batch["waveform"])), jnp.asarray(batch["conditions"]))
    return {k: np.asarray(v[0]) for k, v in out.items()}  # (K, T, 88) of the one clip


def _decode_row(outputs, row: int) -> Notes:
    return rolls.decode_notes(outputs["reg_onset_output"][row], outputs["frame_output"][row])


@pytest.fixture(scope="module")
def transcriber_run(tmp_path_factory):
    with built_once(tmp_path_factory, "learning_transcriber") as (cache, _):
        return _train("transcription", num_steps=TRANSCRIBER_STEPS, lr=6e-3, cache=cache)


@pytest.fixture(scope="module")
def joint_run(transcriber_run, tmp_path_factory):
    with built_once(tmp_path_factory, "learning_joint") as (cache, _):
        return _train("joint_pretrained", num_steps=JOINT_STEPS, lr=1e-3, cache=cache,
                      transcriber_from=transcriber_run[2])


@pytest.mark.parametrize("row, notes", [(0, PIANO_NOTES), (1, BASS_NOTES)], ids=["piano", "bass"])
def test_transcriber_memorises_its_training_clip(transcriber_run, row, notes):
    untrained, trained, _ = transcriber_run
    batch = _clip_batch()
    reference = _reference_notes(notes)
    after = _transcribe(trained, batch)
    estimate = _decode_row(after, row)
    _, _, f1 = transcription_metrics.note_f1(reference, estimate)
    _, _, f1_offset = transcription_metrics.note_f1(reference, estimate, with_offset=True)
    assert f1 >= 0.9 and f1_offset >= 0.9, f"note F1 {f1:.3f}, with offsets {f1_offset:.3f}; decoded {estimate}"
    # The untrained posteriors sit at the runlocal output prior (0.02), below the decoder's 0.1
    # thresholds: an untrained model writes no notes. (A threshold below the prior would.)
    before = _decode_row(_transcribe(untrained, batch), row)
    assert len(before.onsets) == 0, f"the untrained model decoded {len(before.onsets)} notes"
    # The metric's 50-ms onset tolerance cannot see a target one frame (10 ms) off the audio; the
    # memorised onset posteriorgram can: it must peak on the very frame each note starts.
    onset = after["reg_onset_output"][row]
    peaks = [int(np.argmax(onset[on - 4:on + 5, pitch - LOWEST_MIDI_NOTE])) - 4 for on, _, pitch in notes]
    assert peaks == [0] * len(notes), f"onset posteriorgram peaks this many frames off the true onsets: {peaks}"
    _, _, frame = transcription_metrics.frame_f1(batch["frame_roll"][0, row], after["frame_output"][row])
    assert frame >= 0.85, f"frame F1 {frame:.3f}"


def test_joint_stage_separates_its_training_clip(joint_run):
    untrained, trained, _ = joint_run
    batch = _clip_batch()

    def run(model):
        out = model.transcribe_and_separate(jnp.asarray(batch["waveform"]), jnp.asarray(batch["conditions"]))
        sdr = np.asarray(separation_metrics.sdr(batch["source"][0], np.asarray(out["waveform"][0])))
        return sdr, {k: np.asarray(out[k][0]) for k in ("reg_onset_output", "frame_output")}

    before, _ = run(untrained)
    after, outputs = run(trained)
    # Both stems (piano, bass): at least 6 dB above the untrained separator's (about 4 and 2 dB:
    # it passes much of the mixture) and above 10 dB.
    assert np.all(after >= before + 6.0) and np.all(after > 10.0), f"SDR untrained {before}, trained {after}"
    for row, notes in ((0, PIANO_NOTES), (1, BASS_NOTES)):
        _, _, f1 = transcription_metrics.note_f1(_reference_notes(notes), _decode_row(outputs, row))
        assert f1 >= 0.9, f"joint stage row {row} note F1 {f1:.3f}"


def test_output_prior_and_bn_momentum_options():
    from jointist_jax.models.separator import Separator
    from jointist_jax.models.transcriber import Transcriber

    kwargs = dict(variant=(4, 4, 4, 4), acoustic_dim=8, gru_hidden=4)
    logmel = jax.random.normal(jax.random.key(1), (1, 20, 229))
    conditions = jnp.zeros((1, 1, instruments.CONDITION_SIZE)).at[0, 0, PIANO].set(1.0)
    prior = Transcriber(**kwargs, output_prior=0.02, rngs=nnx.Rngs(0))
    prior.eval()
    out = prior(logmel, conditions)
    # The biases start at logit(0.02); the inputs' contributions move the posteriors around it.
    assert float(np.median(out["frame_output"])) == pytest.approx(0.02, abs=0.015)
    assert float(np.median(out["reg_onset_output"])) == pytest.approx(0.02, abs=0.015)
    reference = Transcriber(**kwargs, rngs=nnx.Rngs(0))
    reference.eval()
    assert float(np.median(reference(logmel, conditions)["reg_onset_output"])) > 0.2
    assert np.all(np.asarray(reference.reg_onset_model.fc.bias[...]) == 0.0)
    moments = {m.momentum for _, m in nnx.iter_modules(Transcriber(**kwargs, bn_momentum=0.9, rngs=nnx.Rngs(0)))
               if isinstance(m, nnx.BatchNorm)}
    assert moments == {0.9}
    moments = {m.momentum for _, m in nnx.iter_modules(Separator("sum", channels=(2, 2), bn_momentum=0.9,
                                                                 rngs=nnx.Rngs(0))) if isinstance(m, nnx.BatchNorm)}
    assert moments == {0.9}
    with pytest.raises(ValueError, match="output_prior"):
        Transcriber(**kwargs, output_prior=1.0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="bn_momentum"):
        Separator("sum", channels=(2, 2), bn_momentum=1.5, rngs=nnx.Rngs(0))
