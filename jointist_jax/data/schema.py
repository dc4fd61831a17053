"""The clip record: the one schema that the TFDS builder writes and the reader reads.

The dataset ``slakh2100`` stores one example per window of one track (the window arithmetic is
:mod:`jointist_jax.data.packing`):

=================  ==========================  ===============================================
feature            type                        meaning
=================  ==========================  ===============================================
track_id           Text                        e.g. ``Track00001``
window_index       int32 scalar                ``k``
window_start       int64 scalar                ``k * H`` in samples
track_length       int64 scalar                ``N``, samples of the whole track
mix                int16 [L] (raw bytes)       the mix, samples ``[k*H, k*H + L)``
stem_classes       int32 [C]                   sorted classes that have a class stem
stems              int16 [C, L] (raw bytes)    class stems (same-class stems summed)
note_class         int32 [M]                   notes with onset < window end and
note_pitch         int32 [M]                   offset >= window start, sorted by (onset,
note_velocity      int32 [M]                   class, pitch); label pitches (bass -12);
note_onset         float32 [M]                 times in s relative to ``window_start``
note_offset        float32 [M]                 (negative for notes begun earlier)
track_classes      int32 [T]                   sorted classes with a note anywhere in the track
=================  ==========================  ===============================================

A packing (hop between stored windows, clip length, sample rate) is a builder config with its
own folder: ``clips`` for the default packing, ``clips_hop<h>_clip<c>_sr<rate>`` (``.`` written
``p``) for any other. :func:`config_name` writes that name and :func:`packing_from_config_name`
reads it back.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from jointist_jax import music

DATASET_NAME = "slakh2100"
DEFAULT_CONFIG_NAME = "clips"
# The scalar fields the reader's record index keeps for every record.
INDEX_FIELDS = ("track_id", "window_index", "window_start", "track_length")


@dataclasses.dataclass(frozen=True)
class Packing:
    """How tracks are cut into stored windows (seconds, seconds, Hz)."""

    hop_seconds: float = 30.0
    clip_seconds: float = 10.0
    sample_rate: int = music.SAMPLE_RATE


DEFAULT_PACKING = Packing()
_CONFIG_NAME = re.compile(rf"^{DEFAULT_CONFIG_NAME}_hop([0-9p]+)_clip([0-9p]+)_sr([0-9]+)$")


def config_name(packing: Packing) -> str:
    """The builder config name, hence the folder, of ``packing``."""
    if packing == DEFAULT_PACKING:
        return DEFAULT_CONFIG_NAME
    return (f"{DEFAULT_CONFIG_NAME}_hop{packing.hop_seconds:g}_clip{packing.clip_seconds:g}"
            f"_sr{packing.sample_rate}").replace(".", "p")


def packing_from_config_name(name: str | None) -> Packing | None:
    """The packing that :func:`config_name` named ``name``; None for a name it never writes."""
    if name == DEFAULT_CONFIG_NAME:
        return DEFAULT_PACKING
    match = _CONFIG_NAME.match(name or "")
    if not match:
        return None
    hop, clip, rate = (g.replace("p", ".") for g in match.groups())
    return Packing(hop_seconds=float(hop), clip_seconds=float(clip), sample_rate=int(rate))


def features():
    """The record schema as a ``tfds.features.FeaturesDict`` (the table above).

    Audio is raw little-endian int16 bytes: zlib saved only ~15 % on music while its
    decompression took more than half of the input pipeline's time per clip (and a third of the
    build's), so it is stored uncompressed: 1.33x the int16 audio at the default hop.
    """
    import tensorflow_datasets as tfds

    audio = tfds.features.Encoding.BYTES

    def ints():
        return tfds.features.Tensor(shape=(None,), dtype=np.int32)

    def floats():
        return tfds.features.Tensor(shape=(None,), dtype=np.float32)

    return tfds.features.FeaturesDict({
        "track_id": tfds.features.Text(),
        "window_index": tfds.features.Scalar(dtype=np.int32),
        "window_start": tfds.features.Scalar(dtype=np.int64),
        "track_length": tfds.features.Scalar(dtype=np.int64),
        "mix": tfds.features.Tensor(shape=(None,), dtype=np.int16, encoding=audio),
        "stem_classes": ints(),
        "stems": tfds.features.Tensor(shape=(None, None), dtype=np.int16, encoding=audio),
        "note_class": ints(),
        "note_pitch": ints(),
        "note_velocity": ints(),
        "note_onset": floats(),
        "note_offset": floats(),
        "track_classes": ints(),
    })
