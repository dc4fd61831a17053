"""Training length in epochs of the training split built (jointist_jax/train/epochs.py)."""

import importlib

import pytest

from jointist_jax.train import epochs


def test_steps_for_epochs_keep_the_last_partial_batch():
    assert epochs.steps_for_epochs(300, 32, 1500) == 300 * 47
    assert epochs.steps_for_epochs(2, 3, 7) == 6
    with pytest.raises(ValueError, match="positive epochs"):
        epochs.steps_for_epochs(0, 32, 1500)


def test_length_follows_the_training_split_built(tiny_tfds_dir):
    """The tiny dataset has 4 training and 2 validation tracks: the same config trains twice as
    many steps on the 4-track split as on the 2-track one."""
    config = importlib.import_module("configs.transcription").get_config()  # 1000 epochs, batch 2
    config.data.data_dir = str(tiny_tfds_dir)
    config.data.clip_seconds = 2.0
    resolved = epochs.resolve_length(config, tiny_tfds_dir)
    assert (resolved.total_steps, resolved.eval_every) == (1000 * 2, 50 * 2)
    config.data.train_split = "validation"
    resolved = epochs.resolve_length(config, tiny_tfds_dir)
    assert (resolved.total_steps, resolved.eval_every) == (1000 * 1, 50 * 1)
    assert config.total_steps == 0  # the caller's config is left as it was
    config.data.global_batch = 3  # a partial last batch is a step: ceil(4 / 3) = 2
    config.data.train_split = "train"
    config.total_steps = 7  # a given length wins
    resolved = epochs.resolve_length(config, tiny_tfds_dir)
    assert (resolved.total_steps, resolved.eval_every) == (7, 100)
    config.eval_every_epochs = 0
    with pytest.raises(ValueError, match="config.eval_every is 0.*config.eval_every_epochs"):
        epochs.resolve_length(config, tiny_tfds_dir)


def test_training_takes_its_length_from_the_split(tiny_tfds_dir, tmp_path, monkeypatch):
    """The trainer builds the run (and saves its config) from the resolved length."""
    from jointist_jax.train import trainer

    class Built(Exception):
        pass

    def run(config, mesh):
        raise Built(config)

    monkeypatch.setattr(trainer, "Run", run)
    config = importlib.import_module("configs.ir").get_config("runlocal")
    config.data.data_dir = str(tiny_tfds_dir)
    config.data.global_batch = 8  # 4 tracks: one step per epoch
    config.epochs, config.total_steps = 3, 0
    config.eval_every_epochs, config.eval_every = 1, 0
    with pytest.raises(Built) as built:
        trainer.train_and_evaluate(config, str(tmp_path))
    resolved = built.value.args[0]
    assert (resolved.total_steps, resolved.eval_every) == (3, 1)
