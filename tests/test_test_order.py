"""The test set-up (tests/conftest.py): the order tests are dealt to pytest-xdist workers (each
long test starts a worker's slice, and every test named there still exists), and no training
process a test started outlives it."""

from __future__ import annotations

import ast
import signal
import types

from conftest import LONGEST_TESTS, longest_first
import launch_helpers
from launch_helpers import ROOT, run_train


def _items(names):
    return [types.SimpleNamespace(nodeid=name) for name in names]


def test_each_long_test_starts_a_slice_and_the_others_keep_their_order():
    items = _items([f"t{i}" for i in range(10)])
    ordered = [i.nodeid for i in longest_first(items, 2, {"t7": 100, "t9": 50, "t8": 40})]
    # Slices of 5: the longest starts the first, the next two (90 s together) the second.
    assert ordered == ["t7", "t0", "t1", "t2", "t3", "t9", "t8", "t4", "t5", "t6"]
    assert [i.nodeid for i in longest_first(items, 1, {"t7": 100})] == [f"t{i}" for i in range(10)]


def test_every_listed_test_exists():
    for nodeid in LONGEST_TESTS:
        path, name = nodeid.split("::")
        tree = ast.parse((ROOT / path).read_text())
        functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert name.split("[")[0] in functions, nodeid


def test_a_run_still_going_after_its_test_is_killed():
    done = run_train([], runner=["-c", "pass"])
    done.wait()
    going = run_train([], runner=["-c", "import time; time.sleep(600)"])  # stands in for train.py
    assert launch_helpers.kill_leftovers() == [going]
    assert going.returncode == -signal.SIGKILL and done.returncode == 0
    assert launch_helpers.STARTED == []
