"""``jointist-app``: a song to MIDI and stems in the browser.

  jointist-app --checkpoint RUN [--ir_checkpoint IR_RUN] [--port 8000]

Loads the runs once (the same checks and predictor as ``jointist-transcribe``), then serves a page
on http://127.0.0.1:PORT/ where an audio file is dropped, instruments are picked (or "auto" with
``--ir_checkpoint``), and the piano rolls, the separated stems, the MIDI file, the notes JSON and a
zip of everything come back. Songs from several tabs are queued and processed one at a time.
Set-up errors (bad flags, bad checkpoint) exit with status 2 before anything is served.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from jointist_jax import xla_flags
from jointist_jax.cli_support import OneLineHelpFormatter
from jointist_jax.inference.cli import add_batching_flags

PROG = "jointist-app"


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=OneLineHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="workdir of a transcription run, or a joint run (which also separates stems)")
    parser.add_argument("--ir_checkpoint", default=None, help="workdir of an ir run: enables 'auto' instruments")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    parser.add_argument("--max_upload_mb", type=float, default=100.0, help="largest audio file accepted")
    add_batching_flags(parser)
    return parser


def load_engine(args: argparse.Namespace, work_dir: Path):
    """The :class:`~jointist_jax.app.jobs.Engine` of the flags' runs."""
    from jointist_jax.app.jobs import Engine
    from jointist_jax import runs
    from jointist_jax.inference import memory, songs

    if args.max_upload_mb <= 0:
        raise ValueError(f"--max_upload_mb must be positive, got {args.max_upload_mb}")
    try:
        options = songs.SongOptions(batch_windows=args.batch_windows, max_rows=args.max_rows or None,
                                    memory_budget=memory.budget_of(args.memory_budget))
    except ValueError as error:  # each message starts with the option's name
        raise ValueError(f"--{error}") from error
    transcriber_run = runs.open(args.checkpoint, role="--checkpoint")
    runs.check_transcriber(transcriber_run, separate=False)
    separate = transcriber_run.stage.separates
    recognizer_run = None
    if args.ir_checkpoint is not None:
        recognizer_run = runs.open(args.ir_checkpoint, role="--ir_checkpoint")
        runs.check_recognizer(recognizer_run)
    model = runs.load_model(transcriber_run)
    recognizer = runs.load_model(recognizer_run) if recognizer_run is not None else None
    return Engine(songs.make_predictor(model, recognizer, options), separate=separate, base_options=options,
                  work_dir=work_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; serves until interrupted (SIGINT or SIGTERM); returns the exit status."""
    args = build_parser().parse_args(argv)
    xla_flags.apply_cpu_flags(inference=True)  # before jax loads
    import uvicorn

    from jointist_jax import runs
    from jointist_jax.app.server import MB, create_app

    work_dir = Path(tempfile.mkdtemp(prefix="jointist-app-"))
    try:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((args.host, args.port))
            sock.listen(128)  # connections wait in the backlog until the server takes them
        except OSError as error:
            print(f"{PROG}: error: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
            return 2
        try:
            engine = load_engine(args, work_dir)
        except (ValueError, runs.CheckpointError) as error:
            print(f"{PROG}: error: {error}", file=sys.stderr)
            return 2
        app = create_app(engine, max_upload_bytes=int(args.max_upload_mb * MB))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
        host, port = sock.getsockname()[:2]
        print(f"{PROG}: serving on http://{host}:{port}/", flush=True)
        server.run(sockets=[sock])
        engine.stop()
        return 0
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
