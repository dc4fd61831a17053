"""Slakh2100's on-disk layout: track folders, ``metadata.yaml``, mixing and 16-bit FLAC.

One track is ``OUT/<split>/TrackNNNNN/`` with ``mix.flac``, ``stems/Sxx.flac``, ``MIDI/Sxx.mid``
(one instrument each), ``all_src.mid`` and ``metadata.yaml``. A track is first written to
``OUT/.partial/<split>/TrackNNNNN`` and renamed into place once complete (a rename within one
file system is atomic), so a folder ``OUT/<split>/TrackNNNNN`` is always complete and the split
folders never hold anything but complete tracks.
"""

from __future__ import annotations

import csv
import functools
import importlib.resources
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from jointist_jax import instruments

SPLITS = ("train", "validation", "test")
PARTIAL_DIR = ".partial"
# Slakh normalises each mix to peak at -1 dBFS; we do the same with one gain for the whole track.
TARGET_PEAK_DBFS = -1.0
INT16_SCALE = 32768.0  # soundfile reads PCM_16 sample k as k / 32768


def track_name(number: int) -> str:
    """Slakh's folder name of track ``number`` (1-based): ``Track00001``."""
    return f"Track{number:05d}"


def stem_name(index: int) -> str:
    """Slakh's name of stem ``index`` (0-based): ``S00``, ``S01``, ..."""
    return f"S{index:02d}"


def partial_dir(final: Path) -> Path:
    """Where track folder ``final`` (``OUT/<split>/TrackNNNNN``) is written before the rename."""
    return final.parent.parent / PARTIAL_DIR / final.parent.name / final.name


def remove_partial_tracks(out_dir: Path) -> list[Path]:
    """Deletes the unfinished tracks of interrupted runs; returns the folders it removed."""
    partial_root = out_dir / PARTIAL_DIR
    if not partial_root.is_dir():
        return []
    removed = sorted(p for p in partial_root.glob("*/*") if p.is_dir())
    shutil.rmtree(partial_root)
    return removed


@functools.cache
def _gm_families() -> tuple[str, ...]:
    text = (importlib.resources.files("jointist_jax") / "resources" / "gm_program_to_class.tsv"
            ).read_text()
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t"))
    if [int(r["gm_program"]) for r in rows] != list(range(129)):
        raise ValueError("gm_program_to_class.tsv: expected programs 0..128 in order")
    return tuple(r["gm_family"] for r in rows)


def gm_family(program_num: int) -> str:
    """Slakh's ``inst_class``: the General MIDI family of a program (``Drums`` for 128)."""
    if not 0 <= program_num <= instruments.DRUMS_PROGRAM:
        raise ValueError(f"program_num {program_num} is outside 0..128")
    return _gm_families()[program_num]


def stem_metadata(program_num: int, plugin_name: str) -> dict:
    """One ``stems: Sxx:`` entry of Slakh's ``metadata.yaml``."""
    program_num = int(program_num)
    is_drum = program_num == instruments.DRUMS_PROGRAM
    return {
        "audio_rendered": True,
        "inst_class": gm_family(program_num),
        "is_drum": is_drum,
        "midi_program_name": "Drums" if is_drum else instruments.gm_instrument_name(program_num),
        "midi_saved": True,
        "plugin_name": plugin_name,
        "program_num": int(program_num),
    }


def track_gain(stems: np.ndarray) -> float:
    """The one gain that brings the mix of ``stems`` (K, N) to peak at :data:`TARGET_PEAK_DBFS`.

    Individual stems may peak higher than their mix when they cancel each other; the gain is
    lowered then so that no stem clips either.
    """
    peak = max(float(np.max(np.abs(stems.sum(axis=0)))), float(np.max(np.abs(stems))))
    if peak == 0.0:
        return 1.0
    return 10.0 ** (TARGET_PEAK_DBFS / 20.0) / peak


def quantise_track(stems: np.ndarray, gain: float) -> tuple[np.ndarray, np.ndarray]:
    """16-bit stems scaled by ``gain`` and their mix, the exact integer sum of the stems.

    Summing the *quantised* stems makes ``mix == sum(stems)`` hold bit-exactly in the FLAC files.
    The gain leaves ~1 dB of headroom, far more than the K/2 LSB the rounding can add.
    """
    q = np.clip(np.round(stems.astype(np.float64) * gain * INT16_SCALE), -32768, 32767)
    q = q.astype(np.int16)
    mix = q.astype(np.int64).sum(axis=0)
    if mix.size and (mix.max() > 32767 or mix.min() < -32768):
        raise AssertionError("mix overflows 16 bits despite the normalising gain")
    return q, mix.astype(np.int16)


def write_flac(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Writes int16 mono samples as 16-bit FLAC."""
    sf.write(str(path), samples, sample_rate, format="FLAC", subtype="PCM_16")


def write_metadata(path: Path, metadata: dict) -> None:
    """Writes ``metadata.yaml`` the way Slakh's files look (block style, keys sorted)."""
    path.write_text(yaml.safe_dump(metadata, default_flow_style=False, sort_keys=True))
