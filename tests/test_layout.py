"""The package's shape: no import cycle among the modules (the graph of the imports that run at
import time), every module imports, library modules carry no argparse, and the subpackages
depend one way (subnet_kernels never imports subnet; core never imports the tooling). And the
tests': no test module imports another (shared test code lives in helper modules)."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "python" / "subnet"


def files() -> dict[str, Path]:
    """subnet module name -> its file."""
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] != "__main__":
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imported(f: Path, top_level_only: bool = False) -> set[str]:
    """Absolute names of the modules file `f` imports (relative imports resolved; with
    `top_level_only`, only the imports that run when the module is imported)."""
    pkg = list(f.relative_to(PKG.parent).with_suffix("").parts)[:-1]
    tree = ast.parse(f.read_text())
    nodes = ([n for stmt in tree.body if not isinstance(stmt, (ast.FunctionDef, ast.ClassDef))
              for n in ast.walk(stmt)] if top_level_only else list(ast.walk(tree)))
    names = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = pkg[: len(pkg) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)  # `from . import module`
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_no_import_cycles():
    mods = files()
    graph = {m: {n for n in imported(f, top_level_only=True) if n in mods and n != m} for m, f in mods.items()}
    state, path = {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for n in sorted(graph[m]):
            if n.startswith(m + ".") or m.startswith(n + "."):  # a package and its own submodules
                continue
            assert state.get(n) != "open", "import cycle: " + " -> ".join(path[path.index(n):] + [n])
            if n not in state:
                visit(n)
        path.pop()
        state[m] = "done"
    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_every_module_imports():
    for m in files():
        importlib.import_module(m)


@pytest.mark.parametrize("layer, forbidden", [
    ("core", ("subnet.training", "subnet.measure", "subnet.report", "subnet.cli", "subnet.export", "subnet.data")),
    ("families", ("subnet.training", "subnet.measure", "subnet.report", "subnet.cli")),
    ("training", ("subnet.cli",)),
    ("measure", ("subnet.cli", "subnet.report", "subnet.training")),
])
def test_layers_depend_one_way(layer, forbidden):
    for f in (PKG / layer).rglob("*.py"):
        bad = [n for n in imported(f) if n.startswith(forbidden)]
        assert not bad, f"{f.relative_to(ROOT)} imports {bad}"


def test_the_kernel_library_never_imports_subnet():
    for f in (ROOT / "subnet_kernels").rglob("*.py"):
        assert not any(n == "subnet" or n.startswith("subnet.") for n in imported_any(f)), f


def imported_any(f: Path) -> set[str]:
    return {a.name for node in ast.walk(ast.parse(f.read_text())) if isinstance(node, ast.Import) for a in node.names} | {
        node.module for node in ast.walk(ast.parse(f.read_text())) if isinstance(node, ast.ImportFrom) and node.module
        and not node.level}


def test_only_the_cli_parses_arguments():
    users = [f.relative_to(ROOT) for f in PKG.rglob("*.py") if "argparse" in f.read_text()
             and "cli" not in f.relative_to(PKG).parts]
    assert not users, f"argparse outside subnet/cli: {users}"


def test_no_test_module_imports_another():
    """What tests share lives in helper modules (tests/builders.py, checks.py, helpers.py,
    family_models.py, kernels/kernel_utils.py), never in a test_*.py module that others import."""
    files = [f for d in ("tests", "benchmarks") for f in sorted((ROOT / d).rglob("*.py"))]
    bad = [f"{f.relative_to(ROOT)} imports {n}" for f in files for n in sorted(imported_any(f))
           if n.split(".")[0].startswith("test_")]
    assert not bad, bad
