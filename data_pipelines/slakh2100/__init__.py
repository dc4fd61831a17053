"""Slakh2100 -> TFRecord windows through tensorflow-datasets (dataset name ``slakh2100``).

Modules: ``slakh_tracks`` reads one Slakh track folder into class stems and notes, ``windows``
holds the packing arithmetic (and :func:`assemble_track`), ``ordered_pool`` the parallel track
loading, ``slakh2100_dataset_builder`` the TFDS builder :class:`Slakh2100`. The builder is
imported lazily: worker processes that only load tracks, and readers that only need
:func:`assemble_track`, should not pay for importing TensorFlow.
"""

from data_pipelines.slakh2100.windows import assemble_track

_BUILDER_NAMES = ("Slakh2100", "Slakh2100Config", "make_config", "features")


def __getattr__(name):
    if name in _BUILDER_NAMES:
        from data_pipelines.slakh2100 import slakh2100_dataset_builder
        return getattr(slakh2100_dataset_builder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["assemble_track", *_BUILDER_NAMES]
