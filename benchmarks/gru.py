"""Benchmark of jointist_jax.models.gru.BiGRU against plain autodiff ``lax.scan`` GRUs.

Times forward and forward+backward of the transcriber's language GRU, BiGRU(768 → 256, 2 layers,
bidirectional), at N=2 rows, T=1001 frames, on CPU, and prints ms per call (median after warm-up)
and each variant's ratio to BiGRU.

Variants:
  bigru     — the library: hoisted input projections, both directions in one scan, custom VJP.
  fused_ad  — the same fused forward (hoisted projections, one scan for both directions) but
              differentiated by plain JAX autodiff: isolates what the hand-written VJP buys.
  plain_ad  — the straightforward port: one autodiff ``lax.scan`` per direction with hoisted
              input projections.

Run:  .venv/bin/python -m benchmarks.gru [--rows 2] [--frames 1001] [--repeats 5] [--unroll 1 2 4]

Measured (2-core AMD EPYC, jax 0.10.2, 2026-11-25, machine shared with other jobs at load 7-9, so
wall-clock numbers are noisy; process CPU time is the steadier one), ``--unroll 1 2 4 8 --repeats 7``,
median ms of process CPU time per call:

    variant            fwd   fwd+bwd
    bigru(unroll=1)    194     556      <- library default
    bigru(unroll=2)    205     599
    bigru(unroll=4)    213     617
    bigru(unroll=8)    211     653
    plain_ad           256     923      (1.32x / 1.66x BiGRU)
    fused_ad           231     877      (1.19x / 1.58x BiGRU)
"""

import argparse
import statistics
import time

from jointist_jax import xla_flags

xla_flags.apply_cpu_flags()  # this program's CPU XLA flags, before jax loads

from jointist_jax.models.gru import BiGRU

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def _gates(gi, gh, h):
    """PyTorch GRU update from input/hidden pre-activations (r, z, n blocks on the last axis)."""
    ir, iz, in_ = jnp.split(gi, 3, axis=-1)
    hr, hz, hn = jnp.split(gh, 3, axis=-1)
    r = jax.nn.sigmoid(ir + hr)
    z = jax.nn.sigmoid(iz + hz)
    n = jnp.tanh(in_ + r * hn)
    return (1 - z) * n + z * h


def plain_ad_bigru(params, x):
    """One autodiff lax.scan per direction and layer; input projections hoisted out of the scan."""
    for layer in params:
        outs = []
        for d in range(2):
            seq = x if d == 0 else x[:, ::-1]
            gi_all = jnp.einsum("ntc,cg->tng", seq, layer["w_ih"][d]) + layer["b_ih"][d]
            w_hh, b_hh = layer["w_hh"][d], layer["b_hh"][d]

            def step(h, gi, w_hh=w_hh, b_hh=b_hh):
                h = _gates(gi, h @ w_hh + b_hh, h)
                return h, h

            h0 = jnp.zeros((x.shape[0], w_hh.shape[0]), x.dtype)
            _, hs = jax.lax.scan(step, h0, gi_all)
            hs = jnp.swapaxes(hs, 0, 1)
            outs.append(hs if d == 0 else hs[:, ::-1])
        x = jnp.concatenate(outs, axis=-1)
    return x


def fused_ad_bigru(params, x, unroll=1):
    """Both directions in one autodiff lax.scan, input projections hoisted; no custom VJP."""
    for layer in params:
        xp = jnp.einsum("ntc,dcg->tdng", x, layer["w_ih"]) + layer["b_ih"][None, :, None, :]
        xp = jnp.stack([xp[:, 0], xp[::-1, 1]], axis=1)
        w_hh, b_hh = layer["w_hh"], layer["b_hh"]

        def step(h, gi, w_hh=w_hh, b_hh=b_hh):
            h = _gates(gi, jnp.einsum("dnh,dhg->dng", h, w_hh) + b_hh[:, None, :], h)
            return h, h

        h0 = jnp.zeros((2, x.shape[0], w_hh.shape[1]), x.dtype)
        _, hs = jax.lax.scan(step, h0, xp, unroll=unroll)
        x = jnp.swapaxes(jnp.concatenate([hs[:, 0], hs[::-1, 1]], axis=-1), 0, 1)
    return x


def _time_interleaved(calls, repeats):
    """Wall times in ms of each ``calls[name]()``, measured round-robin after two warm-ups each.

    The machine is shared, so rounds interleave the variants: load spikes hit all of them alike.
    Returns ``({name: [wall ms, ...]}, {name: [process CPU ms, ...]})``; the CPU time (all of this
    process's threads) is the steadier number when other jobs compete for the cores.
    """
    for fn in calls.values():
        for _ in range(2):  # the first call compiles
            jax.block_until_ready(fn())
    wall = {name: [] for name in calls}
    cpu = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(fn())
            wall[name].append((time.perf_counter() - start) * 1e3)
            cpu[name].append((time.process_time() - start_cpu) * 1e3)
    return wall, cpu


def _fwd_and_grad(apply):
    """jitted forward and forward+backward (grad of a random projection of the output)."""

    def loss(params, x, cot):
        return jnp.sum(apply(params, x) * cot)

    fwd = jax.jit(apply)
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    return fwd, grad


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--frames", type=int, default=1001)
    parser.add_argument("--in-features", type=int, default=768)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--unroll", type=int, nargs="+", default=[1], help="BiGRU unroll values to time")
    parser.add_argument("--variants", nargs="+", default=["plain_ad", "fused_ad"],
                        choices=["plain_ad", "fused_ad"], help="baselines to time besides BiGRU")
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error("--repeats must be at least 5")

    model = BiGRU(args.in_features, args.hidden, args.layers, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(args.rows, args.frames, args.in_features)).astype(np.float32))
    cot = jnp.asarray(rng.normal(size=(args.rows, args.frames, 2 * args.hidden)).astype(np.float32))
    graphdef, state = nnx.split(model)
    raw = [{k: getattr(layer, k)[...] for k in ("w_ih", "w_hh", "b_ih", "b_hh")} for layer in model.layers]

    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, BiGRU({args.in_features}->{args.hidden}, "
          f"{args.layers} layers), N={args.rows}, T={args.frames}, fp32, {args.repeats} interleaved rounds")
    calls, outputs = {}, {}
    for unroll in args.unroll:
        gd = nnx.split(BiGRU(args.in_features, args.hidden, args.layers, unroll=unroll,
                             rngs=nnx.Rngs(0)))[0]
        fwd, grad = _fwd_and_grad(lambda s, x, gd=gd: nnx.merge(gd, s)(x))
        outputs[unroll] = fwd(state, x)
        name = f"bigru(unroll={unroll})"
        calls[(name, "fwd")] = lambda fwd=fwd: fwd(state, x)
        calls[(name, "f+b")] = lambda grad=grad: grad(state, x, cot)
    baselines = {"plain_ad": plain_ad_bigru, "fused_ad": fused_ad_bigru}
    for name in args.variants:
        fwd, grad = _fwd_and_grad(baselines[name])
        # Every variant must compute the same function, or its timing means nothing.
        err = float(jnp.max(jnp.abs(fwd(raw, x) - outputs[args.unroll[0]])))
        if err > 1e-4:
            raise AssertionError(f"{name} differs from BiGRU by {err:.2e}")
        calls[(name, "fwd")] = lambda fwd=fwd: fwd(raw, x)
        calls[(name, "f+b")] = lambda grad=grad: grad(raw, x, cot)

    wall, cpu = _time_interleaved(calls, args.repeats)
    names = list(dict.fromkeys(name for name, _ in calls))
    for label, times in (("wall-clock", wall), ("process CPU", cpu)):
        median = {key: statistics.median(ts) for key, ts in times.items()}
        best = {kind: min(median[(n, kind)] for n in names if n.startswith("bigru")) for kind in ("fwd", "f+b")}
        print(f"\n{label} ms per call: median (min) over the rounds; ratios of medians to the best BiGRU")
        print(f"{'variant':<18}{'fwd':>9}{'(min)':>8}{'fwd+bwd':>9}{'(min)':>8}{'fwd/best':>10}{'f+b/best':>10}")
        for n in names:
            print(f"{n:<18}{median[(n, 'fwd')]:>9.1f}{min(times[(n, 'fwd')]):>8.1f}"
                  f"{median[(n, 'f+b')]:>9.1f}{min(times[(n, 'f+b')]):>8.1f}"
                  f"{median[(n, 'fwd')] / best['fwd']:>10.2f}{median[(n, 'f+b')] / best['f+b']:>10.2f}")


if __name__ == "__main__":
    main()
