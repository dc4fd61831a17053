r"""``jointist-train`` (also ``python launch/train.py``): trains one Jointist stage.

  jointist-train --config=NAME[:ARGS] --workdir=DIR

``--config=joint_pretrained`` resolves to ``configs/joint_pretrained.py``; a path works too, and
``:ARGS`` selects variants (``--config=transcription:variant=wide`` or ``:runlocal``). Any field
can be overridden: ``--config.optimizer.lr=3e-4``. The same command runs on one CPU, a multi-GPU
host or every host of a TPU slice (see launch/README.md for multi-host recipes).

A bad path or config exits with status 2 and a message naming the problem. The flags are absl
flags defined when this module is imported: import it from an entry point only.
"""

from __future__ import annotations

import logging
import sys

from absl import flags
from ml_collections import config_flags

from jointist_jax import xla_flags
from jointist_jax.cli_support import program_name, run_stage_cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Stage config: NAME[:ARGS] or PATH[:ARGS].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, TensorBoard logs and config.json go.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0, for multi-process runs without a cluster launcher.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator_address).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")

# The name error messages start with: the command as it was started (train.py, jointist-train).
PROG = "jointist-train"
REQUIRED_FLAGS = ("config", "workdir")


def _main(argv):
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import jax
    from absl import logging as absl_logging

    from jointist_jax import runs
    from jointist_jax.train import distributed, trainer

    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax and tfds log every file at INFO
    logging.getLogger("jointist_jax").setLevel(logging.INFO)

    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    # Keep TensorFlow (the input pipeline) off the accelerators: they belong to jax.
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    try:
        state = trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (FileNotFoundError, ValueError) as error:  # bad paths (storage.StorageError too) or config
        print(f"{PROG}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except runs.SaveFailedError as error:  # names the checkpoint and the last committed step
        print(f"{PROG}: error: {error}", file=sys.stderr)
        sys.exit(1)
    # Every process prints the same number when the replicated parameters agree.
    print(f"process {jax.process_index()} final step {int(state.step)} parameter checksum "
          f"{trainer.parameter_checksum(state):.10e}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: parses ``argv`` (default ``sys.argv``; ``--config=NAME`` resolved to
    ``configs/NAME.py``), applies the CPU XLA flags and trains."""
    global PROG
    argv = list(sys.argv if argv is None else argv)
    PROG = program_name(argv, PROG)
    xla_flags.apply_cpu_flags()  # before jax loads
    run_stage_cli(_main, argv, prog=PROG, required=REQUIRED_FLAGS)


if __name__ == "__main__":
    main()
