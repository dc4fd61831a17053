"""Slakh2100 -> TFRecord windows through tensorflow-datasets (dataset name ``slakh2100``).

Modules: ``slakh_tracks`` reads one Slakh track folder into class stems and notes,
``ordered_pool`` the parallel track loading, ``slakh2100_dataset_builder`` the TFDS builder
:class:`Slakh2100`. The record schema and the window arithmetic that the builder shares with the
reader are in the package: :mod:`jointist_jax.data.schema`, :mod:`jointist_jax.data.packing`.
The builder is imported lazily: worker processes that only load tracks should not pay for
importing TensorFlow.
"""

_BUILDER_NAMES = ("Slakh2100", "Slakh2100Config", "make_config")


def __getattr__(name):
    if name in _BUILDER_NAMES:
        from data_pipelines.slakh2100 import slakh2100_dataset_builder
        return getattr(slakh2100_dataset_builder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_BUILDER_NAMES)
