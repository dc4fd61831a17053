"""``jointist-transcribe``: songs -> multi-track MIDI, notes JSON, piano roll, posteriorgrams, stems.

  jointist-transcribe --checkpoint RUN --audio SONG_OR_FOLDER --out OUT \
      [--instruments piano,bass,drums | auto --ir_checkpoint IR_RUN] [--separate]

``--checkpoint`` is a ``transcription`` run or a ``joint`` run (needed for ``--separate``).
``auto`` asks the recognizer of ``--ir_checkpoint`` which instruments play (its per-window
detections aggregated with ``--ir_aggregate``); if it detects none, all 39 classes are
transcribed, as the reference does. Each song's results go to ``OUT/<song>/``
(see :mod:`jointist_jax.inference.outputs`). A song that fails (unreadable, silent, ...) is
reported and skipped; the exit status is then 1. Set-up errors (bad flags, unknown instrument,
bad checkpoint, no audio) exit with status 2 before any song is processed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from jointist_jax import instruments, storage, xla_flags
from jointist_jax.cli_support import OneLineHelpFormatter

PROG = "jointist-transcribe"


def add_batching_flags(parser: argparse.ArgumentParser) -> None:
    """``--batch_windows``, ``--max_rows`` and ``--memory_budget``: the rows of each model call
    (shared by ``jointist-transcribe`` and ``jointist-app``)."""
    parser.add_argument("--batch_windows", type=int, default=2,
                        help="10-s windows per model call (memory grows with windows x instruments)")
    parser.add_argument("--max_rows", type=int, default=0,
                        help="at most this many window x instrument rows per model call: instruments beyond "
                             "max_rows // batch_windows go in further calls; 0: as many as --memory_budget allows")
    parser.add_argument("--memory_budget", default=None,
                        help="memory this process may use (e.g. 4GB, 3500MB): the rows per call are the most "
                             "that fit; default: what it holds plus 90%% of the machine's available memory")


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0].replace("``", ""),
        formatter_class=OneLineHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="workdir of a transcription or joint run")
    parser.add_argument("--audio", required=True, help="a wav/flac/ogg/mp3 file, or a folder searched recursively")
    parser.add_argument("--out", required=True, help="output folder (created; songs already there are replaced)")
    parser.add_argument("--instruments", default="auto",
                        help="comma-separated instrument names (classes, GM names or aliases such as "
                             "piano,bass,drums), or 'auto' to use the recognizer of --ir_checkpoint")
    parser.add_argument("--ir_checkpoint", default=None, help="workdir of an ir run (needed for 'auto')")
    parser.add_argument("--separate", action="store_true", help="also write one separated WAV per instrument")
    add_batching_flags(parser)
    parser.add_argument("--onset_threshold", type=float, default=0.1,
                        help="onset posterior a note must reach to start (onset-gated decoding)")
    parser.add_argument("--frame_threshold", type=float, default=0.1,
                        help="frame posterior a note must keep to go on")
    parser.add_argument("--min_note_frames", type=int, default=1,
                        help="drop decoded notes shorter than this many 10-ms frames")
    parser.add_argument("--min_midi_duration", type=float, default=0.05,
                        help="notes shorter than this (seconds) are left out of the MIDI file only")
    parser.add_argument("--ir_threshold", type=float, default=0.5,
                        help="recognizer probability above which an instrument counts as playing ('auto')")
    parser.add_argument("--ir_aggregate", choices=("any", "mean"), default="any",
                        help="'any': an instrument detected in any window; 'mean': mean probability > threshold")
    parser.add_argument("--window_hop", type=int, default=80000,
                        help="samples between the starts of the 10-s windows: 80000 (50 %% overlap, the reference's) "
                             "up to 160000 (no overlap: about half the work, docs/deviations.md 38)")
    parser.add_argument("--restore_bass_octave", action="store_true",
                        help="shift bass notes up 12 semitones in the MIDI, JSON and piano roll (the training "
                             "labels are an octave low, docs/deviations.md 11); the .npz posteriorgrams stay as predicted")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


class WindowBar:
    """A song's :class:`~jointist_jax.inference.songs.Progress` on a tqdm bar: one bar per stage."""

    def __init__(self, bar):
        self.bar = bar

    def start(self, stage: str, windows: int) -> None:
        self.bar.reset(total=windows)
        self.bar.set_description(stage)

    def advance(self, windows: int) -> None:
        self.bar.update(windows)


class UsageError(ValueError):
    """A set-up error reported before any song is processed."""


def parse_instruments(text: str) -> list[int] | None:
    """Class indices of a comma-separated list, or None for 'auto'."""
    if text.strip().lower() == "auto":
        return None
    names = [n for n in (part.strip() for part in text.split(",")) if n]
    if not names:
        raise UsageError("--instruments is empty; give names such as piano,bass,drums or 'auto'")
    try:
        return instruments.class_indices(names)
    except instruments.UnknownInstrumentError as error:
        raise UsageError(f"--instruments: {error}") from error


def song_options(args: argparse.Namespace):
    """The :class:`~jointist_jax.inference.songs.SongOptions` of the flags (checked there; a bad value
    is a :class:`UsageError` naming its flag)."""
    from jointist_jax.inference import memory
    from jointist_jax.inference.songs import SongOptions

    try:
        return SongOptions(batch_windows=args.batch_windows, max_rows=args.max_rows or None,
                           memory_budget=memory.budget_of(args.memory_budget),
                           onset_threshold=args.onset_threshold, frame_threshold=args.frame_threshold,
                           min_note_frames=args.min_note_frames, ir_threshold=args.ir_threshold,
                           ir_aggregate=args.ir_aggregate, window_hop=args.window_hop)
    except ValueError as error:  # each message starts with the option's name
        raise UsageError(f"--{error}") from error


def run(args: argparse.Namespace) -> int:
    """Transcribes every song; returns the exit status (0 ok, 1 some songs failed)."""
    # Heavy imports here so `--help` and flag errors are instant.
    from tqdm import tqdm

    from jointist_jax import runs
    from jointist_jax.inference import audio_io, outputs, postprocess, songs

    options = song_options(args)
    if args.min_midi_duration < 0:
        raise UsageError(f"--min_midi_duration must be >= 0, got {args.min_midi_duration}")
    class_ids = parse_instruments(args.instruments)
    if class_ids is None and args.ir_checkpoint is None:
        raise UsageError("--instruments auto needs --ir_checkpoint (an ir run); or name the instruments, "
                         "e.g. --instruments piano,bass,drums")
    files = audio_io.find_audio_files(args.audio)
    names = audio_io.song_names(files, args.audio)
    # Check both runs' stages before reading any weights (reading a run takes a while).
    transcriber_run = runs.open(args.checkpoint, role="--checkpoint")
    runs.check_transcriber(transcriber_run, separate=args.separate)
    recognizer_run = None
    if class_ids is None:
        recognizer_run = runs.open(args.ir_checkpoint, role="--ir_checkpoint")
        runs.check_recognizer(recognizer_run)
    model = runs.load_model(transcriber_run)
    recognizer = runs.load_model(recognizer_run) if recognizer_run is not None else None
    predictor = songs.make_predictor(model, recognizer, options)
    bass_classes = {instruments.class_of_program(p) for p in instruments.BASS_PROGRAMS}
    out_dir = storage.make_dirs(args.out, role="--out")

    failures = 0
    song_bar = tqdm(list(zip(files, names)), desc="songs", unit="song", disable=args.quiet)
    for path, name in song_bar:
        song_bar.set_postfix_str(name)
        try:
            waveform = audio_io.load_audio(path)
        except audio_io.AudioError as error:
            print(f"{PROG}: skipping song: {error}", file=sys.stderr)
            failures += 1
            continue
        extra = {"instrument_selection": "user"}
        song_classes = class_ids
        try:
            with outputs.SongWriter(out_dir, name, source=str(path), num_samples=waveform.shape[0]) as writer, \
                    tqdm(unit="window", leave=False, disable=args.quiet) as bar:
                progress = WindowBar(bar)
                if song_classes is None:
                    choice = songs.choose_instruments(predictor, waveform, options, progress=progress)
                    song_classes = choice.classes
                    extra = {"instrument_selection": f"recognizer ({args.ir_aggregate})",
                             "recognizer_window_probabilities": choice.window_probabilities.tolist()}
                    if choice.detected_none:
                        print(f"{PROG}: {name}: the recognizer detected no instrument; transcribing all "
                              f"{instruments.NUM_CLASSES} classes (as the reference does)", file=sys.stderr)
                        extra["recognizer_detected_none"] = True
                notes = songs.transcribe_into(writer, predictor, waveform, song_classes, options,
                                              separate=args.separate, progress=progress)
                if args.restore_bass_octave:
                    notes = postprocess.shift_notes(notes, bass_classes, -instruments.BASS_OCTAVE_SHIFT)
                extra.update(onset_threshold=args.onset_threshold, frame_threshold=args.frame_threshold,
                             min_note_frames=args.min_note_frames, bass_octave_restored=args.restore_bass_octave)
                writer.finish(notes, min_midi_duration=args.min_midi_duration, extra=extra)
        except OSError as error:  # e.g. disk full: nothing of this song is left behind (outputs.SongWriter)
            print(f"{PROG}: {name}: could not write the results: {error}", file=sys.stderr)
            failures += 1
    song_bar.close()
    if failures:
        print(f"{PROG}: {failures} of {len(files)} songs failed", file=sys.stderr)
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    xla_flags.apply_cpu_flags(inference=True)  # before jax loads
    from jointist_jax import runs
    from jointist_jax.inference import audio_io, memory

    try:
        return run(args)
    except (UsageError, audio_io.AudioError, runs.CheckpointError, storage.StorageError,
            memory.MemoryBudgetError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
