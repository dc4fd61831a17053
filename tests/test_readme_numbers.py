"""README.md's deterministic figures are what the code computes today (scripts/readme_numbers.py):
the ones computed in seconds here, the rest (on the demo's data) by `make benchmarks`."""

import importlib.util

from launch_helpers import ROOT


def _readme_numbers():
    spec = importlib.util.spec_from_file_location("readme_numbers", ROOT / "scripts" / "readme_numbers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cheap_figures_are_in_the_readme_as_the_code_computes_them():
    numbers = _readme_numbers()
    readme = numbers.readme_text()
    figures = [figure for compute in numbers.CHEAP for figure in compute()]
    assert len(figures) == 8
    missing = [figure for figure in figures if " ".join(figure.split()) not in readme]
    assert not missing, "README.md does not say (run scripts/readme_numbers.py):\n" + "\n".join(missing)
