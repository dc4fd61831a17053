"""Builds the module a training stage trains, from ``config.model`` (configs/defaults.py)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jointist_jax.models.jointist import Jointist
from jointist_jax.models.recognizer import Recognizer
from jointist_jax.models.separator import Separator
from jointist_jax.models.transcriber import Transcriber

STAGES = ("ir", "transcription", "separation", "joint")

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
    """The jnp dtype for ``config.model.dtype``."""
    if name not in _DTYPES:
        raise ValueError(f"config.model.dtype must be one of {sorted(_DTYPES)}, got {name!r}")
    return _DTYPES[name]


def _kwargs(section: ml_collections.ConfigDict) -> dict:
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in section.to_dict().items()}


def build_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.Module:
    """The stage's module: Recognizer, Transcriber, standalone Separator, or Jointist (T + S)."""
    stage = config.stage
    common = dict(dtype=compute_dtype(config.model.dtype), remat=config.model.remat, rngs=rngs)
    if stage == "ir":
        return Recognizer(**_kwargs(config.model.recognizer), **common)
    if stage == "transcription":
        return Transcriber(**_kwargs(config.model.transcriber), **common)
    if stage == "separation":
        return Separator(**_kwargs(config.model.separator), **common)
    if stage == "joint":
        return Jointist(recognizer=None,
                        transcriber=Transcriber(**_kwargs(config.model.transcriber), **common),
                        separator=Separator(**_kwargs(config.model.separator), **common),
                        straight_through=config.get("straight_through", False))
    raise ValueError(f"config.stage must be one of {STAGES}, got {stage!r}")


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
