"""The app's work: songs queued from any number of browser tabs, processed one at a time.

One worker thread takes the jobs in order and runs each through the song path of
``jointist-transcribe`` (:func:`jointist_jax.inference.songs.choose_instruments`,
:func:`~jointist_jax.inference.songs.transcribe_into` a
:class:`jointist_jax.inference.outputs.SongWriter`), so a page's MIDI file is the CLI's. Beside the
song's folder each job writes what the page shows: one piano-roll PNG per instrument, the mix as
a 16-kHz WAV, and a zip of everything. A job that fails keeps a message in words for the page;
nothing a job does can stop the worker.
"""

from __future__ import annotations

import collections
import dataclasses
import queue
import re
import shutil
import sys
import threading
import traceback
import uuid
from pathlib import Path

from jointist_jax import instruments
from jointist_jax.inference import audio_io, memory, outputs, pianoroll_png, songs
from jointist_jax.inference.predictor import Predictor
from jointist_jax.music import SAMPLE_RATE, Notes

# Finished jobs kept (with their files) before the oldest is deleted.
KEEP_FINISHED = 16


def song_name(filename: str) -> str:
    """A safe folder name from an uploaded file's name (``my song (1).mp3`` -> ``my_song_1_``)."""
    stem = Path(filename).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "song"


def class_file_stem(class_id: int) -> str:
    """``Electric_Guitar`` for a class index (the stem WAV's name without ``.wav``)."""
    return outputs.stem_filename(class_id)[: -len(".wav")]


@dataclasses.dataclass
class Job:
    """One uploaded song and where its processing stands."""

    id: str
    filename: str
    folder: Path
    class_ids: list[int] | None  # None: the recognizer chooses
    options: songs.SongOptions
    state: str = "queued"  # queued, running, done, failed
    stage: str = "waiting in the queue"
    done_windows: int = 0
    total_windows: int = 0
    error: str | None = None
    result: dict | None = None

    @property
    def upload(self) -> Path:
        return self.folder / "upload" / f"{song_name(self.filename)}{Path(self.filename).suffix.lower()}"

    @property
    def results(self) -> Path:
        return self.folder / "results"

    def start(self, stage: str, windows: int) -> None:
        """A stage of ``windows`` window calls starts (a :class:`~jointist_jax.inference.songs.Progress`)."""
        self.stage, self.done_windows, self.total_windows = stage, 0, windows

    def advance(self, windows: int) -> None:
        self.done_windows += windows


class Engine:
    """The loaded model and the job queue.

    Args:
      predictor: the :class:`Predictor` of the loaded runs.
      separate: whether songs are also separated into stems (a joint run).
      base_options: batching of every job; each job sets its own thresholds.
      work_dir: where jobs keep their files.
    """

    def __init__(self, predictor: Predictor, *, separate: bool, base_options: songs.SongOptions, work_dir: Path):
        self.predictor = predictor
        self.separate = separate
        self.base_options = base_options
        self.work_dir = Path(work_dir)
        self.jobs: dict[str, Job] = {}
        self._pending: collections.deque[str] = collections.deque()
        self._finished: collections.deque[str] = collections.deque()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._work, name="jointist-app-worker", daemon=True)
        self._worker.start()

    @property
    def can_recognize(self) -> bool:
        return self.predictor.can_recognize

    def new_job(self, filename: str, class_ids: list[int] | None, options: songs.SongOptions) -> Job:
        """A job with its folder made; :meth:`enqueue` it once its upload is saved."""
        job_id = uuid.uuid4().hex[:12]
        job = Job(id=job_id, filename=filename, folder=self.work_dir / job_id, class_ids=class_ids, options=options)
        job.upload.parent.mkdir(parents=True)
        return job

    def enqueue(self, job: Job) -> None:
        with self._lock:
            self.jobs[job.id] = job
            self._pending.append(job.id)
        self._queue.put(job)

    def discard(self, job: Job) -> None:
        """Removes a job that never got queued (e.g. an upload over the size limit)."""
        shutil.rmtree(job.folder, ignore_errors=True)

    def queue_position(self, job: Job) -> int:
        """1 for the next job to run, 0 when it is not waiting."""
        with self._lock:
            return self._pending.index(job.id) + 1 if job.id in self._pending else 0

    def stop(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=5)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                self._pending.remove(job.id)
            job.state = "running"
            try:
                job.result = self._process(job)
                job.stage = "done"
                job.state = "done"
            except (audio_io.AudioError, memory.MemoryBudgetError, ValueError, OSError) as error:
                job.error = str(error).replace(str(job.upload), job.filename)
                job.state = "failed"
            except Exception as error:  # never let one song stop the worker
                traceback.print_exc(file=sys.stderr)
                job.error = f"internal error while processing {job.filename!r}: {type(error).__name__}: {error}"
                job.state = "failed"
            self._forget_old(job)

    def _forget_old(self, job: Job) -> None:
        with self._lock:
            self._finished.append(job.id)
            while len(self._finished) > KEEP_FINISHED:
                old = self.jobs.pop(self._finished.popleft())
                shutil.rmtree(old.folder, ignore_errors=True)

    def _process(self, job: Job) -> dict:
        predictor, options = self.predictor, job.options
        job.stage = "reading the audio"
        waveform = audio_io.load_audio(job.upload)
        class_ids = job.class_ids
        extra = {"instrument_selection": "user"}
        name = song_name(job.filename)
        with outputs.SongWriter(job.results, name, source=job.filename, num_samples=waveform.shape[0]) as writer:
            if class_ids is None:
                choice = songs.choose_instruments(predictor, waveform, options, progress=job)
                class_ids = choice.classes
                extra = {"instrument_selection": f"recognizer ({options.ir_aggregate})",
                         "recognizer_detected_none": choice.detected_none}
            notes = songs.transcribe_into(writer, predictor, waveform, class_ids, options, separate=self.separate,
                                          progress=job)
            job.start("writing the results", 0)
            extra.update(onset_threshold=options.onset_threshold, frame_threshold=options.frame_threshold)
            folder = writer.finish(notes, extra=extra)
        duration = waveform.shape[0] / SAMPLE_RATE
        (folder / "pianorolls").mkdir()
        for class_id in class_ids:
            (folder / "pianorolls" / f"{class_file_stem(class_id)}.png").write_bytes(
                pianoroll_png.pianoroll_png({class_id: notes.get(class_id, Notes.empty())}, duration=duration))
        audio_io.write_wav(folder / "mix.wav", waveform)
        shutil.make_archive(str(job.results / name), "zip", root_dir=job.results, base_dir=name)
        return {
            "song": name,
            "duration_seconds": duration,
            "detected_none": extra.get("recognizer_detected_none", False),
            "files": {"midi": f"{name}/{name}.mid", "notes": f"{name}/{name}.notes.json", "zip": f"{name}.zip",
                      "mix": f"{name}/mix.wav"},
            "instruments": [
                {"class_index": c, "name": instruments.CLASS_NAMES[c],
                 "notes": len(notes.get(c, Notes.empty())),
                 "pianoroll": f"{name}/pianorolls/{class_file_stem(c)}.png",
                 "stem": f"{name}/stems/{outputs.stem_filename(c)}" if self.separate else None}
                for c in class_ids],
        }

    def status(self, job: Job) -> dict:
        """What the page shows of a job."""
        return {"id": job.id, "filename": job.filename, "state": job.state, "stage": job.stage,
                "queue_position": self.queue_position(job), "done_windows": job.done_windows,
                "total_windows": job.total_windows, "error": job.error, "result": job.result}
