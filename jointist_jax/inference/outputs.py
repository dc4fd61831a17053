"""Writes one song's results as a folder, atomically, one group of instruments at a time.

``OUT/<song>/`` holds ``<song>.mid``, ``<song>.notes.json``, ``<song>.pianoroll.png``,
``<song>.posteriorgrams.npz`` (the (K, T, 88) onset and frame posteriorgrams of the K transcribed
classes, in the order of its ``transcribed_classes``) and, with separation,
``stems/<Class_Name>.wav``. A :class:`SongWriter` takes the song's instruments group by group
(:meth:`~jointist_jax.inference.predictor.Predictor.predict_groups`): each group's stems are
written and its posteriorgrams appended to files on disk as it comes, so only one group's
outputs are in memory; the MIDI, the notes and the piano roll, which list every instrument, are
made at the end from the notes (small). Everything is written into a hidden temporary folder
first and renamed into place at the end (for an OUT in a bucket: uploaded with
``<song>.notes.json`` last; :class:`jointist_jax.storage.StagedFolder`), so a failure leaves no
half-written song and a re-run replaces the previous results.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Mapping

import numpy as np

from jointist_jax import instruments, storage
from jointist_jax.inference import audio_io, midi_io, pianoroll_png
from jointist_jax.inference.predictor import SongPrediction
from jointist_jax.music import FRAMES_PER_SECOND, SAMPLE_RATE, Notes

# Bytes copied at a time from the posteriorgram files into the .npz.
COPY_CHUNK = 16 << 20
POSTERIORGRAMS = ("frame_output", "reg_onset_output")
# zlib level of the .npz: 1 deflates noisy float32 posteriorgrams 2.6x faster than
# np.savez_compressed's 6 (1.8 s against 4.6 s of CPU per 50 MB, measured on a 2-core CPU), to
# about the same size (0.79 against 0.81 of the raw bytes).
NPZ_COMPRESSION = 1


def stem_filename(class_id: int) -> str:
    """``Electric_Guitar.wav`` for a class index."""
    return instruments.CLASS_NAMES[class_id].replace(" ", "_") + ".wav"


def notes_document(song: str, source: str, duration: float, notes_by_class: Mapping[int, Notes],
                   extra: Mapping | None = None) -> dict:
    """The JSON-able description of a song's notes (per class name, in seconds)."""
    document = {
        "song": song,
        "source": source,
        "duration_seconds": duration,
        "instruments": [
            {"class_index": int(c), "class_name": instruments.CLASS_NAMES[c],
             "midi_program": instruments.output_program(c)[0], "is_drum": instruments.output_program(c)[1],
             "notes": notes.to_events()}
            for c, notes in notes_by_class.items()
        ],
    }
    if extra:
        document.update(extra)
    return document


class SongWriter:
    """Writes one song's folder from its groups of instruments (a context manager).

    ``add`` each group's :class:`SongPrediction` in turn (it may be freed afterwards), then
    ``finish`` with every instrument's notes; leaving the ``with`` block without ``finish``, or by
    an exception, leaves nothing at ``out_dir/song``.
    """

    def __init__(self, out_dir, song: str, *, source: str, num_samples: int):
        final = storage.path(out_dir) / song
        if final.exists() and not final.is_dir():
            raise FileExistsError(f"{str(final)!r} exists and is not a folder; remove it or choose another --out")
        self.song, self.source, self.num_samples = song, source, num_samples
        self.class_ids: list[int] = []
        self._staged = storage.StagedFolder(final, marker=f"{song}.notes.json")
        self._parts = os.path.join(os.fspath(self._staged.local), ".posteriorgrams")
        self._frames: int | None = None
        self._finished = False

    def __enter__(self) -> "SongWriter":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None or not self._finished:
            self._staged.discard()

    def add(self, prediction: SongPrediction) -> None:
        """Writes a group's stems and appends its posteriorgrams to the song's."""
        temp = self._staged.local
        self.class_ids.extend(prediction.class_ids)
        if prediction.frame_output is not None:
            os.makedirs(self._parts, exist_ok=True)
            self._frames = prediction.frame_output.shape[1]
            for name in POSTERIORGRAMS:
                with open(os.path.join(self._parts, name), "ab") as part:
                    np.ascontiguousarray(getattr(prediction, name), np.float32).tofile(part)
        if prediction.waveform is not None:
            (temp / "stems").mkdir(exist_ok=True)
            for class_id, stem in zip(prediction.class_ids, prediction.waveform):
                audio_io.write_wav(temp / "stems" / stem_filename(class_id), stem)

    def _write_posteriorgrams(self, path) -> None:
        """The ``.npz`` of the appended posteriorgrams, copied in chunks (laid out as
        ``np.savez_compressed`` writes it: one deflated ``.npy`` per array)."""
        shape = (len(self.class_ids), self._frames, 88)
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=NPZ_COMPRESSION,
                             allowZip64=True) as archive:
            for name in POSTERIORGRAMS:
                with archive.open(f"{name}.npy", "w", force_zip64=True) as entry:
                    np.lib.format.write_array_header_1_0(
                        entry, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                "fortran_order": False, "shape": shape})
                    part_path = os.path.join(self._parts, name)
                    with open(part_path, "rb") as part:
                        while chunk := part.read(COPY_CHUNK):
                            entry.write(chunk)
                    os.remove(part_path)
            for name, value in (("transcribed_classes", np.asarray(self.class_ids, np.int32)),
                                ("class_names", np.asarray(instruments.CLASS_NAMES[:instruments.NUM_CLASSES])),
                                ("frames_per_second", np.asarray(FRAMES_PER_SECOND))):
                with archive.open(f"{name}.npy", "w", force_zip64=True) as entry:
                    np.lib.format.write_array(entry, value, allow_pickle=False)
        os.rmdir(self._parts)

    def finish(self, notes_by_class: Mapping[int, Notes], *, midi_notes_by_class: Mapping[int, Notes] | None = None,
               min_midi_duration: float = midi_io.DEFAULT_MIN_DURATION, extra: Mapping | None = None):
        """Writes the MIDI, the posteriorgrams, the piano roll and the notes, and moves the folder
        into place; returns it. ``midi_notes_by_class`` defaults to ``notes_by_class`` (the MIDI may
        differ, e.g. bass restored)."""
        temp = self._staged.local
        duration = self.num_samples / SAMPLE_RATE
        midi = midi_io.notes_to_midi(notes_by_class if midi_notes_by_class is None else midi_notes_by_class,
                                     min_duration=min_midi_duration)
        midi.write(str(temp / f"{self.song}.mid"))
        if self._frames is not None:  # a standalone separator transcribes nothing
            self._write_posteriorgrams(temp / f"{self.song}.posteriorgrams.npz")
        (temp / f"{self.song}.pianoroll.png").write_bytes(
            pianoroll_png.pianoroll_png(notes_by_class, duration=duration, title=self.song))
        document = notes_document(self.song, self.source, duration, notes_by_class, extra)
        (temp / f"{self.song}.notes.json").write_text(json.dumps(document, indent=1))
        final = self._staged.commit()
        self._finished = True
        return final


def write_song(out_dir, song: str, *, source: str, num_samples: int,
               prediction: SongPrediction, notes_by_class: Mapping[int, Notes],
               midi_notes_by_class: Mapping[int, Notes] | None = None,
               min_midi_duration: float = midi_io.DEFAULT_MIN_DURATION, extra: Mapping | None = None):
    """Writes every output of one song held whole (one :class:`SongWriter` group) into
    ``out_dir/song`` (replacing it); returns that folder. ``out_dir`` may be local or ``gs://``."""
    with SongWriter(out_dir, song, source=source, num_samples=num_samples) as writer:
        writer.add(prediction)
        return writer.finish(notes_by_class, midi_notes_by_class=midi_notes_by_class,
                             min_midi_duration=min_midi_duration, extra=extra)
