"""Builds the module a training stage trains, from ``config.model`` (configs/defaults.py)."""

from __future__ import annotations

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
