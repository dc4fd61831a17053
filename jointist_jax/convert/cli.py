"""Command line of the checkpoint converter (``jointist-convert``, ``launch/convert_torch_checkpoint.py``).

    python launch/convert_torch_checkpoint.py --ckpt transcription1000.ckpt --module transcription \
        --variant narrow --out weights/transcription

writes an orbax workdir (``config.json`` + ``checkpoints/0``) that ``launch/transcribe.py``,
``launch/eval.py`` and ``config.init_from`` accept. Exit status 0 on success, 2 on a conversion
error (the message names the file and key).
"""

from __future__ import annotations

import argparse
import sys

from jointist_jax.cli_support import OneLineHelpFormatter
from jointist_jax.convert import convert
from jointist_jax.convert.torch_checkpoint import ConversionError
from jointist_jax.storage import StorageError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The converter's flags."""
    parser = argparse.ArgumentParser(
        prog="jointist-convert",
        formatter_class=OneLineHelpFormatter,
        description="Convert a released PyTorch Lightning Jointist checkpoint into a jointist-jax "
                    "orbax checkpoint (needs the 'convert' extra: torch 2.13.0 CPU).")
    parser.add_argument("--ckpt", required=True, help="the Lightning .ckpt file")
    parser.add_argument("--module", required=True, choices=convert.MODULES,
                        help="what the checkpoint holds: transcription (transcription1000.ckpt), "
                             "ir (MTT.ckpt) or joint (tseparation.ckpt: transcriber + separator)")
    parser.add_argument("--variant", choices=convert.VARIANTS, default=None,
                        help="transcriber width for transcription/joint (default: "
                             f"{convert.DEFAULT_VARIANT}, the released checkpoints' width)")
    parser.add_argument("--out", required=True, help="output workdir (must not exist unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the conversion; returns the process exit status."""
    args = parse_args(argv)
    try:
        out = convert.convert_checkpoint(args.ckpt, args.out, args.module, args.variant,
                                         overwrite=args.overwrite)
    except (ConversionError, StorageError) as e:
        print(f"jointist-convert: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} (module {args.module}"
          + (f", variant {args.variant or convert.DEFAULT_VARIANT}" if args.module != "ir" else "") + ")")
    return 0
