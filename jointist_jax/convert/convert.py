"""Released Jointist checkpoints -> jointist-jax models and orbax checkpoints.

Three Lightning checkpoints are supported (docs/reference.md §11.2), by ``module`` (the stages
whose registry entry has a ``release``, jointist_jax/stages.py):

* ``transcription`` (``transcription1000.ckpt``): ``Original`` + CNN8Dropout (``narrow``) or
  CNN8Dropout_Wide (``wide``), under the prefix ``network.``;
* ``ir`` (``MTT.ckpt``): ``CombinedModel_NewCLSv2``, under ``network.``;
* ``joint`` (``tseparation.ckpt``): the transcriber under ``transcription_model.network.`` and
  ``TCondUNet(mode='sum')`` under ``separation_model.network.``.

The model is built from the stage's config (``configs/transcription.py``, ``configs/ir.py``,
``configs/joint_scratch.py``, full size) and written with
:func:`jointist_jax.runs.save_model`, so ``runs.load_model``, ``init_from`` and the inference
entry points read it like any trained run.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Mapping

import ml_collections
import numpy as np
from flax import nnx

from jointist_jax.convert import assign, mapping
from jointist_jax.convert.torch_checkpoint import ConversionError, load_state_dict
from jointist_jax import runs, stages

# The stages with a released checkpoint (``Stage.release`` in jointist_jax/stages.py).
MODULES = tuple(stage.name for stage in stages.all_stages() if stage.release is not None)
VARIANTS = ("narrow", "wide")
DEFAULT_VARIANT = "narrow"  # the width the released checkpoints presumably hold (docs/reference.md §0.13)


@dataclass(frozen=True)
class Part:
    """One reference module inside a checkpoint: its Lightning ``prefix``, its tsv module name
    and the attribute of our model that receives it (None: the model itself)."""

    prefix: str
    reference_module: str
    attribute: str | None


def _release(module: str) -> stages.Release:
    if module not in MODULES:
        raise ConversionError(f"module must be one of {MODULES}, got {module!r}")
    return stages.get(module).release


def _sized(module: str) -> bool:
    """Whether ``module``'s release comes in the transcriber variants (narrow / wide)."""
    return _release(module).sized


def check_module_and_variant(module: str, variant: str | None) -> str | None:
    """Validates the ``--module``/``--variant`` pair; returns the variant to use (None for ir)."""
    if not _sized(module):
        if variant is not None:
            sized = " and ".join(m for m in MODULES if _sized(m))
            raise ConversionError(f"--variant applies to {sized} only (the {module} model has one "
                                  f"size), got variant {variant!r} for module {module!r}")
        return None
    variant = DEFAULT_VARIANT if variant is None else variant
    if variant not in VARIANTS:
        raise ConversionError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return variant


def parts(module: str, variant: str | None = None) -> tuple[Part, ...]:
    """The reference modules a ``module`` checkpoint holds, with their prefixes."""
    variant = check_module_and_variant(module, variant)
    reference_module = {"recognizer": lambda: mapping.IR_MODULE,
                        "transcriber": lambda: mapping.TRANSCRIPTION_MODULES[variant],
                        "separator": lambda: mapping.SEPARATION_MODULE}
    return tuple(Part(prefix, reference_module[kind](), attribute)
                 for prefix, kind, attribute in _release(module).parts)


def build_config(module: str, variant: str | None = None) -> ml_collections.ConfigDict:
    """The full-size config of the stage whose model a ``module`` checkpoint fills."""
    variant = check_module_and_variant(module, variant)
    name = _release(module).config
    arg = None if variant is None else f"variant={variant}"
    try:
        stage_config = importlib.import_module(f"configs.{name}")
    except ImportError as e:
        raise ConversionError(f"cannot import configs.{name}: run from the repository root or put it on "
                              f"PYTHONPATH") from e
    return stage_config.get_config(arg)


def expected_keys(module: str, variant: str | None) -> dict[str, tuple[int, ...]]:
    """Full checkpoint key (prefix included) -> reference shape, for one module/variant."""
    return {p.prefix + key: shape for p in parts(module, variant)
            for key, shape in mapping.reference_keys(p.reference_module).items()}


def _candidates():
    for module in MODULES:
        for variant in (VARIANTS if _sized(module) else (None,)):
            yield module, variant


def identify(state_dict: Mapping[str, np.ndarray]) -> list[tuple[str, str | None]]:
    """The (module, variant) pairs whose keys and shapes the checkpoint's state dict matches exactly."""
    shapes = {k: tuple(np.shape(v)) for k, v in state_dict.items()}
    return [(m, v) for m, v in _candidates() if expected_keys(m, v) == shapes]


def _describe(module: str, variant: str | None) -> str:
    return f"--module {module}" + (f" --variant {variant}" if variant else "")


def check_state_dict(state_dict: Mapping[str, np.ndarray], module: str, variant: str | None, *,
                     source: str) -> None:
    """Raises :class:`ConversionError` unless the state dict has exactly the keys and shapes of
    ``module``/``variant``; the message names the offending keys and, if the checkpoint matches
    another module or variant, says which."""
    variant = check_module_and_variant(module, variant)
    expected = expected_keys(module, variant)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = [f"{k!r} {tuple(np.shape(state_dict[k]))} (expected {expected[k]})"
                   for k in sorted(set(expected) & set(state_dict)) if tuple(np.shape(state_dict[k])) != expected[k]]
    if not (missing or unexpected or wrong_shape):
        return
    problems = []
    if missing:
        problems.append(f"missing key(s) {assign.format_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected key(s) {assign.format_keys(unexpected)}")
    if wrong_shape:
        problems.append(f"key(s) of the wrong shape: {', '.join(wrong_shape[:8])}"
                        + (f" ... ({len(wrong_shape)} in all)" if len(wrong_shape) > 8 else ""))
    prefixes = ", ".join(repr(p.prefix) for p in parts(module, variant))
    message = f"{source} does not match {_describe(module, variant)} (reference keys under {prefixes})"
    matches = identify(state_dict)
    if matches:
        message += f"; it is a {' or '.join(_describe(m, v) for m, v in matches)} checkpoint"
    raise ConversionError(message + ". Details: " + "; ".join(problems))


def convert_state_dict(state_dict: Mapping[str, np.ndarray], module: str, variant: str | None = None, *,
                       source: str = "checkpoint") -> tuple[ml_collections.ConfigDict, nnx.Module]:
    """Our full-size model (eval mode) and its config, set from a Lightning ``state_dict``.

    Args:
      state_dict: the checkpoint's ``state_dict`` as NumPy arrays, keys with Lightning prefixes.
      module: ``"transcription"``, ``"ir"`` or ``"joint"``.
      variant: transcriber width for transcription/joint (``"narrow"`` default, ``"wide"``);
        must be None for ir.
      source: the file name for error messages.
    """
    variant = check_module_and_variant(module, variant)
    check_state_dict(state_dict, module, variant, source=source)
    config = build_config(module, variant)
    model = stages.empty_model(config)  # zero-filled: every array is assigned below
    for part in parts(module, variant):
        target = model if part.attribute is None else getattr(model, part.attribute)
        tensors = {k[len(part.prefix):]: v for k, v in state_dict.items() if k.startswith(part.prefix)}
        assign.assign_reference_weights(target, part.reference_module, tensors,
                                        source=f"{source} [{part.prefix}*]")
    model.eval()
    return config, model


def convert_checkpoint(ckpt, out, module: str, variant: str | None = None, *, overwrite: bool = False):
    """Converts a released Lightning checkpoint into a jointist-jax workdir at ``out``.

    Writes ``out/config.json`` and ``out/checkpoints/0`` (see ``runs.save_model``). Nothing
    half-written is left behind: a local ``out`` is written to a temporary directory next to it and
    renamed at the end; a ``gs://`` one is deleted again if writing fails (and a step in a bucket
    only counts once orbax has committed it). An existing ``out`` is an error unless ``overwrite``.
    ``ckpt`` and ``out`` may be local or ``gs://``. Returns ``out``.
    """
    from jointist_jax import storage

    out = storage.path(out)
    variant = check_module_and_variant(module, variant)
    if out.exists() and not overwrite:
        raise ConversionError(f"output directory {str(out)!r} already exists; choose a new one or overwrite it")
    state_dict = load_state_dict(ckpt)
    config, model = convert_state_dict(state_dict, module, variant, source=str(ckpt))
    del state_dict

    storage.make_dirs(out.parent, role="--out")
    if storage.is_remote(out):
        storage.remove_tree(out)
        try:
            runs.save_model(out, config, model)
        except BaseException:
            storage.remove_tree(out)
            raise
        return out
    tmp = tempfile.mkdtemp(prefix=f".{out.name}.converting-", dir=os.fspath(out.parent))
    try:
        runs.save_model(tmp, config, model)
        if out.exists():
            shutil.rmtree(os.fspath(out))
        os.rename(tmp, os.fspath(out))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
