"""Transcribes songs with a trained run: ``python launch/transcribe.py --checkpoint RUN --audio SONG --out DIR``.

A thin wrapper around :func:`jointist_jax.inference.cli.main` (also the ``jointist-transcribe`` command).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jointist_jax.inference.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
