"""Loading trained runs for inference, with errors that say which path and what is wrong."""

from __future__ import annotations

import os

from jointist_jax import run_dir
from jointist_jax.train import checkpoints


class CheckpointError(ValueError):
    """A checkpoint that is missing, of the wrong stage, or does not match its config."""


def _stage(config):
    """The registered stage of a run's config, or None for a name the registry does not know."""
    from jointist_jax.train import stages

    try:
        return stages.get(config.get("stage"))
    except ValueError:
        return None


def _stages_that(ability: str) -> list[str]:
    from jointist_jax.train import stages

    return [stage.name for stage in stages.all_stages() if getattr(stage, ability)]


def read_run_config(path: str | os.PathLike, *, role: str):
    """The ``config.json`` of the run at ``path``; ``role`` names the flag in error messages."""
    try:
        run, _ = run_dir.locate(path)
        return run.read_config()
    except FileNotFoundError as error:
        raise CheckpointError(f"{role} {str(path)!r}: {error}") from error
    except ValueError as error:  # config.json that is not valid JSON
        raise CheckpointError(f"{role} {str(path)!r}: unreadable config.json ({error})") from error


def load_run(path: str | os.PathLike, *, role: str, config=None):
    """``(model in eval mode, config)`` of the run at ``path``."""
    if config is None:
        config = read_run_config(path, role=role)
    try:
        model, config, _ = checkpoints.load_model(path)
    except Exception as error:  # orbax/flax raise many types for shape, dtype or structure mismatches
        try:
            differences = shape_differences(path, config)
        except Exception:  # unreadable metadata: the checkpoint itself is damaged
            differences = []
        detail = ("; ".join(differences) if differences
                  else f"{type(error).__name__}: {_first_lines(str(error))}")
        raise CheckpointError(
            f"{role} {str(path)!r}: cannot restore the checkpoint: it is corrupted or does not match the "
            f"model its config.json describes (stage {config.get('stage')!r}): {detail}") from error
    return model, config


def shape_differences(path: str | os.PathLike, config, limit: int = 5) -> list[str]:
    """Human-readable differences between the arrays saved at ``path`` and those ``config`` builds."""
    import jax
    import orbax.checkpoint as ocp
    from flax import nnx

    from jointist_jax.train import model_factory
    from jointist_jax.train.steps import TrainState

    run, step = run_dir.locate(path)
    metadata = ocp.StandardCheckpointer().metadata(run.step_dir(step) / "default")
    metadata = getattr(metadata, "item_metadata", metadata)
    saved = {_key(p): tuple(m.shape) for p, m in jax.tree_util.tree_leaves_with_path(metadata)
             if _key(p).split(".")[0] in ("params", "batch_stats")}

    def arrays():
        state = TrainState.create(model_factory.build_model(config, nnx.Rngs(0)))
        return dict(params=state.params, batch_stats=state.batch_stats)

    expected = {_key(p): tuple(a.shape) for p, a in jax.tree_util.tree_leaves_with_path(jax.eval_shape(arrays))}
    lines = [f"{name}: checkpoint {saved[name]} vs config {shape}" for name, shape in expected.items()
             if name in saved and saved[name] != shape]
    missing = sorted(set(expected) - set(saved))
    extra = sorted(set(saved) - set(expected))
    if missing:
        lines.append(f"{len(missing)} arrays missing from the checkpoint (e.g. {missing[0]})")
    if extra:
        lines.append(f"{len(extra)} arrays in the checkpoint that the config does not build (e.g. {extra[0]})")
    return lines[:limit] + ([f"... {len(lines) - limit} more"] if len(lines) > limit else [])


def _key(path) -> str:
    parts = []
    for entry in path:
        for attribute in ("key", "name", "idx"):
            if hasattr(entry, attribute):
                parts.append(str(getattr(entry, attribute)))
                break
        else:
            parts.append(str(entry))
    return ".".join(parts)


def check_transcriber_run(path: str | os.PathLike, *, separate: bool):
    """The config of a run whose stage transcribes (``transcription``, ``joint``; ``Stage.transcribes``
    in :mod:`jointist_jax.train.stages`) and can do what was asked (weights not read)."""
    config = read_run_config(path, role="--checkpoint")
    stage = _stage(config)
    name = config.get("stage")
    transcribing = _stages_that("transcribes")
    if stage is not None and stage.recognizes and not stage.transcribes:
        raise CheckpointError(f"--checkpoint {str(path)!r} is an instrument-recognition ({name}) run; it cannot "
                              f"transcribe. Pass it as --ir_checkpoint and give a "
                              f"{' or '.join(transcribing)} run as --checkpoint")
    if stage is None or not stage.transcribes:
        raise CheckpointError(f"--checkpoint {str(path)!r} is a {name!r} run; expected one of "
                              f"{', '.join(transcribing)}")
    if separate and not stage.separates:
        raise CheckpointError(f"--separate needs a {' or '.join(_stages_that('separates'))} (transcriber + "
                              f"separator) run, but --checkpoint {str(path)!r} is a {name!r} run with no separator")
    return config


def load_transcriber_run(path: str | os.PathLike, *, separate: bool):
    """``(model, config)`` of a ``transcription`` or ``joint`` run (see :func:`check_transcriber_run`)."""
    config = check_transcriber_run(path, separate=separate)
    return load_run(path, role="--checkpoint", config=config)


def check_recognizer_run(path: str | os.PathLike):
    """The config of a run whose stage recognizes instruments (``ir``; weights not read)."""
    config = read_run_config(path, role="--ir_checkpoint")
    stage = _stage(config)
    if stage is None or not stage.recognizes:
        raise CheckpointError(f"--ir_checkpoint {str(path)!r} is a {config.get('stage')!r} run; expected an "
                              f"{' or '.join(_stages_that('recognizes'))} (instrument recognition) run")
    return config


def load_recognizer_run(path: str | os.PathLike):
    """The recognizer of an ``ir`` run."""
    config = check_recognizer_run(path)
    return load_run(path, role="--ir_checkpoint", config=config)[0]


def _first_lines(text: str, limit: int = 6) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[:limit]) + ("\n..." if len(lines) > limit else "")
