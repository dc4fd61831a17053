"""The run directory's checkpoints: the last few plus the best by validation loss, and choosing a
step as latest, best or a number (for evaluation, --watch and transcription)."""

import numpy as np
import pytest

from jointist_jax import run_dir
from jointist_jax.evaluation import watch
from jointist_jax import runs


def _save(mngr, step, validation_loss=None):
    items = {"step": np.int32(step), "params": {"w": np.full(3, float(step), np.float32)}}
    runs.save(mngr, step, items, force=True, validation_loss=validation_loss)
    mngr.wait_until_finished()


def test_the_best_checkpoint_is_kept_beside_the_last_few(tmp_path):
    run = run_dir.RunDir.at(tmp_path / "run")
    mngr = runs.manager(run, keep=2, asynchronous=False)
    try:
        for step, loss in [(1, None), (2, 0.5), (3, None), (4, 0.3), (5, None), (6, 0.4), (7, None)]:
            _save(mngr, step, loss)
    finally:
        mngr.close()
    # The last two (6, 7) and the lowest validation loss (4); 2 was beaten by 4.
    assert run.saved_steps() == [4, 6, 7]
    assert run.best_step() == 4
    assert [run.resolve_step(c) for c in ("best", "latest", 6, "7")] == [4, 7, 6, 7]
    with pytest.raises(run_dir.RunNotFoundError, match="no checkpoint 3 in"):
        run.resolve_step("3")
    with pytest.raises(ValueError, match=r"one of \('latest', 'best'\) or a number, got 'first'"):
        run.resolve_step("first")


def test_best_needs_a_validated_checkpoint(tmp_path):
    run = run_dir.RunDir.at(tmp_path / "run")
    with pytest.raises(run_dir.RunNotFoundError, match="no finished checkpoint"):
        run.best_step()
    mngr = runs.manager(run, keep=3, asynchronous=False)
    try:
        _save(mngr, 1)
    finally:
        mngr.close()
    with pytest.raises(run_dir.RunNotFoundError, match=r"carries a validation loss.*saved steps: \[1\]"):
        run.best_step()


def test_watching_best_evaluates_each_new_best_until_the_run_ends(tmp_path):
    run = run_dir.RunDir.at(tmp_path / "run")
    out = tmp_path / "eval"
    mngr = runs.manager(run, keep=1, asynchronous=False)
    # The trainer's progress, one save per watcher poll: (step, validation loss).
    progress = iter([(2, 0.9), (3, None), (4, 0.7), (6, 0.8), (8, 0.75)])
    seen = []

    def evaluate(step):
        seen.append(step)
        (out / "test" / str(step)).mkdir(parents=True)
        (out / "test" / str(step) / run_dir.METRICS_FILE).write_text("{}")

    def sleep(_):
        _save(mngr, *next(progress))

    try:
        _save(mngr, 1)  # before any validation: nothing to evaluate yet
        steps = watch.follow(run.root, out, "test", evaluate, final_step=8, poll_seconds=0, sleep=sleep,
                             which="best")
    finally:
        mngr.close()
    assert steps == seen == [2, 4]
