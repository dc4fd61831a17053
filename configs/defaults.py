"""Fields shared by every stage's config, with the reference's defaults (docs/reference.md §1, docs/deviations.md 6-10).

Each stage file (``ir.py``, ``transcription.py``, ``separation.py``, ``joint_scratch.py``,
``joint_pretrained.py``) starts from :func:`base_config` and sets what differs. The string
argument of ``get_config(arg)`` is parsed by :func:`parse_arg`: comma-separated flags and
``key=value`` pairs, e.g. ``runlocal`` or ``variant=wide,runlocal``.
"""

from __future__ import annotations

import ml_collections


# The values a config argument may take, where it is not a flag.
ARG_CHOICES = {"variant": ("narrow", "wide")}


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Parses ``"flag,key=value"`` into a ConfigDict over ``defaults`` (unknown keys are errors)."""
    parsed = ml_collections.ConfigDict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        if key not in defaults:
            raise ValueError(f"unknown config argument {key!r}; valid: {', '.join(sorted(defaults))}")
        default = defaults[key]
        if isinstance(default, bool):
            parsed[key] = value.lower() not in ("0", "false", "no") if value else True
        else:
            parsed[key] = type(default)(value)
        if key in ARG_CHOICES and parsed[key] not in ARG_CHOICES[key]:
            raise ValueError(f"config argument {key}={value!r} is not one of {', '.join(ARG_CHOICES[key])}")
    return parsed


def base_config() -> ml_collections.ConfigDict:
    """The fields every stage has, at the reference's values."""
    config = ml_collections.ConfigDict()
    config.stage = ""  # ir | transcription | separation | joint
    config.seed = 0

    # Input: the TFDS Slakh2100 clips built by `python -m data_pipelines.build_slakh`.
    config.data = ml_collections.ConfigDict()
    config.data.data_dir = "~/tensorflow_datasets"
    config.data.train_split = "train"
    config.data.eval_split = "validation"
    config.data.clip_seconds = 10.0
    config.data.global_batch = 2  # clips (tracks) per step, over all hosts
    config.data.num_positive = 3  # sampled present instruments per clip (with replacement)
    config.data.num_negative = 0  # sampled absent instruments per clip (Empty included)
    config.data.temperature = 0.5  # positives ~ (1/occurrence)^temperature (docs/reference.md §3.1)
    config.data.transcribe_negatives = False  # docs/deviations.md 14: False = code behaviour (no L_T)
    # "per_track": one crop of every track per epoch, as the reference (docs/reference.md §4.3);
    # "all_audio": every crop start equally likely, so long songs weigh more.
    config.data.crop_sampling = "per_track"
    # Validation batches per evaluation (one fixed window per track): -1 = the whole validation
    # split, as the reference; 0 switches validation off. Each validation also saves a checkpoint
    # that carries its loss; the lowest is kept beside the last few (`best`).
    config.data.eval_batches = -1

    config.model = ml_collections.ConfigDict()
    config.model.dtype = "float32"  # compute dtype; "bfloat16" on accelerators
    config.model.remat = False  # rematerialise conv blocks and GRUs (memory for compute)

    # Adam with amsgrad, linear warm-up from 0, then x0.9 every 10k steps (docs/deviations.md 7).
    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.lr = 1e-3
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-8
    config.optimizer.warmup_steps = 1000
    config.optimizer.decay_every = 10000
    config.optimizer.decay_rate = 0.9

    # Training length in the reference's epochs, one crop of every track of the training split
    # actually built, ceil(tracks / global_batch) steps each (jointist_jax/train/epochs.py): each
    # stage sets `epochs` and `eval_every_epochs` (its validation cadence). `total_steps` and
    # `eval_every` at 0 take them; positive values (runlocal, command-line overrides) win.
    config.epochs = 0
    config.eval_every_epochs = 0
    config.total_steps = 0
    config.log_every = 50
    config.eval_every = 0
    config.checkpoint_every = 1_000
    config.keep_checkpoints = 3
    config.init_from = ""  # a workdir or checkpoint path (joint_pretrained: a transcription run)
    config.shard_params = False  # shard the largest parameters along `data` (memory)
    config.shard_params_min_size = 2 ** 20  # parameters with at least this many elements
    return config


def apply_runlocal(config: ml_collections.ConfigDict) -> None:
    """Shrinks steps and cadences so a few hundred steps run on a 2-core CPU in minutes."""
    config.data.data_dir = "demo/tfds"
    config.data.clip_seconds = 2.0
    config.data.eval_batches = 2
    config.optimizer.warmup_steps = 20
    config.optimizer.decay_every = 200
    config.total_steps = 200
    config.log_every = 10
    config.eval_every = 100
    config.checkpoint_every = 50


# Model sizes. "full" / "narrow" / "wide" are the reference's; "tiny" is for runlocal and tests;
# "small" (between tiny and narrow) is for CPU learning checks.
def transcriber_config(size: str) -> ml_collections.ConfigDict:
    """Constructor arguments of :class:`jointist_jax.models.transcriber.Transcriber`.

    ``output_prior`` (0: the reference's output-bias initialisation) and ``bn_momentum`` (0.99:
    the reference's) are the reference's for every size; the runlocal recipes change them
    (:func:`apply_runlocal_transcriber`).
    """
    if size in ("narrow", "wide"):
        return ml_collections.ConfigDict(dict(variant=size, acoustic_dim=768, gru_hidden=256, output_prior=0.0, bn_momentum=0.99))
    if size == "small":
        return ml_collections.ConfigDict(dict(variant=(16, 16, 32, 32), acoustic_dim=128, gru_hidden=64,
                                              output_prior=0.0, bn_momentum=0.99))
    if size == "tiny":
        return ml_collections.ConfigDict(dict(variant=(8, 8, 16, 16), acoustic_dim=64, gru_hidden=32,
                                              output_prior=0.0, bn_momentum=0.99))
    raise ValueError(f"transcriber size must be narrow, wide, small or tiny, got {size!r}")


# The posteriorgrams' starting value in the runlocal recipes: about the density of active cells in
# the synthetic songs' frame rolls (1-2 %). Output biases at 0 start every posterior at 0.5; the
# first steps' gradients are then hundreds of times larger than later ones, Adam's second-moment
# estimate (b2 = 0.999, amsgrad's running maximum) keeps them, and every layer below the outputs
# takes steps hundreds of times smaller for thousands of steps (README, "Learning").
RUNLOCAL_OUTPUT_PRIOR = 0.02
# BatchNorm running-statistics decay of the runlocal transcribers (Flax convention): PyTorch's
# default momentum 0.1 instead of the reference's 0.01, whose statistics average the last ~100
# steps and so lag weights that move quickly in a run of a few hundred steps; inference uses them.
RUNLOCAL_BN_MOMENTUM = 0.9


def apply_runlocal_separator(separator: ml_collections.ConfigDict) -> None:
    """The runlocal recipe's separator BatchNorm setting (see :data:`RUNLOCAL_BN_MOMENTUM`)."""
    separator.bn_momentum = RUNLOCAL_BN_MOMENTUM


def apply_runlocal_transcriber(transcriber: ml_collections.ConfigDict) -> None:
    """The runlocal recipe's transcriber initialisation and BatchNorm settings."""
    transcriber.output_prior = RUNLOCAL_OUTPUT_PRIOR
    transcriber.bn_momentum = RUNLOCAL_BN_MOMENTUM


def separator_config(mode: str, size: str) -> ml_collections.ConfigDict:
    """Constructor arguments of :class:`jointist_jax.models.separator.Separator`.

    ``mode="sum"`` is the joint `TCondUNet` (STFT hop 160); ``"standalone"`` the `S` baseline
    `CondUNet`, whose hop is 320 as coded (docs/deviations.md 5). The hops and the full size are the
    model's own defaults (``separator.DEFAULT_HOPS``, ``separator.DEFAULT_CHANNELS``).
    """
    from jointist_jax.models import separator  # here: --help reads configs without loading JAX

    hop = separator.DEFAULT_HOPS.get(mode)  # an unknown mode: the Separator names the modes
    if size == "full":
        channels = separator.DEFAULT_CHANNELS
    elif size == "tiny":
        channels = (4, 8, 8, 16, 16, 16)
    else:
        raise ValueError(f"separator size must be full or tiny, got {size!r}")
    return ml_collections.ConfigDict(dict(mode=mode, hop=hop, channels=channels, bn_momentum=0.99))


def recognizer_config(size: str) -> ml_collections.ConfigDict:
    """Constructor arguments of :class:`jointist_jax.models.recognizer.Recognizer`."""
    if size == "full":
        return ml_collections.ConfigDict(dict(
            channels=(64, 128, 256, 512, 1024, 2048), d_model=256, num_layers=4, num_heads=8,
            ff_dim=1024))
    if size == "tiny":
        return ml_collections.ConfigDict(dict(
            channels=(4, 8, 8, 16, 16, 16), d_model=16, num_layers=1, num_heads=2, ff_dim=32))
    raise ValueError(f"recognizer size must be full or tiny, got {size!r}")
