"""An HTTP proxy on 127.0.0.1 in front of the GCS emulator that misbehaves like a real bucket
sometimes does: error answers, bodies cut short, slow first bytes, and latency on every request.

    with gcs_emulator.running() as emulator, gcs_fault_proxy.running(emulator.url, Faults(...)) as proxy:
        ...  # every client of this process and its children now goes through proxy.url

What it does to a request is decided from ``(seed, request number)`` alone, so a given order of
requests meets the same faults on every run (requests that race in threads are numbered in the
order they arrive). Kinds of fault (:class:`Faults` gives each one's probability):

* ``503`` / ``429``: answered by the proxy with the JSON error body GCS sends, *before* the request
  is forwarded: the emulator never sees it, so the client's retry is a true retry. (Forwarding
  first and answering an error afterwards would make a retried final chunk of a resumable upload
  meet an upload the emulator already completed, which fake-gcs-server answers with 404 where
  GCS answers the object: an emulator artefact, not a behaviour of the service.)
* ``drop``: a read (``GET``) is forwarded, then the status line, the headers and half of the body
  are sent and the connection is closed. Writes are never cut after forwarding, for the reason
  above.
* ``delay``: the first byte of the answer comes ``Faults.delay_s`` late.

:attr:`FaultProxy.deny` (an object prefix) refuses every request for those objects with 403, as
GCS does once a permission is revoked: a failure no client retries.

Latency (:class:`Latency`) applies to every request, faults on or off: ``first_byte_s`` before the
first byte, ``slow_s`` instead for a fraction ``slow_fraction`` of requests.

:attr:`FaultProxy.log` keeps every request (method, path, query, Range header, status, bytes sent,
fault, start and end times) and :attr:`FaultProxy.counts` how many faults of each kind were
injected. :attr:`FaultProxy.faults_on` switches faults on and off while it runs. Clients are
pointed at the proxy exactly as at the emulator (``gcs_emulator.environment``).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import http.client
import http.server
import json
import random
import socket
import sys
import threading
import time
import urllib.parse

ERROR_BODIES = {
    503: {"code": 503, "message": "We encountered an internal error. Please try again.",
          "errors": [{"message": "We encountered an internal error. Please try again.", "domain": "global",
                      "reason": "backendError"}]},
    403: {"code": 403, "message": "Access denied.",
          "errors": [{"message": "Access denied.", "domain": "global", "reason": "forbidden"}]},
    429: {"code": 429, "message": "The rate of change requests to the object exceeds the rate limit. "
                                  "Please reduce the rate of create, update, and delete requests.",
          "errors": [{"message": "The rate of change requests to the object exceeds the rate limit.",
                      "domain": "usageLimits", "reason": "rateLimitExceeded"}]},
}
KINDS = ("503", "429", "drop", "delay")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection",
              "proxy-authenticate", "proxy-authorization", "content-length"}


@dataclasses.dataclass
class Faults:
    """Probability of each kind of fault per request; at most ``max_per_kind`` of each are injected
    (a bound on the time retries cost), ``delay_s`` is how late a delayed first byte comes."""

    seed: int = 0
    error_503: float = 0.0
    error_429: float = 0.0
    drop: float = 0.0
    delay: float = 0.0
    delay_s: float = 0.5
    max_per_kind: int | None = None


@dataclasses.dataclass
class Latency:
    """Time to the first byte of every answer: ``first_byte_s``, or ``slow_s`` for a fraction
    ``slow_fraction`` of requests (seeded by ``seed`` and the request number)."""

    first_byte_s: float = 0.0
    slow_s: float = 0.0
    slow_fraction: float = 0.0
    seed: int = 0


@dataclasses.dataclass
class Request:
    number: int
    method: str
    path: str
    query: str
    range: str | None
    status: int | None = None
    bytes_sent: int = 0
    fault: str | None = None
    start: float = 0.0
    end: float = 0.0
    # ``bucket/name`` of the object read (from the path) or whose upload this request completed
    # (from the answer).
    object: str | None = None


class FaultProxy:
    """The proxy (see the module docstring); :meth:`start` / :meth:`stop`, or :func:`running`."""

    def __init__(self, upstream: str, faults: Faults | None = None, latency: Latency | None = None):
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = upstream
        self.upstream_host, self.upstream_port = parsed.hostname, parsed.port
        self.faults = faults or Faults()
        self.latency = latency or Latency()
        self.faults_on = True
        # Objects (``bucket/name`` prefix) whose every request is refused with 403, as when a
        # permission is revoked: no client retries it, so the failure reaches the program at once.
        self.deny: str | None = None
        self.log: list[Request] = []
        self.counts: collections.Counter = collections.Counter()
        self._lock = threading.Lock()
        self._number = 0
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- decisions --------------------------------------------------------------------------------

    def _decide(self, method: str) -> tuple[int, str | None, float]:
        """``(request number, fault or None, seconds to wait before the first byte)``."""
        with self._lock:
            number = self._number
            self._number += 1
            fault = None
            if self.faults_on:
                draw = random.Random(f"{self.faults.seed}:{number}").random()
                edge = 0.0
                for kind, p in (("503", self.faults.error_503), ("429", self.faults.error_429),
                                ("drop", self.faults.drop if method == "GET" else 0.0),
                                ("delay", self.faults.delay)):
                    if edge <= draw < edge + p:
                        if self.faults.max_per_kind is None or self.counts[kind] < self.faults.max_per_kind:
                            fault = kind
                            self.counts[kind] += 1
                        break
                    edge += p
        wait = self.latency.first_byte_s
        if self.latency.slow_fraction and \
                random.Random(f"latency:{self.latency.seed}:{number}").random() < self.latency.slow_fraction:
            wait = self.latency.slow_s
        if fault == "delay":
            wait += self.faults.delay_s
        return number, fault, wait

    # -- running ------------------------------------------------------------------------------------

    def start(self) -> "FaultProxy":
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="gcs-fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def requests(self) -> list[Request]:
        """A copy of the request log, in order of arrival."""
        with self._lock:
            return list(self.log)

    def summary(self) -> str:
        """One line: requests seen, faults injected by kind."""
        with self._lock:
            return (f"{self._number} requests, faults injected: "
                    + ", ".join(f"{kind} {self.counts[kind]}" for kind in KINDS))


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A client that went away (killed, or done with a keep-alive connection) is no error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, and "Expect: 100-continue" answered

    def log_message(self, *args) -> None:  # the request log is FaultProxy.log
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        expected = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(expected)
        if len(body) < expected:  # the client went away mid-request (killed): forward nothing of it
            raise ConnectionResetError(f"request body ended after {len(body)} of {expected} bytes")
        return body

    def _handle(self) -> None:
        owner = self.owner
        try:
            body = self._body()
        except (ConnectionResetError, ValueError):
            self.close_connection = True
            return
        split = urllib.parse.urlsplit(self.path)
        number, fault, wait = owner._decide(self.command)
        entry = Request(number, self.command, split.path, split.query, self.headers.get("Range"), fault=fault,
                        start=time.monotonic())
        if "/b/" in split.path and "/o/" in split.path:
            bucket, _, name = split.path.split("/b/", 1)[1].partition("/o/")
            entry.object = f"{bucket}/{urllib.parse.unquote(name)}"
        with owner._lock:
            owner.log.append(entry)
        try:
            if owner.deny and self._touches(owner.deny, split, body):
                entry.fault = "denied"
                payload = json.dumps({"error": ERROR_BODIES[403]}).encode()
                self._answer(entry, 403, [("Content-Type", "application/json; charset=UTF-8")], payload)
                return
            if fault in ("503", "429"):
                time.sleep(wait)
                payload = json.dumps({"error": ERROR_BODIES[int(fault)]}).encode()
                self._answer(entry, int(fault), [("Content-Type", "application/json; charset=UTF-8")], payload)
                return
            try:
                status, headers, payload = self._forward(body)
            except OSError:  # the emulator is down: the client sees its connection closed
                entry.fault = "unreachable"
                self.close_connection = True
                return
            started_only = "uploadType=resumable" in split.query and "upload_id=" not in split.query
            if self.command in ("POST", "PUT") and status == 200 and not started_only:
                entry.object = entry.object or _uploaded_object(payload)
            time.sleep(wait)
            self._answer(entry, status, headers, payload, cut=fault == "drop" and len(payload) >= 2)
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: its choice
            self.close_connection = True
        finally:
            entry.end = time.monotonic()

    @staticmethod
    def _touches(prefix: str, split, body: bytes) -> bool:
        """Whether a request names an object under ``prefix`` (``bucket/name``): in its path, its
        ``name`` parameter or its upload metadata."""
        bucket, _, name = prefix.partition("/")
        if f"/b/{bucket}/" not in split.path:
            return False
        named = [urllib.parse.unquote(split.path.split("/o/", 1)[1])] if "/o/" in split.path else []
        named += urllib.parse.parse_qs(split.query).get("name", []) + urllib.parse.parse_qs(split.query).get("prefix", [])
        return any(n.startswith(name) for n in named) or f'"name": "{name}'.encode() in body[:4096] \
            or f'"name":"{name}'.encode() in body[:4096]

    def _forward(self, body: bytes):
        owner = self.owner
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"expect", "host"}}
        headers["Host"] = f"{owner.upstream_host}:{owner.upstream_port}"
        connection = http.client.HTTPConnection(owner.upstream_host, owner.upstream_port, timeout=120)
        try:
            connection.request(self.command, self.path, body=body if body or self.command in ("POST", "PUT")
                               else None, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            kept = []
            for k, v in response.getheaders():
                if k.lower() in HOP_BY_HOP:
                    continue
                if k.lower() == "location":  # resumable upload sessions: the next chunks come here too
                    v = v.replace(owner.upstream, owner.url)
                kept.append((k, v))
            return response.status, kept, payload
        finally:
            connection.close()

    def _answer(self, entry: Request, status: int, headers, payload: bytes, cut: bool = False) -> None:
        entry.status = status
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        if cut:
            self.send_header("Connection", "close")
        self.end_headers()
        sent = payload[:len(payload) // 2] if cut else payload
        if self.command != "HEAD":
            self.wfile.write(sent)
            entry.bytes_sent = len(sent)
        if cut:
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle


def upload_completions(requests: list[Request], prefix: str) -> dict[str, float]:
    """``{object name: when its last upload completed}`` of the objects under ``prefix``, from a
    request log."""
    done: dict[str, float] = {}
    for e in requests:
        if e.method in ("POST", "PUT") and e.status == 200 and e.object and e.object.startswith(prefix):
            done[e.object] = max(done.get(e.object, 0.0), e.end)
    return done


def _uploaded_object(payload: bytes) -> str | None:
    """The object name in the answer to a completed upload (its object resource), else None."""
    try:
        resource = json.loads(payload)
    except ValueError:
        return None
    if isinstance(resource, dict) and resource.get("kind") == "storage#object":
        return f"{resource.get('bucket')}/{resource.get('name')}"
    return None


@contextlib.contextmanager
def running(upstream: str, faults: Faults | None = None, latency: Latency | None = None):
    """Starts a proxy to ``upstream``, points every client of this process and its children at it
    (``gcs_emulator.clients_pointed_at``), yields it; stops it and restores the environment."""
    from scripts import gcs_emulator

    proxy = FaultProxy(upstream, faults, latency).start()
    try:
        with gcs_emulator.clients_pointed_at(proxy.url):
            yield proxy
    finally:
        proxy.stop()
