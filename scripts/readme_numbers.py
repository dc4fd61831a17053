r"""Recomputes the deterministic figures of README.md and prints each in the README's own words.

  python scripts/readme_numbers.py            # every figure (needs `make demo` steps 1-2: demo/)
  python scripts/readme_numbers.py --cheap    # the ones computed in seconds without demo/

Each line is ``ok`` or ``NOT IN README`` and the figure's text; the exit status is 1 when the README
does not hold a figure as the code computes it today. Cheap figures (parameter counts, the demo's
recipe, the record index's size) are also checked by ``tests/test_readme_numbers.py``; the ones on
the demo's data (storage per audio hour, ``python -m benchmarks.diagnose_learning``'s losses and gradient
norms at fixed seeds, about four minutes of CPU on an idle 2-core machine) are checked here, run by ``make benchmarks``. Speeds are
not figures of this kind: they depend on the machine.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from the checkout: the benchmarks package

from jointist_jax import xla_flags  # noqa: E402

DIAGNOSE = ["-m", "benchmarks.diagnose_learning", "--fixed_batch", "--steps", "100", "--every", "50"]


def _short(x: float) -> str:
    """3e-3 / 1e-4, as the README writes rates."""
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def parameter_counts() -> list[str]:
    from configs import defaults
    from jointist_jax import stages

    def count(build) -> int:  # abstract shapes only: nothing is initialised
        import jax
        import numpy as np
        from flax import nnx

        module = nnx.eval_shape(lambda: build(rngs=nnx.Rngs(0)))
        return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))

    sizes = {
        "recognizer": count(lambda rngs: stages.recognizer(defaults.recognizer_config("full"), rngs=rngs)),
        "narrow": count(lambda rngs: stages.transcriber(defaults.transcriber_config("narrow"), rngs=rngs)),
        "wide": count(lambda rngs: stages.transcriber(defaults.transcriber_config("wide"), rngs=rngs)),
        "separator": count(lambda rngs: stages.separator(defaults.separator_config("sum", "full"), rngs=rngs)),
        "standalone": count(lambda rngs: stages.separator(defaults.separator_config("standalone", "full"), rngs=rngs)),
    }
    return [f"recognizer {sizes['recognizer']:,}; transcriber narrow {sizes['narrow']:,} / wide {sizes['wide']:,}; "
            f"separator {sizes['separator']:,} / standalone {sizes['standalone']:,}"]


def demo_recipe() -> list[str]:
    """The rows of the README's table of demo settings, from the runlocal configs."""
    from configs import joint_pretrained, transcription
    from jointist_jax.train import epochs

    full, local = transcription.get_config(), transcription.get_config("runlocal")
    joint = joint_pretrained.get_config("runlocal")
    t, o, d = local.model.transcriber, local.optimizer, local.data
    fo = full.optimizer
    # A full-size config gives its length in epochs; Slakh2100's original split has 1500 tracks.
    full_steps = epochs.steps_for_epochs(full.epochs, full.data.global_batch, 1500)
    return [
        f"`tiny` ({'-'.join(map(str, t.variant))} channels, GRU {t.gru_hidden})",
        f"{full.data.clip_seconds:g} s, {full.data.global_batch} clips × ({full.data.num_positive} pos + "
        f"{full.data.num_negative} neg) | {d.clip_seconds:g} s, {d.global_batch} clips × {d.num_positive} positives",
        f"{_short(fo.lr)}, {fo.warmup_steps:,}, ~{full_steps // 1000}k | {_short(o.lr)}, {o.warmup_steps}, "
        f"{local.total_steps} (+ {joint.total_steps} joint at {_short(joint.optimizer.lr)})",
        f"×{fo.decay_rate:g} every {fo.decay_every:,} steps | ×{o.decay_rate:g} every {o.decay_every} steps",
        f"logit({t.output_prior:g}) (`output_prior`)",
        f"{1 - t.bn_momentum:.1f} (`bn_momentum` {t.bn_momentum:g})",
    ]


def record_index() -> list[str]:
    from benchmarks.input_pipeline import index_size

    small, large = index_size(100, 12), index_size(1500, 12)
    return [f"about {large / (1500 * 12):.0f} bytes per window ({large / 1e6:.2f} MB for 1,500 tracks × 12 "
            f"windows and 256 shards, {small / 1e3:.0f} kB for 100 tracks"]


def storage_per_hour(slakh_dir: Path) -> list[str]:
    """The demo dataset's training split packed: MB per audio hour and class stems per track."""
    import shutil

    import yaml

    from benchmarks.input_pipeline import measure_build
    from jointist_jax import instruments

    data_dir, build = measure_build(str(slakh_dir), "train", 2)
    shutil.rmtree(data_dir)
    stems = [len({instruments.class_of_program(s["program_num"]) for s in yaml.safe_load(m.read_text())["stems"].values()})
             for m in sorted((slakh_dir / "train").glob("*/metadata.yaml"))]
    return [f"{build['bytes_per_audio_hour'] / 1e6:.0f} MB per audio hour on 20-s tracks "
            f"({sum(stems) / len(stems):.1f} class stems + mix, one window each)"]


def _diagnose(*extra: str) -> tuple[dict[int, dict], dict[int, dict[str, dict]]]:
    """Runs ``DIAGNOSE`` with ``extra`` arguments; returns, per printed step, the training step's
    loss and gradient norms, and per mode (train, bn-only, eval) its losses and frame-posterior
    quantiles on active (``on``) and silent (``off``) cells."""
    out = subprocess.run([sys.executable, *DIAGNOSE, *extra], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    steps = {}
    for m in re.finditer(r"step (\d+) lr \S+ loss (\S+) \(onset (\S+) frame (\S+)\); grad norms: (.*)", out):
        norms = dict(item.split(" ") for item in m.group(5).split(", "))
        steps[int(m.group(1))] = dict(loss=float(m.group(2)), onset=float(m.group(3)), frame=float(m.group(4)),
                                      **{name: float(v) for name, v in norms.items()})
    modes = {}
    for block in re.finditer(r"== step (\d+) .*?base-rate loss onset (\S+) frame (\S+)\n((?:  .*\n?)+)", out):
        found = {"base": dict(onset=float(block.group(2)), frame=float(block.group(3)))}
        for m in re.finditer(r"  (\S+)\s+loss onset (\S+) frame (\S+) \| frame q\(.*?\) on \[(.*?)\] off \[(.*?)\]",
                             block.group(4)):
            found[m.group(1)] = dict(onset=float(m.group(2)), frame=float(m.group(3)),
                                     on=[float(x) for x in m.group(4).split()], off=[float(x) for x in m.group(5).split()])
        modes[int(block.group(1))] = found
    return steps, modes


def diagnose_learning() -> list[str]:
    """``python -m benchmarks.diagnose_learning --fixed_batch`` on the demo data at fixed seeds: the
    reference's initialisation and BatchNorm momentum, today's recipe, and today's recipe with the
    reference's momentum."""
    reference_init = ["--set", "model.transcriber.output_prior=0", "--set", "model.transcriber.bn_momentum=0.99"]
    steps, modes = _diagnose(*reference_init, "--steps", "300", "--every", "100")
    s0, s100 = steps[0], steps[100]
    end, base = modes[300]["bn-only"], modes[300]["base"]
    figures = [f"`frame_model.acoustic` {s0['frame_model.acoustic']:.1e} at step 0, {s100['frame_model.acoustic']:.1e} "
               f"at step 100; `reg_onset_model.acoustic` {s0['reg_onset_model.acoustic']:.1e} → "
               f"{s100['reg_onset_model.acoustic']:.1e}",
               f"after 300 steps the loss (onset {end['onset']:.4f}, frame {end['frame']:.4f}) sits near that of the "
               f"per-key base rate (onset {base['onset']:.4f}, frame {base['frame']:.4f})",
               f"frame posteriors at most {end['on'][-1]:.2f} on active cells and {end['off'][-1]:.2f} on silent ones"]
    steps, modes = _diagnose("--steps", "100", "--every", "50")
    s0, s50 = steps[0], steps[50]
    train100, bn100, eval100 = modes[100]["train"], modes[100]["bn-only"], modes[100]["eval"]
    figures += [f"loss at step 0 {s0['loss']:.4f}, acoustic gradient norms *grow* ({s0['frame_model.acoustic']:.1e} at "
                f"step 0, {s50['frame_model.acoustic']:.1e} at step 50), loss below the base rate by step 100 (onset "
                f"{train100['onset']:.4f}, frame {train100['frame']:.4f}) and active-cell frame posteriors "
                f"at median {train100['on'][0]:.2f}, 90th percentile {train100['on'][1]:.2f}",
                f"eval frame loss {eval100['frame']:.4f} against {bn100['frame']:.4f} with batch statistics"]
    _, modes = _diagnose("--steps", "100", "--every", "50", "--set", "model.transcriber.bn_momentum=0.99")
    figures.append(f"with the reference's momentum (`bn_momentum` 0.99) the same run's eval frame loss at step 100 is "
                   f"{modes[100]['eval']['frame']:.4f} against {modes[100]['bn-only']['frame']:.4f}")
    return figures


CHEAP = (parameter_counts, demo_recipe, record_index)


def readme_text() -> str:
    """README.md with every run of whitespace made one space (figures may wrap)."""
    return " ".join((ROOT / "README.md").read_text().split())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cheap", action="store_true", help="only the figures computed in seconds without demo/")
    parser.add_argument("--slakh_dir", default="demo/slakh_synth", help="the demo's rendered dataset")
    args = parser.parse_args(argv)
    xla_flags.apply_cpu_flags()  # before jax loads
    figures = [f for compute in CHEAP for f in compute()]
    if not args.cheap:
        figures += storage_per_hour(Path(args.slakh_dir)) + diagnose_learning()
    readme, missing = readme_text(), 0
    for figure in figures:
        found = " ".join(figure.split()) in readme
        missing += not found
        print(f"{'ok' if found else 'NOT IN README':<14} {figure}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
