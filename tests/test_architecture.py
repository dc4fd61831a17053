"""The layer order of ``jointist_jax/`` (docs/architecture.md), read from the source: every import,
lazy ones inside functions too, goes to the same layer or a lower one, and no modules import each
other in a circle. Loading a trained model for inference needs neither ``train/`` nor an optimiser.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jointist_jax"

# Lowest first. A module's unit is its top-level module or subpackage under jointist_jax; every
# ``cli`` module is a program and sits on top, with the app.
LAYERS = (
    ("core", {"", "music", "instruments", "rolls", "storage", "xla_flags", "run_dir", "runs",
              "stages", "optimizer", "models", "audio"}),
    ("data", {"data", "metrics"}),
    ("uses", {"train", "inference", "evaluation", "convert", "cli_support"}),
    ("programs", {"app", "cli"}),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The jointist_jax modules ``name`` imports anywhere in its source (``from pkg import module``
    counts as importing the module, not the package's ``__init__``)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    # Imports under `if TYPE_CHECKING:` exist for type checkers only, never at run time.
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                 for statement in block.body for n in ast.walk(statement)}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in found if m in known and m != name}


def unit(name: str) -> str:
    parts = name.split(".")[1:]
    if parts and parts[-1] == "cli":
        return "cli"
    return parts[0] if parts else ""


def layer(name: str) -> int:
    for index, (_, units) in enumerate(LAYERS):
        if unit(name) in units:
            return index
    raise AssertionError(f"{name}: its unit {unit(name)!r} is in no layer of LAYERS; add it there "
                         f"and to docs/architecture.md")


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, set(known)) for name, path in known.items()}


def upward(graph: dict[str, set[str]], importing_unit: str) -> list[str]:
    return sorted(f"{name} -> {target}" for name, targets in graph.items() if unit(name) == importing_unit
                  for target in targets if layer(target) > layer(name))


UNITS = sorted(set().union(*(units for _, units in LAYERS)))


@pytest.mark.parametrize("importing_unit", UNITS)
def test_no_module_imports_a_higher_layer(graph, importing_unit):
    assert upward(graph, importing_unit) == []


def test_every_module_has_a_layer(graph):
    for name in graph:
        layer(name)


def test_no_import_circles(graph):
    # Tarjan's strongly connected components: any with more than one module is a circle.
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert circles == []


def test_the_checker_sees_lazy_imports_and_upward_ones(tmp_path):
    source = "import os\n\ndef f():\n    from jointist_jax.train import trainer\n    from . import music\n"
    path = tmp_path / "runs.py"
    path.write_text(source)
    known = {"jointist_jax.runs", "jointist_jax.train.trainer", "jointist_jax.music", "jointist_jax.train"}
    found = imports("jointist_jax.runs", path, known)
    assert found == {"jointist_jax.train.trainer", "jointist_jax.music"}
    assert upward({"jointist_jax.runs": found}, "runs") == ["jointist_jax.runs -> jointist_jax.train.trainer"]


def test_loading_a_model_for_inference_needs_neither_train_nor_an_optimiser(tmp_path):
    """runs.open + runs.load_model of a saved tiny run, in a fresh process: neither a
    ``jointist_jax.train`` module nor the optimiser module is imported. (flax itself imports the
    optax package, so optax in ``sys.modules`` is no evidence either way; tests/test_runs.py checks
    that the optimiser state is never read.)"""
    from flax import nnx

    import configs.ir
    from jointist_jax import runs, stages

    config = configs.ir.get_config("runlocal")
    runs.save_model(tmp_path / "ir", config, stages.build_model(config, nnx.Rngs(0)), step=3)
    code = f"""
import sys
from jointist_jax import runs

trained = runs.open({str(tmp_path / "ir")!r})
model = runs.load_model(trained)
print(trained.step, type(model).__name__)
print(sorted(m for m in sys.modules if m.startswith("jointist_jax.train") or m == "jointist_jax.optimizer"))
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         timeout=300).stdout.splitlines()
    assert out == ["3 Recognizer", "[]"]
