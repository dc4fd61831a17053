r"""Evaluates a run on whole songs: ``python launch/eval.py --workdir=DIR``.

  python launch/eval.py --workdir=gs://BUCKET/jointist/joint [--data_dir=gs://BUCKET/tfds] \
      [--checkpoint 100000] [--split test] [--ir_checkpoint gs://BUCKET/jointist/ir]

A thin wrapper around :func:`jointist_jax.evaluation.cli.main` (also the ``jointist-eval``
command), where every flag is described.
"""

from jointist_jax.evaluation.cli import main

if __name__ == "__main__":
    main()
