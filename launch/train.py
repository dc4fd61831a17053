r"""Trains one Jointist stage: ``python launch/train.py --config=NAME[:ARGS] --workdir=DIR``.

``--config=joint_pretrained`` resolves to ``configs/joint_pretrained.py``; a path works too, and
``:ARGS`` selects variants (``--config=transcription:variant=wide`` or ``:runlocal``). Any field
can be overridden: ``--config.optimizer.lr=3e-4``. The same command runs on one CPU, a multi-GPU
host or every host of a TPU slice (see launch/README.md for multi-host recipes).

A thin wrapper around :func:`jointist_jax.train.cli.main` (also the ``jointist-train`` command).
"""

from jointist_jax.train.cli import main

if __name__ == "__main__":
    main()
