"""The app's HTTP side (Starlette): the page, uploads, job status and result files.

  GET  /                                  the page (static/index.html, app.js, app.css; nothing external)
  GET  /api/config                        the 39 instrument names, whether "auto" works, the size limit
  POST /api/jobs                          multipart: audio, instruments ("auto" or names), thresholds
  GET  /api/jobs/{id}                     state, stage, windows done / total, queue position, error, result
  GET  /api/jobs/{id}/files/{path}        a result file (MIDI, notes JSON, PNG, WAV, zip)

Every refusal is JSON ``{"error": "..."}`` in words with a 4xx status; the page shows it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from jointist_jax import instruments, rolls
from jointist_jax.app.jobs import Engine
from jointist_jax.inference import audio_io

STATIC = Path(__file__).parent / "static"
MB = 1 << 20
_FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small fields


class RequestError(ValueError):
    """A request the page sent that cannot be processed; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def parse_instruments(text: str, can_recognize: bool) -> list[int] | None:
    """Class indices of a comma-separated list of names, or None for "auto"."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if [n.lower() for n in names] == ["auto"]:
        if not can_recognize:
            raise RequestError('"auto" needs a recognizer: start jointist-app with --ir_checkpoint, '
                               "or pick the instruments")
        return None
    if not names:
        raise RequestError('pick at least one instrument (or "auto")')
    try:
        return list(dict.fromkeys(instruments.class_indices(names)))
    except instruments.UnknownInstrumentError as error:
        raise RequestError(str(error)) from error


def _threshold(form, field: str) -> float:
    text = str(form.get(field) or "").strip()
    if not text:
        return rolls.DEFAULT_THRESHOLD
    try:
        return float(text)
    except ValueError:
        raise RequestError(f"{field} must be a number in (0, 1), got {text!r}") from None


def create_app(engine: Engine, *, max_upload_bytes: int) -> Starlette:
    """The Starlette application serving ``engine``."""

    async def index(request: Request):
        return FileResponse(STATIC / "index.html")

    async def config(request: Request):
        return JSONResponse({"instruments": list(instruments.CLASS_NAMES[:instruments.NUM_CLASSES]),
                             "auto": engine.can_recognize, "separate": engine.separate,
                             "max_upload_mb": max_upload_bytes / MB,
                             "default_threshold": rolls.DEFAULT_THRESHOLD})

    def too_large(size: int) -> RequestError:
        return RequestError(f"the file is {size / MB:.1f} MB; the limit is {max_upload_bytes / MB:.0f} MB "
                            "(jointist-app --max_upload_mb)", status=413)

    async def save_upload(upload: UploadFile, job) -> None:
        size = 0
        with open(job.upload, "wb") as out:
            while chunk := await upload.read(1 << 20):
                size += len(chunk)
                if size > max_upload_bytes:
                    raise too_large(size)
                out.write(chunk)
        if size == 0:
            raise RequestError(f"{upload.filename!r} is empty (0 bytes)")

    async def submit(request: Request):
        job = None
        try:
            length = request.headers.get("content-length")
            if length and length.isdigit() and int(length) > max_upload_bytes + _FORM_OVERHEAD:
                async for _ in request.stream():  # read it all, so that the client gets the answer
                    pass
                raise too_large(int(length))
            try:
                form = await request.form(max_files=1, max_fields=8)
            except Exception as error:  # malformed multipart bodies
                raise RequestError(f"the upload could not be read: {error}") from None
            upload = form.get("audio")
            if not isinstance(upload, UploadFile) or not upload.filename:
                raise RequestError("choose an audio file first (wav, flac, ogg or mp3)")
            try:
                audio_io.check_extension(Path(upload.filename))
            except audio_io.AudioError as error:
                raise RequestError(str(error)) from None
            class_ids = parse_instruments(str(form.get("instruments") or ""), engine.can_recognize)
            try:
                options = dataclasses.replace(engine.base_options, onset_threshold=_threshold(form, "onset_threshold"),
                                              frame_threshold=_threshold(form, "frame_threshold"))
            except ValueError as error:
                raise RequestError(str(error)) from None
            job = engine.new_job(upload.filename, class_ids, options)
            await save_upload(upload, job)
        except RequestError as error:
            if job is not None:
                engine.discard(job)
            return _error(str(error), error.status)
        engine.enqueue(job)
        return JSONResponse(engine.status(job), status_code=202)

    def find_job(request: Request):
        job = engine.jobs.get(request.path_params["job_id"])
        if job is None:
            raise RequestError("no such job (finished jobs are kept for a while only)", status=404)
        return job

    async def job_status(request: Request):
        try:
            return JSONResponse(engine.status(find_job(request)))
        except RequestError as error:
            return _error(str(error), error.status)

    async def job_file(request: Request):
        try:
            job = find_job(request)
            root = job.results.resolve()
            path = (root / request.path_params["path"]).resolve()
            if job.state != "done" or not path.is_relative_to(root) or not path.is_file():
                raise RequestError("no such file", status=404)
        except RequestError as error:
            return _error(str(error), error.status)
        return FileResponse(path, filename=path.name if path.suffix in (".mid", ".zip", ".json") else None)

    routes = [
        Route("/", index),
        Route("/api/config", config),
        Route("/api/jobs", submit, methods=["POST"]),
        Route("/api/jobs/{job_id}", job_status),
        Route("/api/jobs/{job_id}/files/{path:path}", job_file),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes)
