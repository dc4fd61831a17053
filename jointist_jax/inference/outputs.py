"""Writes one song's results as a folder, atomically.

``OUT/<song>/`` holds ``<song>.mid``, ``<song>.notes.json``, ``<song>.pianoroll.png``,
``<song>.posteriorgrams.npz`` and, with separation, ``stems/<Class_Name>.wav``. Everything is
written into a hidden temporary folder first and renamed into place at the end (for an OUT in a
bucket: uploaded with ``<song>.notes.json`` last; :class:`jointist_jax.storage.StagedFolder`), so a
failure leaves no half-written song and a re-run replaces the previous results.
"""

from __future__ import annotations

import json
from typing import Mapping

import numpy as np

from jointist_jax import instruments, storage
from jointist_jax.inference import audio_io, midi_io, pianoroll_png
from jointist_jax.inference.predictor import SongPrediction
from jointist_jax.music import FRAMES_PER_SECOND, SAMPLE_RATE, Notes


def full_posteriorgrams(prediction: SongPrediction) -> tuple[np.ndarray, np.ndarray]:
    """(39, T, 88) onset and frame posteriorgrams, zero for classes that were not transcribed."""
    _, frames, keys = prediction.frame_output.shape
    onset = np.zeros((instruments.NUM_CLASSES, frames, keys), np.float32)
    frame = np.zeros_like(onset)
    onset[prediction.class_ids] = prediction.reg_onset_output
    frame[prediction.class_ids] = prediction.frame_output
    return onset, frame


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


def write_song(out_dir, song: str, *, source: str, num_samples: int,
               prediction: SongPrediction, notes_by_class: Mapping[int, Notes],
               midi_notes_by_class: Mapping[int, Notes] | None = None,
               min_midi_duration: float = midi_io.DEFAULT_MIN_DURATION, extra: Mapping | None = None):
    """Writes every output of one song into ``out_dir/song`` (replacing it); returns that folder.

    ``midi_notes_by_class`` defaults to ``notes_by_class`` (the MIDI may differ, e.g. bass restored).
    ``out_dir`` may be local or ``gs://``.
    """
    final = storage.path(out_dir) / song
    if final.exists() and not final.is_dir():
        raise FileExistsError(f"{str(final)!r} exists and is not a folder; remove it or choose another --out")
    with storage.StagedFolder(final, marker=f"{song}.notes.json") as staged:
        temp = staged.local
        duration = num_samples / SAMPLE_RATE
        midi = midi_io.notes_to_midi(notes_by_class if midi_notes_by_class is None else midi_notes_by_class,
                                     min_duration=min_midi_duration)
        midi.write(str(temp / f"{song}.mid"))
        onset, frame = full_posteriorgrams(prediction)
        np.savez_compressed(temp / f"{song}.posteriorgrams.npz", frame_output=frame, reg_onset_output=onset,
                            transcribed_classes=np.asarray(prediction.class_ids, np.int32),
                            class_names=np.asarray(instruments.CLASS_NAMES[:instruments.NUM_CLASSES]),
                            frames_per_second=np.asarray(FRAMES_PER_SECOND))
        (temp / f"{song}.pianoroll.png").write_bytes(
            pianoroll_png.pianoroll_png(notes_by_class, duration=duration, title=song))
        if prediction.waveform is not None:
            (temp / "stems").mkdir()
            for class_id, stem in zip(prediction.class_ids, prediction.waveform):
                audio_io.write_wav(temp / "stems" / stem_filename(class_id), stem)
        document = notes_document(song, source, duration, notes_by_class, extra)
        (temp / f"{song}.notes.json").write_text(json.dumps(document, indent=1))
    return final
