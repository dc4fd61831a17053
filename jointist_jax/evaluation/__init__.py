"""Evaluating a trained run on whole songs of a split (``jointist-eval``, ``launch/eval.py``).

* :mod:`references`: a track's reference notes and frame rolls, predicted notes as metric input.
* :mod:`runner`: :func:`evaluate_run` runs a checkpoint over a split with ground-truth and with
  recognizer-predicted instruments and returns an :class:`EvalResult` (metrics + media).
* :mod:`charts`: per-instrument bar charts (PNG); piano rolls: :mod:`jointist_jax.inference.pianoroll_png`.
* :mod:`reporting`: writes an :class:`EvalResult` to TensorBoard and to ``metrics.json`` + files.
* :mod:`watch`: follows a training workdir and evaluates each new checkpoint once.
* :mod:`cli`: the ``jointist-eval`` command (absl flags; imported by entry points only).

Each song is processed by :mod:`jointist_jax.inference.songs`, as in ``jointist-transcribe``. The
metrics themselves are the pure functions of :mod:`jointist_jax.metrics`.
"""

__all__ = ["EvalOptions", "EvalResult", "SongMedia", "evaluate_run"]


def __getattr__(name: str):
    """The names of :mod:`runner`, imported on first use: importing the package (``jointist-eval``
    does, before its ``main()`` applies the CPU XLA flags) must not load jax."""
    if name in __all__:
        from jointist_jax.evaluation import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
