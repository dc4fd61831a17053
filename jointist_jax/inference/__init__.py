"""Inference on whole songs: windowing and stitching, post-processing, outputs, and the CLI.

Modules: ``windows`` (10-s windows, centre stitching), ``postprocess`` (edits of decoded notes; the
decoding itself is ``jointist_jax.rolls``),
``predictor`` (batched model calls over a song), ``songs`` (one song: instrument choice, predict and
decode; shared by ``cli`` and the evaluation), ``audio_io``, ``midi_io``, ``pianoroll_png``,
``outputs`` (one folder per song), ``cli`` (``jointist-transcribe``; trained runs are opened by
:mod:`jointist_jax.runs`). Import the submodules directly; this package imports nothing heavy.
"""
