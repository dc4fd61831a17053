"""XLA flags that measurably speed up jointist-jax on CPU, applied before jax is imported.

Measured on a 2-core x86 CPU (jaxlib 0.10.2): XLA's default CPU path hands
convolutions to YNNPACK, which ran the transcriber's conv stack at 2.2x torch's time.
``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`` keeps YNNPACK for the rest
(the GRU's matmuls stay fast) but lets XLA's own conv emitter run convolutions: 1.0x torch.
Switching YNNPACK off entirely made the GRU 2.5x slower.

That flag keeps only single convolutions off YNNPACK: its elementwise and reduce fusions still
take in whole conv blocks (the optimised HLO runs the transcriber's conv blocks 2 and 3 as one
YNNPACK call, with full-size zero tensors materialised for the ReLUs). The inference programs therefore
apply :data:`INFERENCE_CPU_FLAGS`, YNNPACK for the dots alone: alternated with the training flag
in one process on a loaded 2-core CPU, CPU seconds 0.83x for the recognizer, 0.86x for the
transcriber (K = 5), 1.01x for the separator, outputs within 6e-7 (README, "Where the time goes
inside the models"). Training keeps :data:`CPU_FLAGS`: its steps were not measured with it.

Each program calls :func:`apply_cpu_flags` itself before it imports jax: the ``main()`` of every
console script, the top of every benchmark script; with ``host_device_count`` it also simulates
several CPU devices (tests/conftest.py). Importing ``jointist_jax`` applies nothing. It only adds
flags that the user has not set, and does nothing once jax is imported (too late to matter), on
a machine with an accelerator (an NVIDIA GPU or a TPU device node: XLA builds of other
versions may not know the CPU flag, and it buys nothing there), or with
``JOINTIST_CPU_FLAGS=0``.
"""

from __future__ import annotations

import glob
import os
import sys

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)
# Whole-song inference: YNNPACK runs the dots (the GRUs', the recognizer's transformer), XLA's own
# emitter every convolution.
INFERENCE_CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=individual_dot",)

# The same two choices as XLA compile options, for one process that compiles programs both ways
# (``Predictor(compiler_options=...)``; benchmarks/inference.py ``--compare_old``): an option
# overrides the flag of XLA_FLAGS for that compilation. It names the whole list of fusion types
# where the flag's ``-`` removes one from XLA's default list, which in jaxlib 0.10.2 is individual
# dot, individual convolution and reduce. tests/test_xla_flags.py checks that each dict compiles
# the transcriber to the very program its flag does.
TRAINING_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
INFERENCE_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def apply_cpu_flags(host_device_count: int | None = None, *, inference: bool = False) -> None:
    """Adds :data:`CPU_FLAGS` (:data:`INFERENCE_CPU_FLAGS` with ``inference``; optionally a
    simulated host device count) to ``XLA_FLAGS``."""
    if "jax" in sys.modules:
        return
    switched_off = os.environ.get("JOINTIST_CPU_FLAGS", "1") == "0" or has_accelerator()
    flags = os.environ.get("XLA_FLAGS", "").split()
    names = {f.split("=")[0] for f in flags}
    wanted = [] if switched_off else list(INFERENCE_CPU_FLAGS if inference else CPU_FLAGS)
    if host_device_count is not None:
        wanted.append(f"--xla_force_host_platform_device_count={host_device_count}")
    for flag in wanted:
        if flag.split("=")[0] not in names:
            flags.append(flag)
    os.environ["XLA_FLAGS"] = " ".join(flags)


def has_accelerator() -> bool:
    """True where an NVIDIA GPU or a TPU is attached (its device node exists)."""
    return bool(os.path.exists("/dev/nvidia0") or glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))
