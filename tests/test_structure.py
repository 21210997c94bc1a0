"""The package's shape: no import cycles, deployment code free of training code, and one
module that knows the names of the run folders' files."""

from __future__ import annotations

import ast
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "facefold"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``module -> facefold modules it imports``, anywhere in its file (lazy imports in
    functions count too: a cycle hidden in a function is still a cycle)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from a.b import c` imports module a.b.c when there is one, else a.b.
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}"
                           in modules else node.module for alias in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first = last), or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                return [*stack[stack.index(child):], child]
            if child not in state and (cycle := visit(child)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_facefold_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "facefold.runs" in graph and graph["facefold.train.trainer"]  # the walk sees imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo += graph[node]
    return seen


@pytest.mark.parametrize("module", ["facefold.serve", "facefold.predict", "facefold.export"])
def test_deployment_imports_no_training_code(module: str) -> None:
    graph = import_graph()
    training = sorted(m for m in _reachable(graph, module) if m.startswith("facefold.train"))
    assert not training, f"{module} imports training code: {training}"


# The files and folders of run, cv and experiment folders (see facefold.runs).
RUN_FOLDER_NAMES = [
    "run.json", "cv.json", "config.json", "versions.json", "metrics.jsonl", "sparsity.jsonl",
    "predictions.npz", "threshold.json", "centroids.npy", "openset.json", "ensemble.json",
    "experiment.json", "comparison.csv", "comparison.png", "export.json", "checkpoints",
    "tensorboard", "case-",
]


def test_run_folder_names_are_literals_in_one_module_only() -> None:
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        # String literals only: docstrings and comments may name the files for the reader.
        tree = ast.parse(path.read_text(), str(path))
        docstrings = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(
            n, ast.Module | ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
            and n.body and isinstance(n.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                    id(node) not in docstrings):
                for name in RUN_FOLDER_NAMES:
                    if re.fullmatch(re.escape(name) + (r".*" if name.endswith("-") else ""),
                                    node.value):
                        found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert found, "the scan found no literal at all: it is broken"
    elsewhere = {name: files for name, files in found.items() if files != {"facefold/runs.py"}}
    assert not elsewhere, f"run-folder names outside facefold/runs.py: {elsewhere}"


def test_git_grep_agrees() -> None:
    """The "Done when" check as a reader would run it: git grep for the quoted names."""
    try:
        out = subprocess.run(["git", "grep", "-l", "-E", r'"(run|cv|experiment)\.json"', "--",
                              "facefold"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("git is not available")
    if out.returncode not in (0, 1) or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    assert out.stdout.split() == ["facefold/runs.py"]


def test_package_data_is_declared() -> None:
    """Every file of the package that is not Python (the web page) is listed as package data,
    so that a wheel, not only an editable install, carries it."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]
    data = {p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")}
    assert PACKAGE / "serve" / "page.html" in data
    missing = {str(p.relative_to(ROOT)) for p in data
               if p.name not in declared.get(_module_name(p.parent / "__init__.py"), [])}
    assert not missing, f"not in [tool.setuptools.package-data]: {sorted(missing)}"
