"""Benchmark: the separator's k2/s2 transposed conv, matmul + depth-to-space vs ``lax.conv_transpose``.

Times forward + backward (gradients for input and kernel) of one transposed conv at the real decoder
shapes of the full-size separator (mode "sum", hop 160: a 10-s clip is padded to 1024 frames × 512
bins; decoder level i maps the (1024 / 2**(7-i)) × (512 / 2**(7-i)) grid to twice that size).
Three forms, checked to agree before timing: ``matmul`` (the library's
``conv_transpose_2x2``: one matmul plus a depth-to-space transpose), ``einsum`` (the same op written as
one einsum) and ``lax`` (``jax.lax.conv_transpose`` with the flipped HWIO kernel).

Run (CPU, from the repository root):

    .venv/bin/python -m benchmarks.conv_transpose                 # all 6 decoder levels, B = 2 rows
    .venv/bin/python -m benchmarks.conv_transpose --levels 1 2 --repeats 7

Prints one line per level: shapes, median milliseconds of each form, and matmul / lax.
"""

from __future__ import annotations

import argparse
import statistics
import time

from jointist_jax import xla_flags

xla_flags.apply_cpu_flags()  # this program's CPU XLA flags, before jax loads

from jointist_jax.models.separator import DEFAULT_CHANNELS, conv_transpose_2x2

import jax
import jax.numpy as jnp
import numpy as np

PADDED_FRAMES, UNET_BINS = 1024, 512  # 10 s at hop 160: 1001 frames padded to 1024; 513 bins minus one


def decoder_shapes(batch: int, channels=DEFAULT_CHANNELS) -> list[tuple[tuple[int, ...], int]]:
    """[(input shape NHWC, output channels)] of decoder levels 1..len(channels), full-size model."""
    depth = len(channels)
    shapes = []
    c_in = channels[-1]
    for level, c_out in enumerate(reversed(channels), start=1):
        scale = 2 ** (depth - level + 1)
        shapes.append(((batch, PADDED_FRAMES // scale, UNET_BINS // scale, c_in), c_out))
        c_in = c_out
    return shapes


def _einsum_form(x, kernel):
    # The same op as one einsum; XLA:CPU lowers it less well than the library's matmul + transpose.
    n, h, w, _ = x.shape
    return jnp.einsum("nhwc,coab->nhawbo", x, kernel).reshape(n, 2 * h, 2 * w, kernel.shape[1])


def _lax_form(x, kernel_hwio):
    return jax.lax.conv_transpose(x, kernel_hwio, strides=(2, 2), padding="VALID",
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _step(form):
    """Jitted gradient of <form(x, k), cotangent> w.r.t. input and kernel: one forward + one backward."""
    return jax.jit(lambda x, k, cotangent: jax.grad(
        lambda x, k: jnp.vdot(form(x, k), cotangent), argnums=(0, 1))(x, k))


FORMS = {"matmul": conv_transpose_2x2, "einsum": _einsum_form, "lax": _lax_form}


def _median_ms(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def run(levels: list[int], batch: int, repeats: int) -> list[dict]:
    """Times every form at the chosen decoder levels; returns one result dict per level."""
    steps = {name: _step(form) for name, form in FORMS.items()}
    rng = np.random.default_rng(0)
    results = []
    for level in levels:
        in_shape, c_out = decoder_shapes(batch)[level - 1]
        n, h, w, c_in = in_shape
        x = jnp.asarray(rng.normal(size=in_shape), jnp.float32)
        kernel = jnp.asarray(rng.normal(size=(c_in, c_out, 2, 2)) / np.sqrt(4 * c_out), jnp.float32)
        # lax.conv_transpose correlates the dilated input: PyTorch (in, out, a, b) → flipped HWIO.
        kernel_hwio = jnp.transpose(kernel, (2, 3, 0, 1))[::-1, ::-1]
        kernels = {"matmul": kernel, "einsum": kernel, "lax": kernel_hwio}
        cotangent = jnp.asarray(rng.normal(size=(n, 2 * h, 2 * w, c_out)), jnp.float32)

        grads = {name: step(x, kernels[name], cotangent) for name, step in steps.items()}
        for name in ("einsum", "lax"):
            np.testing.assert_allclose(grads["matmul"][0], grads[name][0], rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(jnp.transpose(grads["matmul"][1], (2, 3, 0, 1))[::-1, ::-1],
                                   grads["lax"][1], rtol=1e-3, atol=1e-2)

        ms = {name: _median_ms(step, (x, kernels[name], cotangent), repeats) for name, step in steps.items()}
        results.append(dict(level=level, input=in_shape, output=(n, 2 * h, 2 * w, c_out), **ms))
        print(f"decoder_block{level}: {in_shape} -> {(n, 2 * h, 2 * w, c_out)}  "
              + "  ".join(f"{name} {value:8.2f} ms" for name, value in ms.items())
              + f"  matmul/lax {ms['matmul'] / ms['lax']:5.2f}", flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6],
                        choices=range(1, len(DEFAULT_CHANNELS) + 1), help="decoder levels to time")
    parser.add_argument("--batch", type=int, default=2, help="rows (clip × condition pairs)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per form")
    args = parser.parse_args(argv)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.device_count()}")
    run(args.levels, args.batch, args.repeats)


if __name__ == "__main__":
    main()
