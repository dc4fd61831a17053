r"""Converts a released PyTorch Jointist checkpoint into a jointist-jax workdir.

  python launch/convert_torch_checkpoint.py --ckpt FILE --module transcription|ir|joint \
      [--variant narrow|wide] --out DIR

Needs the ``convert`` extra (``pip install '.[convert]'``). See ``jointist_jax/convert/cli.py``.
"""

from __future__ import annotations

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)  # the stage configs (configs/) live at the repository root

from jointist_jax import xla_flags  # noqa: E402

xla_flags.apply_cpu_flags()

from jointist_jax.convert import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli.main())
