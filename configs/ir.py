r"""Stage IR: the instrument recognizer, CNN14 + transformer (docs/reference.md §1.3).

Full size (trained alone in the reference and composed with T at inference):

  python launch/train.py --config=ir --workdir=gs://BUCKET/jointist/ir \
      --config.data.data_dir=gs://BUCKET/tfds

Batch 32 clips; multi-label BCE on the 39 classes present in each 10-s crop; Adam(amsgrad)
lr 1e-3 with the warm-up/staircase schedule.

Length: the reference's detection config trains 300 epochs at batch 32, and an epoch is one crop of
each training track, ceil(tracks / 32) steps, counted on the training split built
(jointist_jax/train/epochs.py): on Slakh2100's 1500 tracks 47 steps, 300 x 47 = 14,100 steps (one
x0.9 decay, at 10k). It validates every 10 epochs (470 steps there). The reference's README command
(50 epochs on 4 GPUs) is a shorter variant; its config is what we follow.

Local smoke run: python launch/train.py --config=ir:runlocal --workdir=demo/workdirs/ir
"""

from configs import defaults


# The `:ARGS` of --config=NAME:ARGS and their defaults.
ARGS = dict(runlocal=False)


def get_config(arg: str | None = None):
    args = defaults.parse_arg(arg, **ARGS)
    config = defaults.base_config()
    config.stage = "ir"
    config.data.global_batch = 32
    config.data.num_positive = 0
    config.data.num_negative = 0
    config.optimizer.lr = 1e-3
    config.epochs = 300  # total_steps 0: epochs of the built training split
    config.eval_every_epochs = 10
    config.model.recognizer = defaults.recognizer_config("full")
    if args.runlocal:
        defaults.apply_runlocal(config)
        config.data.global_batch = 8
        config.model.recognizer = defaults.recognizer_config("tiny")
    return config
