"""The CPU XLA flags: added before jax loads on CPU machines, never on request or with jax loaded."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _flags_after_apply(**env) -> str:
    code = ("import os; from jointist_jax import xla_flags; xla_flags.has_accelerator = lambda: False; "
            "xla_flags.apply_cpu_flags(host_device_count=2); print(os.environ['XLA_FLAGS'])")
    environment = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JOINTIST_CPU_FLAGS")}
    environment.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_cpu_flags_are_added_unless_switched_off_or_set_by_the_user():
    from jointist_jax import xla_flags

    default = _flags_after_apply()
    assert xla_flags.CPU_FLAGS[0] in default and "--xla_force_host_platform_device_count=2" in default
    off = _flags_after_apply(JOINTIST_CPU_FLAGS="0")
    assert xla_flags.CPU_FLAGS[0] not in off and "--xla_force_host_platform_device_count=2" in off
    mine = _flags_after_apply(XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=none")
    assert mine.split().count("--xla_cpu_experimental_ynn_fusion_type=none") == 1
    assert xla_flags.CPU_FLAGS[0] not in mine


def test_each_program_applies_the_flags_in_main_and_importing_the_package_does_not():
    """Importing jointist_jax leaves XLA_FLAGS alone; each console script's ``main()`` adds the CPU
    flags before it imports jax (checked after it stopped at a command-line mistake or at a
    missing run)."""
    from jointist_jax import xla_flags

    if xla_flags.has_accelerator():
        pytest.skip("the flags are for CPU-only machines")
    environment = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JOINTIST_CPU_FLAGS")}
    programs = {"jointist_jax.train.cli": ["jointist-train"], "jointist_jax.evaluation.cli": ["jointist-eval"],
                "jointist_jax.inference.cli": ["--checkpoint", "/nonexistent", "--audio", "/nonexistent",
                                               "--instruments", "piano", "--out", "/nonexistent"],
                "jointist_jax.app.cli": ["--checkpoint", "/nonexistent", "--port", "0"]}
    for module, argv in programs.items():
        code = (f"import importlib, os, sys; cli = importlib.import_module({module!r}); "
                "print(os.environ.get('XLA_FLAGS'), 'jax' in sys.modules)\n"
                f"try:\n    cli.main({argv!r})\nexcept SystemExit:\n    pass\n"
                "print(os.environ.get('XLA_FLAGS'))")
        out = subprocess.run([sys.executable, "-c", code], env=dict(environment, PYTHONPATH=str(ROOT)),
                             capture_output=True, text=True, check=True).stdout.splitlines()
        flags = xla_flags.INFERENCE_CPU_FLAGS if module in INFERENCE_PROGRAMS else xla_flags.CPU_FLAGS
        assert out == ["None False", flags[0]], module


INFERENCE_PROGRAMS = ("jointist_jax.inference.cli", "jointist_jax.app.cli")

# Run in a process of its own (the flags are read once, when jax loads): the tiny transcriber's
# eval forward under the inference flags; prints how many convolutions YNNPACK fusions hold, the
# output, and which of the compile options of xla_flags compile the very program the flags do.
_INFERENCE_FORWARD = r"""
import json, re, sys
from jointist_jax import xla_flags
xla_flags.has_accelerator = lambda: False
xla_flags.apply_cpu_flags(inference=len(sys.argv) > 1)
import numpy as np
sys.path.insert(0, "tests")
from test_xla_flags import tiny_transcriber_forward
from test_xla_flags import program_text
names = (None, "TRAINING_COMPILER_OPTIONS", "INFERENCE_COMPILER_OPTIONS")
(compiled, out), *with_options = [tiny_transcriber_forward(name and getattr(xla_flags, name)) for name in names]
lines = compiled.as_text().splitlines()
ynn = {name for line in lines if "__ynn_fusion" in line for name in re.findall(r"calls=%([\w.\-]+)", line)}
in_ynn, current = 0, None
for line in lines:
    header = re.match(r"^%?([\w.\-]+) .*\{$", line)
    current = header.group(1) if header else current
    in_ynn += current in ynn and " convolution(" in line
same = [name for name, (other, _) in zip(names[1:], with_options) if program_text(other) == program_text(compiled)]
print(json.dumps({"convs_in_ynn": in_ynn, "out": np.asarray(out).tolist(), "same_program": same}))
"""


def program_text(compiled) -> str:
    """A compiled program's text without its source locations (a program read from the compilation
    cache holds those of the process that wrote it)."""
    blocks = compiled.as_text().split("\n\n")
    locations = ("FileNames", "FunctionNames", "FileLocations", "StackFrames")
    return re.sub(r",? metadata=\{[^}]*\}", "", "\n\n".join(b for b in blocks if b.split("\n")[0] not in locations))


def tiny_transcriber_forward(compiler_options=None):
    """(compiled, output) of an eval transcriber with the narrow conv widths (the smallest model
    whose conv blocks YNNPACK fuses) on 64 mel bins, a fixed 21-frame log-mel, K = 2; compiled
    with ``compiler_options``."""
    import jax
    import numpy as np
    from flax import nnx

    from jointist_jax.models.transcriber import Transcriber

    model = Transcriber("narrow", n_mels=64, acoustic_dim=32, gru_hidden=16, rngs=nnx.Rngs(0))
    model.eval()
    graphdef, state = nnx.split(model)
    logmel = np.random.default_rng(0).normal(size=(1, 21, 64)).astype(np.float32)
    conditions = np.eye(model.condition_size, dtype=np.float32)[None, [3, 7]]
    run = lambda s, x, c: nnx.merge(graphdef, s)(x, c)["frame_output"]  # noqa: E731
    compiled = jax.jit(run, compiler_options=compiler_options).lower(state, logmel, conditions).compile()
    return compiled, compiled(state, logmel, conditions)


@pytest.mark.slow
def test_inference_flags_take_convolutions_off_ynnpack_and_keep_the_values():
    """Under INFERENCE_CPU_FLAGS no convolution runs inside a YNNPACK fusion (under CPU_FLAGS some
    do), and the transcriber's posteriorgram is the training flags' within float32 rounding. Each
    flag's compile options (INFERENCE_COMPILER_OPTIONS, TRAINING_COMPILER_OPTIONS) compile the
    program that flag does, whatever XLA_FLAGS say, and the other's do not."""
    from jointist_jax import xla_flags

    if xla_flags.has_accelerator():
        pytest.skip("the flags are for CPU-only machines")
    environment = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JOINTIST_CPU_FLAGS")}
    results = []
    for extra in ([], ["inference"]):
        out = subprocess.run([sys.executable, "-c", _INFERENCE_FORWARD, *extra], cwd=ROOT,
                             env=dict(environment, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                             check=True).stdout.splitlines()[-1]
        results.append(json.loads(out))
    training, inference = results
    assert training["convs_in_ynn"] > 0 and inference["convs_in_ynn"] == 0
    assert training["same_program"] == ["TRAINING_COMPILER_OPTIONS"]
    assert inference["same_program"] == ["INFERENCE_COMPILER_OPTIONS"]
    np.testing.assert_allclose(inference["out"], training["out"], rtol=0, atol=2e-6)
    assert np.ptp(np.asarray(training["out"])) > 1e-3  # the compared posteriorgram is not constant
