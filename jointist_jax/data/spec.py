"""Every setting of the input pipeline in one value, :class:`InputSpec`, and the one function that
derives it from a training stage and a config (:func:`input_spec`).

The trainer, the evaluation, the benchmarks and the tests all hand an :class:`InputSpec` to
:func:`jointist_jax.data.pipeline.make_train_iterator`; the pipeline, the crop sampling
(:mod:`jointist_jax.data.crops`) and the example builder (:mod:`jointist_jax.data.examples`) read
their settings from it, and its :meth:`InputSpec.fields` names the keys, dtypes and shapes of the
batches it produces.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from jointist_jax import instruments, music, rolls
from jointist_jax.data.crops import CROP_SAMPLINGS, EVAL_OFFSET_SECONDS

ROLL_KEYS = ("onset_roll", "reg_onset_roll", "frame_roll", "mask_roll")


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """The input pipeline's settings (docs/reference.md §4.3, §3.1; docs/deviations.md 13, 14).

    Attributes:
      global_batch: clips per step over all hosts; each host makes ``global_batch // process_count``.
      clip_seconds: crop length.
      num_positive, num_negative: rows per clip (0 and 0: recognizer batches, waveform + labels).
      temperature: positive sampler temperature (:mod:`jointist_jax.data.sampler`).
      transcribe_negatives: docs/deviations.md 14 option.
      targets, stems: False skips the transcription rolls / the stems (``source``).
      crop_sampling: ``"per_track"`` (the reference: every track equally likely) or
        ``"all_audio"`` (every crop start equally likely); see :mod:`jointist_jax.data.crops`.
      seed: data seed.
      random_crop: False = evaluation mode (one fixed crop per track, finite, ``valid`` key).
      eval_offset_seconds: evaluation crop start (docs/deviations.md 13).
      sample_rate: the clips' audio rate; the dataset must have been built at this rate.
      prefetch: batches prefetched.
      num_workers: parallel example builders (None: :data:`~jointist_jax.data.pipeline.LOCAL_WORKERS`,
        or :data:`~jointist_jax.data.pipeline.REMOTE_WORKERS` for a dataset in a bucket).
      data_axis: the mesh axis the global batch is sharded along.
    """

    global_batch: int
    clip_seconds: float = 10.0
    num_positive: int = 0
    num_negative: int = 0
    temperature: float = 0.5
    transcribe_negatives: bool = False
    targets: bool = True
    stems: bool = True
    crop_sampling: str = "per_track"
    seed: int = 0
    random_crop: bool = True
    eval_offset_seconds: float = EVAL_OFFSET_SECONDS
    sample_rate: int = music.SAMPLE_RATE
    prefetch: int = 2
    num_workers: int | None = None
    data_axis: str = "data"

    def __post_init__(self):
        if self.crop_sampling not in CROP_SAMPLINGS:
            raise ValueError(f"crop_sampling must be one of {CROP_SAMPLINGS}, got {self.crop_sampling!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got seed={self.seed}")
        if self.num_positive < 0 or self.num_negative < 0:
            raise ValueError(f"num_positive/num_negative must be >= 0, got {self.num_positive}/{self.num_negative}")

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def rows(self) -> int:
        """Conditioned rows per clip."""
        return self.num_positive + self.num_negative

    @property
    def frames(self) -> int:
        """Roll frames per clip."""
        return rolls.num_frames(self.clip_samples / self.sample_rate)

    def fields(self) -> list[tuple[str, np.dtype, tuple[int, ...]]]:
        """``(key, dtype, per-clip shape)`` of every output, in output order."""
        k, t, c, n = self.rows, self.frames, self.clip_samples, instruments.CONDITION_SIZE
        out = [("waveform", np.float32, (c,)), ("instruments", np.float32, (n,))]
        if k:
            out += [("class_ids", np.int32, (k,)), ("conditions", np.float32, (k, n)),
                    ("is_positive", np.float32, (k,))]
            if self.targets:
                out += [(name, np.float32, (k, t, music.NUM_PITCHES)) for name in ROLL_KEYS]
            if self.stems:
                out += [("source", np.float32, (k, c)), ("source_valid", np.float32, (k,))]
        if not self.random_crop:
            out.append(("valid", np.float32, ()))
        return out


def input_spec(stage, config: ml_collections.ConfigDict, *, random_crop: bool = True) -> InputSpec:
    """The input settings of ``stage``'s batches under ``config``: ``config.data``'s crop, batch and
    row settings, ``config.seed``, and the outputs the stage needs (``stage.targets``,
    ``stage.stems``). ``random_crop=False``: the fixed evaluation crops."""
    data = config.data
    return InputSpec(
        global_batch=data.global_batch, clip_seconds=data.clip_seconds, num_positive=data.num_positive,
        num_negative=data.num_negative, temperature=data.temperature,
        transcribe_negatives=data.transcribe_negatives, targets=stage.targets, stems=stage.stems,
        crop_sampling=data.crop_sampling, seed=config.seed, random_crop=random_crop)
