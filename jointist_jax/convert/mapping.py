"""Reference state-dict key -> where the tensor lives in our model, and its layout (docs/reference.md §11.2).

The reference key list (one row per tensor: module, key, shape) is
``jointist_jax/resources/reference_state_dict_keys.tsv``. Each of its keys is, for one reference
module, exactly one of:

* a parameter or BatchNorm statistic of ours: :class:`Target` with our variable path (as in
  ``nnx.to_flat_state``) and a layout kind of :data:`jointist_jax.convert.layers.LAYOUTS`;
* a tensor of a bidirectional ``nn.GRU``: :class:`Target` of kind ``"gru"`` whose path is our
  :class:`~jointist_jax.models.gru.BiGRU` module and ``gru_key`` the bare PyTorch name (these are
  loaded together by ``gru.load_pytorch_weights``);
* a front-end buffer (STFT window, mel filterbank) that we recompute, checked against ours:
  :data:`FRONT_END_BUFFERS`;
* BatchNorm's ``num_batches_tracked`` step counter, which Flax does not keep: ignored.

Pure functions of the key and its reference shape; nothing here needs torch or a model.
"""

from __future__ import annotations

import csv
import functools
import importlib.resources
import re
from dataclasses import dataclass

from jointist_jax.convert import layers

# Reference module names used in the tsv, per (our module, transcriber variant).
TRANSCRIPTION_MODULES = {"narrow": "transcription_CNN8Dropout", "wide": "transcription_CNN8Dropout_Wide"}
IR_MODULE = "detection_CombinedModel_NewCLSv2"
SEPARATION_MODULE = "separation_TCondUNet_sum"

# Buffers of the reference's front ends: we recompute them (jointist_jax.audio), so they are
# compared with ours instead of copied. Value: what they hold, for messages.
FRONT_END_BUFFERS = {
    "spec_layer.spectrogram.window": "STFT window (periodic Hann, n_fft 2048)",
    "spec_layer.mel_scale.fb": "mel filterbank (HTK, 229 bins, no norm)",
    "unet_base.stft.window": "separator STFT window (periodic Hann)",
    "unet_base.istft.window": "separator inverse-STFT window (periodic Hann)",
}
IGNORED_SUFFIX = "num_batches_tracked"

_GRU_LEAF = re.compile(r"(weight|bias)_(ih|hh)_l(\d+)(_reverse)?")
Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Target:
    """Where one reference tensor goes: our variable ``path`` and its layout ``kind``.

    For ``kind == "gru"``, ``path`` is the BiGRU module and ``gru_key`` the PyTorch GRU name
    (``weight_ih_l0_reverse``, ...).
    """

    path: Path
    kind: str
    gru_key: str | None = None


@functools.lru_cache(maxsize=None)
def reference_keys(module: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of one reference module, read from the packaged tsv (docs/reference.md §11.2)."""
    resource = importlib.resources.files("jointist_jax") / "resources" / "reference_state_dict_keys.tsv"
    with resource.open("r") as f:
        rows = [row for row in csv.reader(f, delimiter="\t")]
    if not rows or rows[0] != ["module", "key", "shape"]:
        raise ValueError(f"{resource}: expected a header 'module<TAB>key<TAB>shape'")
    keys = {key: tuple(int(s) for s in re.findall(r"\d+", shape)) for name, key, shape in rows[1:]
            if name == module}
    if not keys:
        known = sorted({row[0] for row in rows[1:]})
        raise ValueError(f"{resource}: no keys for reference module {module!r}; it has {known}")
    return keys


def is_ignored(key: str) -> bool:
    """Whether ``key`` carries nothing to convert (BatchNorm's step counter)."""
    return key.endswith("." + IGNORED_SUFFIX)


def is_front_end_buffer(key: str) -> bool:
    """Whether ``key`` is a front-end buffer we recompute and only compare (:data:`FRONT_END_BUFFERS`)."""
    return key in FRONT_END_BUFFERS


def _generic(parts: list[str | int], shape: tuple[int, ...], key: str) -> Target:
    """The rules shared by all modules: BatchNorm/LayerNorm, Conv2d, Linear, biases, GRUs."""
    leaf, owner = parts[-1], tuple(parts[:-1])
    gru = _GRU_LEAF.fullmatch(str(leaf))
    if gru:
        return Target(owner, "gru", gru_key=str(leaf))
    if leaf in ("running_mean", "running_var"):
        return Target((*owner, str(leaf).removeprefix("running_")), "copy")
    if leaf == "bias":
        return Target((*owner, "bias"), "copy")
    if leaf == "weight":
        # One-dimensional weights are exactly the norm layers' scales in these models.
        kind = {1: "copy", 2: "linear", 4: "conv2d"}.get(len(shape))
        if kind is not None:
            return Target((*owner, "scale" if kind == "copy" else "kernel"), kind)
    raise ValueError(f"reference key {key!r} with shape {shape} matches no conversion rule")


def transcriber_target(key: str, shape: tuple[int, ...]) -> Target:
    """Our :class:`~jointist_jax.models.transcriber.Transcriber` path for a reference ``Original`` key.

    Names are the same on both sides (``frame_model.acoustic.conv_block1.conv1.weight`` ->
    ``frame_model/acoustic/conv_block1/conv1/kernel``).
    """
    return _generic(key.split("."), shape, key)


# Recognizer renames (regex on the reference key -> our dotted prefix). The reference's
# feature_extractor Sequential interleaves blocks and Dropouts; its ViT-style transformer wraps
# each sub-layer as Residual(PreNorm(fn)), hence the ``.0.fn.`` / ``.1.fn.fn.`` levels.
_RECOGNIZER_RENAMES = (
    (re.compile(r"encoder\.transformer\.layers\.(\d+)\.0\.fn\.norm\.(.+)"), r"encoder.layers.\1.attention_norm.\2"),
    (re.compile(r"encoder\.transformer\.layers\.(\d+)\.0\.fn\.fn\.to_qkv\.(.+)"),
     r"encoder.layers.\1.attention.to_qkv.\2"),
    (re.compile(r"encoder\.transformer\.layers\.(\d+)\.0\.fn\.fn\.to_out\.0\.(.+)"),
     r"encoder.layers.\1.attention.to_out.\2"),
    (re.compile(r"encoder\.transformer\.layers\.(\d+)\.1\.fn\.norm\.(.+)"), r"encoder.layers.\1.feed_forward_norm.\2"),
    (re.compile(r"encoder\.transformer\.layers\.(\d+)\.1\.fn\.fn\.net\.(0|3)\.(.+)"),
     r"encoder.layers.\1.feed_forward.net\2.\3"),
)


def _split_path(dotted: str) -> list[str | int]:
    return [int(p) if p.isdigit() else p for p in dotted.split(".")]


def recognizer_target(key: str, shape: tuple[int, ...]) -> Target:
    """Our :class:`~jointist_jax.models.recognizer.Recognizer` path for a ``CombinedModel_NewCLSv2`` key."""
    if key in ("encoder.cls_token", "encoder.pos_embedding"):
        return Target(("encoder", key.split(".")[1]), "copy")
    if key == "conv.weight":  # Conv1d(6144, 256, kernel 1) is our Dense ``conv``
        return Target(("conv", "kernel"), "conv1d_pointwise")
    block = re.fullmatch(r"backbone\.feature_extractor\.(\d+)\.(.+)", key)
    if block:
        index = int(block.group(1))
        if index % 2:  # odd entries are the Dropouts, which have no tensors
            raise ValueError(f"reference key {key!r}: feature_extractor.{index} is a Dropout in the reference")
        return _generic(["backbone", "blocks", index // 2, *block.group(2).split(".")], shape, key)
    for pattern, replacement in _RECOGNIZER_RENAMES:
        if pattern.fullmatch(key):
            return _generic(_split_path(pattern.sub(replacement, key)), shape, key)
    return _generic(key.split("."), shape, key)


def separator_target(key: str, shape: tuple[int, ...]) -> Target:
    """Our :class:`~jointist_jax.models.separator.Separator` path for a ``TCondUNet`` key.

    ``unet_base.`` is dropped and ``unet_film.`` becomes ``film.``; each decoder block's ``conv1``
    is the ConvTranspose2d (k2, s2), which keeps PyTorch's kernel layout in our module.
    """
    if key.startswith("unet_base."):
        rest = key.removeprefix("unet_base.")
    elif key.startswith("unet_film."):
        rest = "film." + key.removeprefix("unet_film.")
    else:
        raise ValueError(f"separator reference key {key!r} is under neither unet_base. nor unet_film.")
    if re.fullmatch(r"decoder_block\d+\.conv1\.weight", rest):
        return Target((*rest.split(".")[:-1], "kernel"), "conv_transpose2x2")
    return _generic(rest.split("."), shape, key)


TARGET_FUNCTIONS = {
    TRANSCRIPTION_MODULES["narrow"]: transcriber_target,
    TRANSCRIPTION_MODULES["wide"]: transcriber_target,
    IR_MODULE: recognizer_target,
    SEPARATION_MODULE: separator_target,
}


def target(module: str, key: str, shape: tuple[int, ...]) -> Target:
    """Where reference ``module``'s tensor ``key`` (reference ``shape``) goes in our model."""
    if module not in TARGET_FUNCTIONS:
        raise ValueError(f"no key mapping for reference module {module!r}; known: {sorted(TARGET_FUNCTIONS)}")
    return TARGET_FUNCTIONS[module](key, shape)


def gru_variable(t: Target, shape: tuple[int, ...]) -> tuple[Path, tuple[int, ...]]:
    """Our stacked GRU variable for a ``"gru"`` target and its shape (both directions stacked).

    Layout (``jointist_jax.models.gru``): ``layers[l].w_ih`` (2, in, 3H), ``w_hh`` (2, H, 3H),
    ``b_ih``/``b_hh`` (2, 3H); direction 0 is forward, 1 the ``_reverse`` tensors.
    """
    kind, matrix, layer, _ = _GRU_LEAF.fullmatch(t.gru_key).groups()
    name = ("w_" if kind == "weight" else "b_") + matrix
    return (*t.path, "layers", int(layer), name), (2, *shape[::-1])


def our_path_and_shape(module: str, key: str, shape: tuple[int, ...]) -> tuple[Path, tuple[int, ...]]:
    """Our variable path and shape for reference tensor ``key`` of ``shape`` (not for ignored
    keys or front-end buffers). GRU tensors of both directions share one stacked variable."""
    t = target(module, key, shape)
    if t.kind == "gru":
        return gru_variable(t, shape)
    return t.path, layers.to_ours_shape(t.kind, shape)
