"""The registry of training stages and the building of their models: everything that differs
between ``ir``, ``transcription``, ``separation`` and ``joint`` lives in one :class:`Stage` each,
registered here, and every module is built from ``config.model`` here.

A stage says which module it trains (``build``), what it minimises (``losses``), which targets the
input pipeline must produce (``targets``, ``stems``), what a trained run of it can do at inference
(``transcribes``, ``separates``, ``recognizes``), the runs of which other stages can initialise
one of its submodules (``init_sources``; ``config.init_from`` names such a run) and which released
reference checkpoint fills its model (``release``). The trainer, the steps, opening a trained run
(:mod:`jointist_jax.runs`), the converter and the benchmarks read these fields; none of them
branches on a stage's name. ``docs/adding_a_stage.md`` says how to add one.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jointist_jax import audio
from jointist_jax.models import losses as model_losses
from jointist_jax.models.jointist import Jointist
from jointist_jax.models.recognizer import Recognizer
from jointist_jax.models.separator import Separator
from jointist_jax.models.transcriber import Transcriber

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
BuildFn = Callable[[ml_collections.ConfigDict, nnx.Rngs], nnx.Module]
LossFn = Callable[[nnx.Module, Batch, "nnx.Rngs | None"], "tuple[jax.Array, Metrics]"]


@dataclasses.dataclass(frozen=True)
class Release:
    """A released reference checkpoint that fills a stage's model (``jointist_jax.convert``).

    ``config``: the ``configs/<config>.py`` whose full-size model it fills; ``sized``: whether the
    config takes a transcriber ``variant`` (narrow / wide); ``parts``: ``(Lightning prefix, kind,
    attribute)`` per reference module in the checkpoint, where ``kind`` is ``recognizer``,
    ``transcriber`` or ``separator`` and ``attribute`` the submodule of our model that receives it
    (None: the model itself).
    """

    config: str
    sized: bool
    parts: tuple[tuple[str, str, str | None], ...]


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training stage (see the module docstring)."""

    name: str
    build: BuildFn  # (config, rngs) -> module
    losses: LossFn  # (module, batch, rngs or None in eval) -> (total loss, named losses)
    # The input spec of its batches (``jointist_jax.data.spec.input_spec``) reads these two:
    targets: bool = False  # batches carry transcription targets (onset/frame rolls, masks)
    stems: bool = False  # batches carry the conditioned instruments' stems (``source``)
    transcribes: bool = False  # a run of it can be --checkpoint of the transcription CLI
    separates: bool = False  # ... and can separate (--separate)
    recognizes: bool = False  # a run of it can be --ir_checkpoint
    # (source stage, submodule it fills): runs of those stages ``config.init_from`` may name
    init_sources: tuple[tuple[str, str], ...] = ()
    release: Release | None = None

    def init_source_submodule(self, source_stage: str) -> str | None:
        """The submodule a run of ``source_stage`` initialises, or None if it cannot."""
        return dict(self.init_sources).get(source_stage)


_REGISTRY: dict[str, Stage] = {}


def register(stage: Stage, *, replace: bool = False) -> Stage:
    """Adds ``stage`` to the registry under ``stage.name``; returns it."""
    if not isinstance(stage, Stage):
        raise TypeError(f"register expects a Stage, got {type(stage).__name__}")
    if not stage.name:
        raise ValueError("a stage needs a name")
    if stage.name in _REGISTRY and not replace:
        raise ValueError(f"stage {stage.name!r} is already registered")
    _REGISTRY[stage.name] = stage
    return stage


def unregister(name: str) -> None:
    """Removes the stage ``name`` (for stages registered by tests or experiments)."""
    get(name)
    del _REGISTRY[name]


def get(name: str) -> Stage:
    """The registered stage ``name``; a ValueError naming the registered stages otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown stage {name!r}; config.stage must be one of {names()}") from None


def resolve(stage: str | Stage) -> Stage:
    """``stage`` itself if it is a :class:`Stage`, else the registered stage of that name."""
    return stage if isinstance(stage, Stage) else get(stage)


def names() -> tuple[str, ...]:
    """Names of the registered stages, in registration order."""
    return tuple(_REGISTRY)


def all_stages() -> tuple[Stage, ...]:
    return tuple(_REGISTRY.values())


# ----------------------------------------------------------------------------- building modules
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
    """The jnp dtype for ``config.model.dtype``."""
    if name not in DTYPES:
        raise ValueError(f"config.model.dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def section_kwargs(section: ml_collections.ConfigDict) -> dict:
    """Constructor arguments from a ``config.model`` section (lists become tuples)."""
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in section.to_dict().items()}


def recognizer(section: ml_collections.ConfigDict, **kwargs) -> Recognizer:
    """A Recognizer from a ``config.model.recognizer`` section (``defaults.recognizer_config``);
    ``kwargs``: ``rngs`` and optionally ``dtype``, ``remat``."""
    return Recognizer(**section_kwargs(section), **kwargs)


def transcriber(section: ml_collections.ConfigDict, **kwargs) -> Transcriber:
    """A Transcriber from a ``config.model.transcriber`` section (``defaults.transcriber_config``)."""
    return Transcriber(**section_kwargs(section), **kwargs)


def separator(section: ml_collections.ConfigDict, **kwargs) -> Separator:
    """A Separator from a ``config.model.separator`` section (``defaults.separator_config``)."""
    return Separator(**section_kwargs(section), **kwargs)


def build_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs, stage=None) -> nnx.Module:
    """The module ``config.stage`` trains (its :class:`Stage`'s ``build``); ``stage`` (a name or
    Stage) overrides ``config.stage``."""
    return resolve(config.stage if stage is None else stage).build(config, rngs)


def split_model(model: nnx.Module):
    """(graphdef, params, batch_stats, rest) of a module: what is trained, the BatchNorm
    statistics, and the rest (RNG streams)."""
    return nnx.split(model, nnx.Param, nnx.BatchStat, ...)


def empty_module(build: Callable[[], nnx.Module]) -> nnx.Module:
    """The module ``build()`` makes, with zero parameters, built without running its initialisers.

    For modules whose every parameter and statistic is about to be overwritten (a restored
    checkpoint, converted weights): random initialisation takes tens of seconds for the full
    joint model on CPU and would be wasted.
    """
    graphdef, state = nnx.split(nnx.eval_shape(build))
    leaves, treedef = jax.tree.flatten(state)

    def materialise(index, leaf):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            # Dropout streams: a distinct key each, like a freshly built model has.
            key = jax.random.fold_in(jax.random.key(0), index)
            return jax.random.split(key, leaf.shape) if leaf.shape else key
        return jnp.zeros(leaf.shape, leaf.dtype)

    return nnx.merge(graphdef, jax.tree.unflatten(treedef, [materialise(i, x) for i, x in enumerate(leaves)]))


def empty_model(config: ml_collections.ConfigDict) -> nnx.Module:
    """The config's model (:func:`build_model`) with zero parameters; see :func:`empty_module`."""
    return empty_module(lambda: build_model(config, nnx.Rngs(0)))


# ----------------------------------------------------------------------------- the four stages
def _common(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> dict:
    return dict(dtype=compute_dtype(config.model.dtype), remat=config.model.remat, rngs=rngs)


def _build_recognizer(config, rngs):
    return recognizer(config.model.recognizer, **_common(config, rngs))


def _build_transcriber(config, rngs):
    return transcriber(config.model.transcriber, **_common(config, rngs))


def _build_separator(config, rngs):
    return separator(config.model.separator, **_common(config, rngs))


def _build_joint(config, rngs):
    return Jointist(recognizer=None, transcriber=_build_transcriber(config, rngs),
                    separator=_build_separator(config, rngs),
                    straight_through=config.get("straight_through", False))


def recognizer_loss(logits: jax.Array, batch: Batch) -> jax.Array:
    """BCE over the 39 classes; an eval batch's padding clips (``valid`` 0) do not count."""
    if "valid" not in batch:
        return model_losses.recognizer_loss(logits, batch["instruments"])
    per_clip = jax.vmap(lambda l, y: model_losses.recognizer_loss(l[None], y[None]))(logits, batch["instruments"])
    valid = batch["valid"].astype(jnp.float32)
    return jnp.sum(per_clip * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def ir_losses(model, batch: Batch, rngs) -> tuple[jax.Array, Metrics]:
    """ir: BCE over 39 classes."""
    loss = recognizer_loss(model(audio.log_mel(batch["waveform"]), rngs=rngs), batch)
    return loss, {"ir_loss": loss}


def transcription_losses(model, batch: Batch, rngs) -> tuple[jax.Array, Metrics]:
    """transcription: L_T."""
    outputs = model(audio.log_mel(batch["waveform"]), batch["conditions"], rngs=rngs)
    loss, aux = model_losses.transcription_loss(outputs, batch)
    return loss, {"transcription_loss": loss, **aux}


def separation_losses(model, batch: Batch, rngs) -> tuple[jax.Array, Metrics]:
    """separation: L_MSS of the standalone separator (no roll input)."""
    outputs = model(batch["waveform"], batch["conditions"], None, rngs=rngs)
    loss = model_losses.separation_loss(outputs["waveform"], batch["source"], batch["source_valid"])
    return loss, {"separation_loss": loss}


def gt_roll_separation_losses(model, batch: Batch, rngs) -> tuple[jax.Array, Metrics]:
    """L_MSS of a ``sum`` separator fed the batch's ground-truth ``frame_roll`` as its roll input
    (the reference's GT-roll separator; docs/reference.md §1.5)."""
    outputs = model(batch["waveform"], batch["conditions"], batch["frame_roll"], rngs=rngs)
    loss = model_losses.separation_loss(outputs["waveform"], batch["source"], batch["source_valid"])
    return loss, {"separation_loss": loss}


def joint_losses(model, batch: Batch, rngs) -> tuple[jax.Array, Metrics]:
    """joint: L_T + L_MSS, with the separation loss back-propagating into the transcriber (no
    stop-gradient; docs/reference.md §3.4)."""
    outputs = model.transcribe_and_separate(batch["waveform"], batch["conditions"], rngs=rngs)
    l_t, aux = model_losses.transcription_loss(outputs, batch)
    l_s = model_losses.separation_loss(outputs["waveform"], batch["source"], batch["source_valid"])
    return l_t + l_s, {"transcription_loss": l_t, "separation_loss": l_s, **aux}


IR = register(Stage(
    name="ir", build=_build_recognizer, losses=ir_losses, recognizes=True,
    release=Release(config="ir", sized=False, parts=(("network.", "recognizer", None),))))
TRANSCRIPTION = register(Stage(
    name="transcription", build=_build_transcriber, losses=transcription_losses, targets=True,
    transcribes=True,
    release=Release(config="transcription", sized=True, parts=(("network.", "transcriber", None),))))
SEPARATION = register(Stage(
    name="separation", build=_build_separator, losses=separation_losses, stems=True))
JOINT = register(Stage(
    name="joint", build=_build_joint, losses=joint_losses, targets=True, stems=True, transcribes=True,
    separates=True, init_sources=(("transcription", "transcriber"),),
    release=Release(config="joint_scratch", sized=True,
                    parts=(("transcription_model.network.", "transcriber", "transcriber"),
                           ("separation_model.network.", "separator", "separator")))))

# Not registered (no config trains it): the ``sum`` separator alone on ground-truth rolls, which the
# train-step benchmark times (docs/reference.md §11.3 s_train). Its batches carry targets and stems.
GT_ROLL_SEPARATION = Stage(name="separation_gt_roll", build=_build_separator, losses=gt_roll_separation_losses,
                           targets=True, stems=True)
