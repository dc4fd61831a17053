"""Import of the released PyTorch Jointist checkpoints.

* :mod:`~jointist_jax.convert.layers`: pure layout conversions (conv OIHW -> HWIO, linear, ...).
* :mod:`~jointist_jax.convert.mapping`: reference state-dict key -> our variable path and layout.
* :mod:`~jointist_jax.convert.assign`: strict loading of one reference module into one of ours.
* :mod:`~jointist_jax.convert.torch_checkpoint`: reading Lightning ``.ckpt`` files (torch, lazily).
* :mod:`~jointist_jax.convert.convert`: whole checkpoints -> models -> orbax workdirs.
* :mod:`~jointist_jax.convert.cli`: ``launch/convert_torch_checkpoint.py``.

Only reading a ``.ckpt`` needs torch (the ``convert`` extra); it is imported inside that function.
"""

from jointist_jax.convert.torch_checkpoint import ConversionError

__all__ = ["ConversionError"]
