"""Renders a synthetic dataset in the exact Slakh2100 layout with FluidSynth.

Composed songs (tempo, key, chord progression; drums, bass, piano/guitar/strings and 1-6 more
parts)::

    python -m data_pipelines.synth_slakh --out data/synth --tracks 24 --seconds 10 --seed 0 \\
        --splits train=16,validation=4,test=4

or the user's own MIDI files, one stem per MIDI instrument, each file rendered at full length
(plus 1 s for the release)::

    python -m data_pipelines.synth_slakh --out data/mine --midi_dir my_midis/ --seed 0

The output is ``OUT/{train,validation,test}/TrackNNNNN/`` with ``mix.flac``,
``stems/Sxx.flac``, ``MIDI/Sxx.mid``, ``all_src.mid`` and ``metadata.yaml``: 44.1 kHz mono
16-bit FLAC, the mix being exactly the sum of the stems. The same arguments give identical MIDI
and audio. An interrupted run is resumed by running the same command again. Also installed as
the ``jointist-synth-slakh`` console script.

``--out`` and ``--midi_dir`` are local folders: a ``gs://`` path is refused before anything is
written. To put a rendered dataset in a bucket, pack it there:
``python -m data_pipelines.build_slakh --slakh_dir data/synth --data_dir gs://BUCKET/tfds``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_pipelines.synth import compose, dataset, fluidsynth, plan
from data_pipelines.synth.errors import SynthError
from jointist_jax import storage
from jointist_jax.cli_support import OneLineHelpFormatter


def local_folder(text: str) -> Path:
    """A folder argument on local disk; a bucket path is refused (``Path`` would turn
    ``gs://b/x`` into a local ``gs:/b/x``)."""
    if storage.is_remote(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is a bucket path; FluidSynth renders into a local folder. Render locally, then "
            f"pack it into the bucket: python -m data_pipelines.build_slakh --slakh_dir LOCAL_FOLDER "
            f"--data_dir gs://BUCKET/tfds")
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(
        prog="jointist-synth-slakh",
        description="Render a synthetic Slakh2100-format dataset with FluidSynth.",
        formatter_class=OneLineHelpFormatter)
    p.add_argument("--out", type=local_folder, required=True, help="local output folder (created if needed)")
    p.add_argument("--tracks", type=int, default=None,
                   help="number of tracks; with --midi_dir, how many of the files to use "
                        "(default: all); may be left out when --splits gives counts")
    p.add_argument("--seconds", type=float, default=None,
                   help="length of each composed song in seconds (ignored with --midi_dir, whose "
                        "files are rendered at full length)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--max_stems", type=int, default=compose.MAX_STEMS,
                   help=f"at most this many parts per composed song ({compose.MIN_CORE_STEMS}.."
                        f"{compose.MAX_STEMS}; default {compose.MAX_STEMS}: no cap)")
    p.add_argument("--midi_dir", type=local_folder, default=None,
                   help="render the *.mid/*.midi files under this folder instead of composing")
    p.add_argument("--soundfont", default=None,
                   help=f"SF2 soundfont (default {fluidsynth.SYSTEM_SOUNDFONT}, else the "
                        "TimGM6mb.sf2 shipped with pretty_midi)")
    p.add_argument("--splits", default=plan.DEFAULT_SPLITS,
                   help="fractions (train=0.7,validation=0.15,test=0.15; the default) or "
                        "track counts (train=16,validation=4,test=4)")
    p.add_argument("--workers", type=int, default=dataset.default_workers(),
                   help="parallel rendering processes (default min(4, CPUs))")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m data_pipelines.synth_slakh`` and ``jointist-synth-slakh``.

    Returns 0 on success; problems the user can fix exit with a one-line error message.
    """
    args = build_parser().parse_args(argv)
    options = dataset.Options(out=args.out, tracks=args.tracks, seconds=args.seconds,
                              seed=args.seed, midi_dir=args.midi_dir, soundfont=args.soundfont,
                              splits=args.splits, workers=args.workers, max_stems=args.max_stems)
    try:
        dataset.synthesize(options, log=lambda line: print(line, flush=True))
    except SynthError as e:
        raise SystemExit(f"jointist-synth-slakh: error: {e}") from e
    return 0


if __name__ == "__main__":
    sys.exit(main())
