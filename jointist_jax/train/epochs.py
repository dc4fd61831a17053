"""Training length in the reference's epochs, measured on the training split actually built.

The reference's epoch is one crop of every training track (docs/reference.md §1.2), batched at
the stage's batch size with the last partial batch kept: ``ceil(tracks / batch)`` steps. A stage
config gives its length as ``config.epochs`` and its validation cadence as
``config.eval_every_epochs``; :func:`resolve_length` turns them into ``total_steps`` and
``eval_every`` from the number of examples an epoch of the built training split has (its tracks
for the reference's ``per_track`` sampling; Slakh2100's original split has 1500, the redux split
1289). A positive ``total_steps`` or ``eval_every`` is kept as given (docs/deviations.md 22).
"""

from __future__ import annotations

import math

import ml_collections

from jointist_jax.data import pipeline
from jointist_jax.data.spec import input_spec
from jointist_jax import stages


def steps_for_epochs(epochs: int, batch: int, examples_per_epoch: int) -> int:
    """Optimizer steps of ``epochs`` epochs: ``epochs * ceil(examples_per_epoch / batch)``."""
    if epochs < 1 or batch < 1 or examples_per_epoch < 1:
        raise ValueError(f"steps_for_epochs: need positive epochs, batch and examples per epoch, got "
                         f"{epochs}, {batch}, {examples_per_epoch}")
    return epochs * math.ceil(examples_per_epoch / batch)


def examples_per_epoch(config: ml_collections.ConfigDict, data_dir) -> int:
    """Examples in one epoch of ``config.data.train_split`` of the dataset in ``data_dir``: the
    tracks with a valid crop (``per_track``), or the crop starts over the clip length (``all_audio``)."""
    spec = input_spec(stages.get(config.stage), config)
    with pipeline.InputPipeline(data_dir, config.data.train_split, spec, process_index=0, process_count=1) as pipe:
        return pipe.examples_per_epoch


def resolve_length(config: ml_collections.ConfigDict, data_dir) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``total_steps`` and ``eval_every`` in steps.

    ``total_steps == 0`` becomes ``config.epochs`` epochs of the built training split, and
    ``eval_every == 0`` becomes ``config.eval_every_epochs`` epochs; positive values are kept.
    Raises ``ValueError`` naming the field when a length is given neither way.
    """
    config = ml_collections.ConfigDict(config.to_dict())
    total_from_epochs = config.total_steps == 0
    eval_from_epochs = config.eval_every == 0
    if not (total_from_epochs or eval_from_epochs):
        return config
    examples = examples_per_epoch(config, data_dir)
    batch = config.data.global_batch
    for field, epochs_field, from_epochs in (("total_steps", "epochs", total_from_epochs),
                                             ("eval_every", "eval_every_epochs", eval_from_epochs)):
        if not from_epochs:
            continue
        epochs = config.get(epochs_field, 0)
        if epochs < 1:
            raise ValueError(f"config.{field} is 0, which means config.{epochs_field} epochs of the training "
                             f"split, but config.{epochs_field} is {epochs}; set one of them")
        config[field] = steps_for_epochs(epochs, batch, examples)
    return config
