r"""Stage pTS, the paper's best model: joint T + S with T initialised from a trained T.

  python launch/train.py --config=joint_pretrained --workdir=gs://BUCKET/jointist/pts \
      --config.init_from=gs://BUCKET/jointist/transcription \
      --config.data.data_dir=gs://BUCKET/tfds

`init_from` is a `transcription` workdir (its latest checkpoint) or one checkpoint directory;
only the transcriber's parameters and statistics are taken from it, the separator starts
fresh. Everything else is `joint_scratch` (docs/reference.md §1.4), including its length: the reference
runs the same 500 epochs (375,000 steps at batch 2 on Slakh2100's 1500 training tracks) from the
pretrained transcriber.

Local smoke run (after `transcription:runlocal`):

  python launch/train.py --config=joint_pretrained:runlocal --workdir=demo/workdirs/pts \
      --config.init_from=demo/workdirs/transcription
"""

from configs import joint_scratch

ARGS = joint_scratch.ARGS


def get_config(arg: str | None = None):
    config = joint_scratch.get_config(arg)
    config.init_from = ""  # required: set on the command line
    config.require_init_from = True
    return config
