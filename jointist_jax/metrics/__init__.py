"""Evaluation metrics of the Jointist paper, as pure functions over numpy arrays (no I/O).

* :mod:`matching`: mir_eval note matching of :class:`jointist_jax.music.Notes`, the note-list type.
* :mod:`fused_notes`: the reference's flat note lists (instruments' rolls OR'ed, decoded again).
* :mod:`transcription_metrics`: note / note-with-offset / frame F1, flat, piece-wise and
  instrument-wise, primary and ``_paper_compat`` pitch conventions, plus MT3's note F1.
* :mod:`mt3_metrics`: MT3's onset + offset + program matching at three granularities.
* :mod:`separation_metrics`: SNR-style SDR, source-, piece- and instrument-wise.
* :mod:`recognition_metrics`: instrument-recognition mAP and F1, and the reference's fixed crop.
* :mod:`averaging`: :class:`MetricReport` (what every aggregate returns: scalars + per-class
  values) and the source-, piece- and instrument-wise averages. Writing results to TensorBoard
  and files is :mod:`jointist_jax.evaluation.reporting`.

Each module's docstring lists the metric names it produces.
"""

from jointist_jax.metrics.matching import MatchCounts
from jointist_jax.metrics.recognition_metrics import recognition_scores
from jointist_jax.metrics.averaging import MetricReport
from jointist_jax.metrics.separation_metrics import (SongSeparationScores, aggregate_separation, sdr,
                                                        song_separation_scores)
from jointist_jax.metrics.transcription_metrics import (SongTranscriptionScores, aggregate_transcription,
                                                           frame_f1, note_f1, song_transcription_scores)

__all__ = [
    "MatchCounts", "MetricReport", "SongSeparationScores", "SongTranscriptionScores",
    "aggregate_separation", "aggregate_transcription", "frame_f1", "note_f1",
    "recognition_scores", "sdr", "song_separation_scores", "song_transcription_scores",
]
