"""scripts/mutation_check.py: its list of planted bugs still fits today's source, and its planting
machinery (copy, plant, run, restore, verdict) works on a tiny repository."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import mutation_check  # noqa: E402


@pytest.mark.parametrize("mutation", mutation_check.MUTATIONS, ids=lambda m: m.name)
def test_each_mutation_plants_into_todays_source(mutation):
    """The snippet occurs exactly once, the planted file still parses, and every named test exists."""
    text = (ROOT / mutation.file).read_text()
    planted = mutation_check.plant(mutation, text)
    assert planted != text
    if mutation.file.endswith(".py"):
        ast.parse(planted, mutation.file)
    assert mutation.tests or mutation.test_globs
    for argument in mutation.tests:
        if argument == "-k" or not argument.startswith("tests/"):
            continue
        file, _, test = argument.partition("::")
        assert (ROOT / file).is_file(), argument
        if test:
            assert re.search(rf"^def {re.escape(test.split('[')[0])}\(", (ROOT / file).read_text(), re.M), argument


def test_the_names_are_unique_and_the_survivors_are_listed():
    names = [m.name for m in mutation_check.MUTATIONS]
    assert len(names) == len(set(names))
    assert {"window_tolerance_loosened", "crop_sampling_hard_coded", "data_seed_hard_coded",
            "warmup_zero_ignored", "toy_stage_ignored"} <= set(names)


def test_a_stale_snippet_is_an_error_not_a_skip():
    mutation = mutation_check.Mutation("m", "f.py", "x = 1\n", "x = 2\n", ("tests/test_f.py",))
    with pytest.raises(mutation_check.StaleMutation, match=r"occurs 0 times in f.py"):
        mutation_check.plant(mutation, "y = 1\n")
    with pytest.raises(mutation_check.StaleMutation, match=r"occurs 2 times"):
        mutation_check.plant(mutation, "x = 1\nx = 1\n")


def test_planted_bugs_are_caught_or_missed_in_a_copy_and_the_tree_is_untouched(tmp_path, capsys):
    repo = tmp_path / "repo"
    (repo / "tests").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("ignored/\n")
    (repo / "ignored").mkdir()
    (repo / "ignored" / "big.bin").write_text("not copied")
    source = "def add(a, b):\n    return a + b  # the sum\n"
    (repo / "calc.py").write_text(source)  # untracked: copied all the same
    (repo / "tests" / "test_calc.py").write_text(
        "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n")
    mutations = (
        mutation_check.Mutation("caught", "calc.py", "a + b", "a - b", ("tests/test_calc.py",)),
        mutation_check.Mutation("missed", "calc.py", "# the sum", "# the total", ("tests/test_calc.py",)),
        mutation_check.Mutation("stale", "calc.py", "a * b", "a / b", ("tests/test_calc.py",)),
        mutation_check.Mutation("globbed", "calc.py", "a + b", "b + a + 1", test_globs=("tests/test_c*.py",)),
        mutation_check.Mutation("no_file", "calc.py", "a + b", "a - b", test_globs=("tests/test_none*.py",)),
    )
    status = mutation_check.main(["--baseline"], root=repo, mutations=mutations)
    table = capsys.readouterr().out.split("\n\n")[-1]
    results = {line.split()[0]: line.split("  ")[-1].strip() for line in table.splitlines()[2:]}
    assert results == {"caught": "caught", "missed": "missed", "stale": "stale", "globbed": "caught",
                       "no_file": "no tests"}
    assert "tests/test_calc.py" in table.splitlines()[5]  # the glob resolved in the copy
    assert status == 1
    assert (repo / "calc.py").read_text() == source
    copy = mutation_check.copy_repository(repo, tmp_path / "copy")
    assert (copy / "calc.py").read_text() == source and not (copy / "ignored").exists()
