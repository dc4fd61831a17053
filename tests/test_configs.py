"""Stage configs and the --config=NAME[:ARGS] resolution of launch/train.py."""

import importlib
from pathlib import Path

import pytest

from configs import defaults
from jointist_jax import cli_support

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["ir", "transcription", "separation", "joint_scratch", "joint_pretrained"]


@pytest.mark.parametrize("name", STAGES)
def test_every_stage_has_full_and_runlocal_variants(name):
    module = importlib.import_module(f"configs.{name}")
    full, local = module.get_config(), module.get_config("runlocal")
    assert full.stage == local.stage and full.stage in ("ir", "transcription", "separation", "joint")
    # Full size: the reference's epochs of the training split built; runlocal: a few steps.
    assert full.total_steps == 0 and full.epochs > 0 and local.total_steps > 0
    assert local.data.clip_seconds < full.data.clip_seconds
    assert full.data.clip_seconds == 10.0 and full.optimizer.warmup_steps == 1000
    assert module.__doc__ and "launch/train.py" in module.__doc__


def test_reference_defaults():
    joint = importlib.import_module("configs.joint_scratch").get_config()
    assert (joint.data.global_batch, joint.data.num_positive, joint.data.num_negative) == (2, 3, 0)
    assert joint.optimizer.lr == 1e-4 and joint.optimizer.decay_rate == 0.9 and not joint.straight_through
    t = importlib.import_module("configs.transcription").get_config("variant=wide")
    assert t.model.transcriber.variant == "wide" and t.optimizer.lr == 1e-3
    assert importlib.import_module("configs.separation").get_config().model.separator.hop == 320
    assert importlib.import_module("configs.joint_pretrained").get_config().require_init_from


# Reference length per stage: (epochs, batch) of its config and its validation cadence in epochs;
# in steps on Slakh2100's 1500 training tracks and on the redux split's 1289.
REFERENCE_LENGTHS = {
    "ir": (300, 32, 10, 14_100, 12_300),
    "transcription": (1000, 2, 50, 750_000, 645_000),
    "separation": (500, 4, 5, 187_500, 161_500),
    "joint_scratch": (500, 2, 5, 375_000, 322_500),
    "joint_pretrained": (500, 2, 5, 375_000, 322_500),
}


@pytest.mark.parametrize("name", STAGES)
def test_full_size_stages_train_as_many_epochs_as_the_reference(name):
    from jointist_jax.train.epochs import steps_for_epochs

    epochs, batch, eval_epochs, steps, redux_steps = REFERENCE_LENGTHS[name]
    config = importlib.import_module(f"configs.{name}").get_config()
    assert config.data.global_batch == batch
    assert (config.epochs, config.eval_every_epochs) == (epochs, eval_epochs)
    assert (config.total_steps, config.eval_every) == (0, 0)  # taken from the epochs
    assert steps_for_epochs(config.epochs, batch, 1500) == steps
    assert steps_for_epochs(config.epochs, batch, 1289) == redux_steps
    assert steps_for_epochs(config.eval_every_epochs, batch, 1500) == eval_epochs * -(-1500 // batch)


def test_config_arguments_are_checked():
    assert defaults.parse_arg("variant=wide,runlocal", variant="narrow", runlocal=False).to_dict() == \
        {"variant": "wide", "runlocal": True}
    with pytest.raises(ValueError, match="unknown config argument 'size'"):
        defaults.parse_arg("size=big", runlocal=False)


def test_config_names_resolve_to_files():
    resolved = cli_support.resolve_config_argument(["--config=joint_pretrained:runlocal", "--workdir=x"])
    assert resolved == [f"--config={ROOT / 'configs' / 'joint_pretrained.py'}:runlocal", "--workdir=x"]
    assert cli_support.resolve_config_argument(["--config=my/own.py:a"]) == ["--config=my/own.py:a"]
    with pytest.raises(SystemExit, match="no config 'nope'.*joint_pretrained"):
        cli_support.resolve_config_argument(["--config=nope"])


def test_runlocal_recipes_change_initialisation_and_batchnorm_only_there():
    for name in ("transcription", "joint_scratch", "joint_pretrained"):
        module = importlib.import_module(f"configs.{name}")
        full, local = module.get_config().model.transcriber, module.get_config("runlocal").model.transcriber
        assert (full.output_prior, full.bn_momentum) == (0.0, 0.99)  # the reference's
        assert (local.output_prior, local.bn_momentum) == (defaults.RUNLOCAL_OUTPUT_PRIOR, defaults.RUNLOCAL_BN_MOMENTUM)
    for name in ("joint_scratch", "separation"):
        module = importlib.import_module(f"configs.{name}")
        assert module.get_config().model.separator.bn_momentum == 0.99
        assert module.get_config("runlocal").model.separator.bn_momentum == defaults.RUNLOCAL_BN_MOMENTUM
    small = defaults.transcriber_config("small")
    assert tuple(small.variant) == (16, 16, 32, 32) and small.acoustic_dim == 128
