"""Transcribes songs with a trained run: ``python launch/transcribe.py --checkpoint RUN --audio SONG --out DIR``.

A thin wrapper around :func:`jointist_jax.inference.cli.main` (also the ``jointist-transcribe`` command).
"""

import sys

from jointist_jax.inference.cli import main

if __name__ == "__main__":
    sys.exit(main())
