r"""Stage TS: transcriber + separator trained jointly from scratch (docs/reference.md §1.4, §3.4).

  python launch/train.py --config=joint_scratch --workdir=gs://BUCKET/jointist/ts \
      --config.data.data_dir=gs://BUCKET/tfds

Batch 2 tracks x 3 positive instruments = 6 rows; loss L_T + L_MSS (1:1); one Adam(amsgrad)
at lr 1e-4 over both modules; the separation loss back-propagates into the transcriber; the
separator reads the frame posteriorgram (`straight_through=True` binarises it at 0.1).

Length: the reference's joint config trains 500 epochs at batch 2, and an epoch is one crop of
each training track of the split built (jointist_jax/train/epochs.py): on Slakh2100's 1500 tracks
750 steps, 500 x 750 = 375,000 steps. Validation every 5 epochs as in the reference (3,750 steps
there).

Local smoke run: python launch/train.py --config=joint_scratch:runlocal --workdir=demo/workdirs/ts
"""

from configs import defaults


# The `:ARGS` of --config=NAME:ARGS and their defaults.
ARGS = dict(variant="narrow", runlocal=False)


def get_config(arg: str | None = None):
    args = defaults.parse_arg(arg, **ARGS)
    config = defaults.base_config()
    config.stage = "joint"
    config.data.global_batch = 2
    config.data.num_positive = 3
    config.data.num_negative = 0
    config.optimizer.lr = 1e-4
    config.straight_through = False
    config.epochs = 500  # total_steps 0: epochs of the built training split
    config.eval_every_epochs = 5
    config.model.transcriber = defaults.transcriber_config(args.variant)
    config.model.separator = defaults.separator_config("sum", "full")
    if args.runlocal:
        defaults.apply_runlocal(config)
        config.model.transcriber = defaults.transcriber_config("tiny")
        # Posteriorgrams start at the notes' base rate, not 0.5; faster BatchNorm statistics.
        defaults.apply_runlocal_transcriber(config.model.transcriber)
        config.model.separator = defaults.separator_config("sum", "tiny")
        defaults.apply_runlocal_separator(config.model.separator)
    return config
