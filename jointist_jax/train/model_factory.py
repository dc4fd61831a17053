"""Builds modules from ``config.model`` sections (configs/defaults.py), and the module a training
stage trains (the stage registry, :mod:`jointist_jax.train.stages`, says which)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jointist_jax.models.recognizer import Recognizer
from jointist_jax.models.separator import Separator
from jointist_jax.models.transcriber import Transcriber

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
    """The module ``config.stage`` trains (its :class:`jointist_jax.train.stages.Stage`'s ``build``);
    ``stage`` (a name or Stage) overrides ``config.stage``."""
    from jointist_jax.train import stages

    return stages.resolve(config.stage if stage is None else stage).build(config, rngs)


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
