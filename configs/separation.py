r"""Stage S: the standalone separator baseline, `CondUNet` with STFT hop 320 (docs/reference.md §1.5).

Full size:

  python launch/train.py --config=separation --workdir=gs://BUCKET/jointist/separation \
      --config.data.data_dir=gs://BUCKET/tfds

Batch 4 tracks x (3 positive + 1 negative) rows; L1 loss on the waveform over rows with a
target stem (negatives: a silent target, docs/deviations.md 14); Adam(amsgrad) lr 1e-4.

Length: the reference's separation config trains 500 epochs at batch 4, and an epoch is one crop
of each training track of the split built (jointist_jax/train/epochs.py): on Slakh2100's 1500
tracks ceil(1500 / 4) = 375 steps, 500 x 375 = 187,500 steps. Validation every 5 epochs as in the
reference (1,875 steps there).

Local smoke run: python launch/train.py --config=separation:runlocal --workdir=demo/workdirs/separation
"""

from configs import defaults


# The `:ARGS` of --config=NAME:ARGS and their defaults.
ARGS = dict(runlocal=False)


def get_config(arg: str | None = None):
    args = defaults.parse_arg(arg, **ARGS)
    config = defaults.base_config()
    config.stage = "separation"
    config.data.global_batch = 4
    config.data.num_positive = 3
    config.data.num_negative = 1
    config.optimizer.lr = 1e-4
    config.epochs = 500  # total_steps 0: epochs of the built training split
    config.eval_every_epochs = 5
    config.model.separator = defaults.separator_config("standalone", "full")
    if args.runlocal:
        defaults.apply_runlocal(config)
        config.model.separator = defaults.separator_config("standalone", "tiny")
        defaults.apply_runlocal_separator(config.model.separator)
    return config
