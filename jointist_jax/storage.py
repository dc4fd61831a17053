"""Every user path, on local disk or in a bucket (``gs://bucket/...``), through one abstraction.

Paths are ``etils.epath.Path`` objects made by :func:`path`: a local path is expanded (``~``) and
made absolute; a ``gs://`` URI is kept as it is (``pathlib.Path("gs://b/x").absolute()`` would
turn it into a local folder ``./gs:/b/x``, which is why nothing in the package calls ``pathlib`` or
``os`` on a user path).

Which client talks to the bucket: epath would use TensorFlow's ``tf.io.gfile`` for ``gs://``
whenever TensorFlow is installed. TensorFlow's GCS client has a fixed endpoint
(``https://www.googleapis.com/storage/v1/``; it reads no ``STORAGE_EMULATOR_HOST``), so it cannot
be pointed at a local emulator, and code paths that only work against the real service cannot be
tested. This module therefore sets ``EPATH_USE_TF=false`` before epath is first used: every
``gs://`` access of the package, orbax's metadata and TFDS's dataset files included, goes through
``gcsfs`` (fsspec), which serves real buckets and honours ``STORAGE_EMULATOR_HOST``. Orbax's array
data goes through TensorStore's own GCS driver (endpoint override: ``TENSORSTORE_GCS_HTTP_URL``).
Writers that would otherwise call TensorFlow's file system on a bucket (TensorBoard event files,
the TFRecord shards of a dataset build) write to local disk and are copied with this module.

Credentials are the usual Google ones (``gcloud auth application-default login`` on a
workstation, the VM's service account on a TPU VM); nothing here handles them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import logging
import os
import shutil
import threading
import uuid
from typing import Iterable, Sequence

from etils import epath
from etils.epath import gpath as _gpath

# epath reads this when it first opens a gs:// path (and gcsfs loads only then), so setting it
# here, before any path of the package is used, is in time.
os.environ.setdefault("EPATH_USE_TF", "false")
# gcsfs >= 2026.10 probes each bucket's type over gRPC (for zonal buckets) on first use; the
# datasets and runs here live in ordinary buckets, and the probe costs a minute on a host that
# cannot reach the control API (or an emulator that lacks it).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

# In case epath already chose its gs:// client before this module set the variable above.
_gpath._is_tf_installed.cache_clear()


def _configure_gcsfs() -> None:
    """gcsfs keeps every folder listing it made and answers later listings, ``exists`` and
    ``is_dir`` from it, so a process that polls a bucket folder (resume, the evaluation watcher,
    a reader of what another process wrote) would never see new objects: no listing cache."""
    import fsspec

    for protocol in ("gs", "gcs"):
        fsspec.config.conf.setdefault(protocol, {})["use_listings_cache"] = False


_configure_gcsfs()

Path = epath.Path
REMOTE_SCHEMES = ("gs",)


logger = logging.getLogger(__name__)


class StorageError(FileNotFoundError):
    """A path that cannot be used: unsupported scheme, missing bucket, file or folder."""


class UploadError(OSError):
    """A folder that could not be written to a bucket (it went away, or refused an object): the
    message names the folder and says that it does not count as done."""


def is_remote(p) -> bool:
    """True for a ``gs://`` URI (string or path)."""
    return "://" in os.fspath(p)


def path(p) -> epath.Path:
    """The epath ``Path`` of a user path: ``gs://bucket/...`` as given, anything else local and absolute.

    Raises:
      StorageError: a URI of another scheme (``s3://``...) or without a bucket name.
    """
    text = os.fspath(p)
    if "://" in text:
        scheme, _, rest = text.partition("://")
        if scheme not in REMOTE_SCHEMES:
            raise StorageError(f"{text!r}: unsupported storage scheme {scheme + '://'!r}; expected a local path "
                               f"or {', '.join(s + '://bucket/...' for s in REMOTE_SCHEMES)}")
        if not rest.split("/", 1)[0]:
            raise StorageError(f"{text!r}: no bucket name; expected gs://bucket/...")
        return epath.Path(text)
    return epath.Path(os.path.abspath(os.path.expanduser(text)))


def bucket_of(p) -> str | None:
    """The bucket name of a ``gs://`` path, None for a local one."""
    text = os.fspath(p)
    if not is_remote(text):
        return None
    return text.partition("://")[2].split("/", 1)[0]


def _filesystem():
    import fsspec

    return fsspec.filesystem("gs")


def _object_key(p) -> str:
    return os.fspath(p).partition("://")[2]


def require_exists(p, *, role: str, kind: str = "any") -> epath.Path:
    """``path(p)`` if it exists (``kind``: ``"file"``, ``"dir"`` or ``"any"``), else a clear error.

    For a bucket path the error says whether the bucket itself is missing.
    """
    result = path(p)
    ok = {"file": result.is_file, "dir": result.is_dir, "any": result.exists}[kind]()
    if ok:
        return result
    what = {"file": "file", "dir": "folder", "any": "path"}[kind]
    require_bucket(p, role=role)
    if kind != "any" and result.exists():
        other = "folder" if kind == "file" else "file"
        raise StorageError(f"{role} {os.fspath(p)!r} is a {other}; expected a {what}")
    raise StorageError(f"{role} {os.fspath(p)!r} does not exist (expected a {what})")


def bucket_exists(bucket: str) -> bool:
    """Whether ``gs://bucket`` exists and can be listed."""
    try:
        return bool(_filesystem().exists(bucket))
    except (OSError, ValueError):
        return False


def source(p):
    """For libraries that read a file name or a file object (soundfile, pretty_midi, torch): the
    local file name, or for a bucket path the object's bytes as an in-memory file."""
    import io

    result = path(p)
    return io.BytesIO(result.read_bytes()) if is_remote(result) else os.fspath(result)


# --- writing -----------------------------------------------------------------------------------

def require_bucket(p, *, role: str = "path") -> epath.Path:
    """``path(p)``; for a bucket path, an error naming it if the bucket does not exist."""
    result = path(p)
    bucket = bucket_of(result)
    if bucket is not None and not bucket_exists(bucket):
        raise StorageError(f"{role} {os.fspath(p)!r}: bucket gs://{bucket} does not exist (or is not visible "
                           f"with these credentials)")
    return result


def make_dirs(p, *, role: str = "path") -> epath.Path:
    """Creates folder ``p`` and its parents on local disk. In a bucket there are no folders to
    create, but the bucket must exist: this never creates a bucket (gcsfs would, silently, on
    ``mkdir``); a missing one is an error naming the path."""
    result = require_bucket(p, role=role)
    if not is_remote(result):
        result.mkdir(parents=True, exist_ok=True)
    return result


def write_text(p, text: str) -> None:
    """Writes a small text file in one piece: a temporary name then a rename on local disk; on a
    bucket an object appears only once its upload completes, so readers never see half of it."""
    target = path(p)
    make_dirs(target.parent)
    if is_remote(target):
        target.write_text(text)
        return
    temp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    try:
        temp.write_text(text)
        os.replace(os.fspath(temp), os.fspath(target))
    except BaseException:
        if temp.exists():
            temp.unlink()
        raise


def copy_file(source, target) -> None:
    """Copies one file between any two places (local or bucket)."""
    source, target = path(source), path(target)
    if not is_remote(source) and not is_remote(target):
        shutil.copyfile(os.fspath(source), os.fspath(target))
        return
    if is_remote(target) and not is_remote(source):
        _filesystem().put_file(os.fspath(source), _object_key(target))
        return
    if is_remote(source) and not is_remote(target):
        _filesystem().get_file(_object_key(source), os.fspath(target))
        return
    _filesystem().copy(_object_key(source), _object_key(target))


def upload_tree(local_dir, target_dir, *, last: Sequence[str] = (), threads: int = 16) -> list[str]:
    """Copies every file under ``local_dir`` to ``target_dir`` (relative paths kept), ``threads`` at a
    time; the relative paths in ``last`` are copied after all others, so a reader that waits for
    them (a completion marker) never sees a partial tree. Returns the relative paths copied."""
    local_dir = path(local_dir)
    target_dir = path(target_dir)
    files = sorted(os.path.relpath(os.path.join(root, name), os.fspath(local_dir))
                   for root, _, names in os.walk(os.fspath(local_dir)) for name in names)
    first = [f for f in files if f not in last]
    final = [f for f in last if f in files]

    make_dirs(target_dir)

    def copy(relative: str) -> None:
        destination = target_dir / relative
        if not is_remote(destination):
            destination.parent.mkdir(parents=True, exist_ok=True)
        copy_file(local_dir / relative, destination)

    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(copy, first))
    for relative in final:
        copy(relative)
    return first + final


def remove_file(p) -> None:
    """Deletes one file (no error if it is absent)."""
    target = path(p)
    if target.exists():
        target.unlink()


def remove_tree(p) -> None:
    """Deletes a folder and everything under it (no error if it is absent)."""
    target = path(p)
    if target.exists():
        target.rmtree()


class StagedFolder:
    """A folder whose content appears at ``target`` all at once, or not at all.

    Files are written under :attr:`local` (a local folder). :meth:`commit` then moves it into
    place: on local disk by renaming it over ``target`` (an earlier ``target`` is replaced); in a
    bucket, which has no rename of folders, by deleting an earlier ``target`` and uploading every
    file with ``marker`` (the file readers look for) last. On failure (:meth:`discard`, or leaving
    the ``with`` block by an exception) nothing is left at ``target`` and the staging folder is
    deleted.
    """

    def __init__(self, target, *, marker: str | None = None):
        import tempfile

        self.target = path(target)
        self.marker = marker
        make_dirs(self.target.parent)
        # Beside a local target (same file system, so the final rename is atomic); for a bucket, in
        # the system's temporary folder.
        parent = None if is_remote(self.target) else os.fspath(self.target.parent)
        self.local = epath.Path(tempfile.mkdtemp(prefix=".partial-", dir=parent))

    def commit(self) -> epath.Path:
        """Moves the staged files into place; returns ``target``.

        Raises:
          UploadError: a bucket target could not be written (the bucket went away for longer than
            the client's retries, or refused an object); its marker is then not there, so the folder
            is not taken as done, and running the same command again replaces it.
        """
        try:
            if is_remote(self.target):
                self._upload()
            else:
                _replace_local_dir(self.local, self.target)
        finally:
            shutil.rmtree(os.fspath(self.local), ignore_errors=True)
        return self.target

    def _upload(self) -> None:
        try:
            if self.marker:
                # An earlier folder stops counting as done before any of its files is replaced.
                remove_file(self.target / self.marker)
            remove_tree(self.target)
            upload_tree(self.local, self.target, last=[self.marker] if self.marker else ())
        except Exception as error:
            if _unreachable(error):  # removing would only wait out the client's retries once more
                logger.warning("the bucket of %s cannot be reached: the files uploaded so far stay there, "
                               "without their marker", os.fspath(self.target))
            else:
                try:
                    remove_tree(self.target)
                except Exception as cleanup_error:
                    logger.warning("could not remove the partial %s: %s", os.fspath(self.target), cleanup_error)
            done = f" (it counts as done only with its {self.marker})" if self.marker else ""
            raise UploadError(f"{os.fspath(self.target)!r} could not be written to the bucket "
                              f"({type(error).__name__}: {error}); it is not complete{done}: running the "
                              f"same command again once the bucket answers writes it anew") from error

    def discard(self) -> None:
        """Deletes the staged files."""
        shutil.rmtree(os.fspath(self.local), ignore_errors=True)

    def __enter__(self) -> "StagedFolder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def _unreachable(error: BaseException | None) -> bool:
    """Whether ``error`` (or an error that caused it) is a connection that failed or timed out,
    rather than an answer of the bucket."""
    import aiohttp

    while error is not None:
        if isinstance(error, (aiohttp.ClientConnectionError, ConnectionError, TimeoutError)):
            return True
        error = error.__cause__ or error.__context__
    return False


def _replace_local_dir(source: epath.Path, target: epath.Path) -> None:
    """Renames ``source`` to ``target``, replacing an existing ``target`` folder."""
    import tempfile

    if target.exists():
        if not target.is_dir():
            raise FileExistsError(f"{os.fspath(target)!r} exists and is not a folder")
        trash = tempfile.mkdtemp(prefix=".partial-old-", dir=os.fspath(target.parent))
        os.replace(os.fspath(target), os.path.join(trash, target.name))
        os.replace(os.fspath(source), os.fspath(target))
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(os.fspath(source), os.fspath(target))


class MirroredFolder:
    """A local folder copied to a bucket folder on every :meth:`sync` (a no-op for local targets).

    For writers that only write local files, such as TensorFlow's summary writer: an event file
    grows by appends, which an object store cannot do, so :meth:`sync` re-uploads every file
    that changed since the last sync (TensorFlow's own GCS writer re-uploads a file on each flush
    too). :attr:`local` is ``target`` itself when ``target`` is on local disk.
    """

    def __init__(self, target, *, threads: int = 4):
        import tempfile

        self.target = path(target)
        self.remote = is_remote(self.target)
        self._threads = threads
        self._sizes: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self.failed = False  # a write into local failed: no more syncs (:meth:`local_writes`)
        make_dirs(self.target)
        if self.remote:
            self.local = epath.Path(tempfile.mkdtemp(prefix="jointist-mirror-"))
        else:
            self.local = self.target

    @contextlib.contextmanager
    def local_writes(self, what: str):
        """Wraps a writer's writes into :attr:`local` (``what``: what they are, for messages).

        A write that fails because the local disk is full (or for another ``OSError``) does not
        stop the caller: losing TensorBoard events must not end a days-long run. It is not silent
        either: one warning names the folder, the error and what to do. The folder is then
        :attr:`failed`: the writer's file may end in half a record, so nothing more is copied to
        ``target``, whose files stay byte for byte as the last sync left them.
        """
        try:
            yield
        except Exception as error:
            if not (isinstance(error, OSError) or os.strerror(errno.ENOSPC) in str(error)):
                raise
            if not self.failed:
                where = (f"the staging folder {os.fspath(self.local)} (in the system's temporary folder: set "
                         f"TMPDIR to a folder with room)") if self.remote else os.fspath(self.local)
                logger.warning("%s for %s could not be written to %s: %s; no more are saved in this run (those "
                               "saved before stay as they are); the run carries on", what,
                               os.fspath(self.target), where, str(error).splitlines()[0])
            self.failed = True

    def sync(self) -> list[str]:
        """Uploads files that are new or changed; returns their relative paths."""
        if not self.remote or self.failed:
            return []
        with self._lock:
            changed = []
            for root, _, names in os.walk(os.fspath(self.local)):
                for name in names:
                    full = os.path.join(root, name)
                    stat = os.stat(full)
                    relative = os.path.relpath(full, os.fspath(self.local))
                    if self._sizes.get(relative) != (stat.st_size, stat.st_mtime_ns):
                        changed.append(relative)
                        self._sizes[relative] = (stat.st_size, stat.st_mtime_ns)
            if changed:
                with concurrent.futures.ThreadPoolExecutor(self._threads) as pool:
                    list(pool.map(lambda r: copy_file(self.local / r, self.target / r), changed))
            return changed

    def close(self) -> None:
        """Final sync, then removes the local copy of a bucket folder."""
        self.sync()
        if self.remote:
            shutil.rmtree(os.fspath(self.local), ignore_errors=True)


# --- ranged reads --------------------------------------------------------------------------------

class RangeReader:
    """Positional reads ``(file, offset, length) -> bytes`` of a fixed list of files.

    Local files are read with ``os.pread`` on descriptors opened once. Bucket objects are read
    with HTTP range requests of exactly the bytes asked for (no object is downloaded whole);
    calls from several threads run concurrently, and :meth:`read_many` issues a whole list of
    ranges at once, so bucket latency overlaps. Counts the bytes it read (:attr:`bytes_read`).
    """

    def __init__(self, files: Iterable):
        self.files = [path(f) for f in files]
        self._remote = [is_remote(f) for f in self.files]
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()
        self.bytes_read = 0
        self.requests = 0
        for i, (f, remote) in enumerate(zip(self.files, self._remote)):
            if not remote:
                self._fds[i] = os.open(os.fspath(f), os.O_RDONLY)

    def _count(self, n: int, requests: int = 1) -> None:
        with self._lock:
            self.bytes_read += n
            self.requests += requests

    def read(self, file_index: int, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` of file ``file_index`` (fewer only at the end of the file)."""
        if self._remote[file_index]:
            data = _filesystem().cat_file(_object_key(self.files[file_index]), start=offset, end=offset + length)
        else:
            data = os.pread(self._fds[file_index], length, offset)
        self._count(len(data))
        return data

    def read_many(self, spans: Sequence[tuple[int, int, int]]) -> list[bytes]:
        """:meth:`read` of every ``(file_index, offset, length)``, the bucket ones all in flight at once."""
        out: list[bytes | None] = [None] * len(spans)
        remote = [i for i, (f, _, _) in enumerate(spans) if self._remote[f]]
        for i, (f, offset, length) in enumerate(spans):
            if not self._remote[f]:
                out[i] = self.read(f, offset, length)
        if remote:
            keys = [_object_key(self.files[spans[i][0]]) for i in remote]
            starts = [spans[i][1] for i in remote]
            ends = [spans[i][1] + spans[i][2] for i in remote]
            for i, data in zip(remote, _filesystem().cat_ranges(keys, starts, ends, on_error="raise")):
                out[i] = data
            self._count(sum(len(out[i]) for i in remote), len(remote))
        return out

    def size(self, file_index: int) -> int:
        """Size in bytes of file ``file_index``."""
        if self._remote[file_index]:
            return int(_filesystem().size(_object_key(self.files[file_index])))
        return os.fstat(self._fds[file_index]).st_size

    def close(self) -> None:
        """Closes the local descriptors."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    def __enter__(self) -> "RangeReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def files_under(folder) -> list[epath.Path]:
    """Every file below ``folder``, at any depth, sorted (epath's glob refuses ``**``, and its
    ``walk`` drops the ``gs://`` of bucket paths)."""
    folder = path(folder)
    if is_remote(folder):
        scheme = os.fspath(folder).partition("://")[0]
        names = _filesystem().find(_object_key(folder))
        return sorted((epath.Path(f"{scheme}://{name}") for name in names), key=os.fspath)
    return sorted((epath.Path(os.path.join(root, name)) for root, _, names in os.walk(os.fspath(folder))
                   for name in names), key=os.fspath)


def file_sizes(folder) -> dict[str, int]:
    """``{file name: size}`` of the files directly in ``folder`` (one listing request in a bucket)."""
    folder = path(folder)
    if is_remote(folder):
        return {os.path.basename(entry["name"].rstrip("/")): int(entry["size"])
                for entry in _filesystem().ls(_object_key(folder), detail=True) if entry.get("type") == "file"}
    return {entry.name: entry.stat().st_size for entry in os.scandir(os.fspath(folder)) if entry.is_file()}
