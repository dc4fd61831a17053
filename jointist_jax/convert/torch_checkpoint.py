"""Reading PyTorch Lightning ``.ckpt`` files into NumPy state dicts (needs the ``convert`` extra).

torch is imported lazily, inside :func:`load_state_dict`, so the rest of the package (and the
converter's pure parts) import without it.
"""

from __future__ import annotations

import os
import pickle
from typing import Mapping

import numpy as np


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message names the file and the offending key."""


def _import_torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConversionError("reading PyTorch checkpoints needs torch: install the 'convert' extra "
                              "(pip install '.[convert]', torch 2.13.0 CPU)") from e
    return torch


def _stub_class(qualified_name: str) -> type:
    """A data-only stand-in for a class the checkpoint pickles outside its tensors (e.g. a Hydra
    ``DictConfig`` in ``hyper_parameters``): it swallows its constructor arguments and state and
    runs no code of the original class."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state

    module, _, name = qualified_name.rpartition(".")
    return type(name or qualified_name, (), {"__init__": __init__, "__setstate__": __setstate__,
                                             "__module__": module or "stub"})


def _torch_load(torch, source):
    """``torch.load`` with ``weights_only=True``; non-tensor objects of other libraries (which the
    weights-only unpickler refuses) are replaced by inert stubs, so no pickled code ever runs.
    ``source``: a local file name or a seekable file object."""
    def rewind():
        if hasattr(source, "seek"):
            source.seek(0)

    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        rewind()
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(source)
        if not unsafe:
            raise
        rewind()
        with torch.serialization.safe_globals([(_stub_class(name), name) for name in unsafe]):
            return torch.load(source, map_location="cpu", weights_only=True)


def to_numpy(tensor) -> np.ndarray:
    """A torch tensor as a NumPy array; half/bfloat16 floats become float32."""
    torch = _import_torch()
    tensor = tensor.detach().cpu()
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    return tensor.numpy().copy()


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The ``state_dict`` of a PyTorch Lightning checkpoint as NumPy arrays (keys unchanged).

    Optimizer state, LR schedulers, epoch, step and hyper-parameters are not returned (they are
    not part of the model). Raises :class:`ConversionError` naming the file when it is missing,
    truncated or not a Lightning checkpoint, or when a ``state_dict`` entry is not a tensor.
    """
    from jointist_jax import storage

    path = storage.path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint {str(path)!r} does not exist or is not a file")
    torch = _import_torch()
    try:
        checkpoint = _torch_load(torch, storage.source(path))
    except Exception as e:  # torch raises RuntimeError/EOFError/UnpicklingError/... for bad files
        raise ConversionError(f"{str(path)!r} is not a readable PyTorch checkpoint (truncated or corrupt?): "
                              f"{type(e).__name__}: {e}") from e
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        found = sorted(checkpoint)[:10] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise ConversionError(f"{str(path)!r} is not a PyTorch Lightning checkpoint: expected a dict with a "
                              f"'state_dict' entry, found {found}")
    state_dict = checkpoint["state_dict"]
    if not isinstance(state_dict, Mapping):
        raise ConversionError(f"{str(path)!r}: 'state_dict' must be a mapping of tensors, got "
                              f"{type(state_dict).__name__}")
    arrays = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"{str(path)!r}: state_dict[{key!r}] is a {type(value).__name__}, "
                                  f"expected a tensor")
        arrays[str(key)] = to_numpy(value)
    return arrays
