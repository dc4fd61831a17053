r"""Converts a released PyTorch Jointist checkpoint into a jointist-jax workdir.

  python launch/convert_torch_checkpoint.py --ckpt FILE --module transcription|ir|joint \
      [--variant narrow|wide] --out DIR

Needs the ``convert`` extra (``pip install '.[convert]'``). A thin wrapper around
:func:`jointist_jax.convert.cli.main` (also the ``jointist-convert`` command).
"""

import sys

from jointist_jax.convert.cli import main

if __name__ == "__main__":
    sys.exit(main())
