"""The package's shape: layers that import only downwards, imported names that exist, no
import cycles, deployment code free of training code, and one module that knows the names of
the run folders' files; the run layer and the gallery start without TensorFlow."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from codestats import (
    LAYERS,
    PACKAGE_LAYER,
    Import,
    has_name,
    imports_of,
    is_upward,
    layer_of,
    missing_names,
    module_name,
    modules,
    upward_imports,
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "facefold"


def import_graph() -> dict[str, set[str]]:
    """``module -> facefold modules it imports``, anywhere in its file (lazy imports in
    functions count too: a cycle hidden in a function is still a cycle)."""
    return {name: {found.target for found in imports_of(name)
                   if found.target in modules() and found.target != name}
            for name in modules()}


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


@pytest.mark.parametrize("module", ["facefold.serve", "facefold.predict", "facefold.export",
                                    "facefold.recognizer", "facefold.label"])
def test_deployment_imports_no_training_code(module: str) -> None:
    graph = import_graph()
    training = sorted(m for m in _reachable(graph, module) if m.startswith(
        ("facefold.train", "facefold.evaluate", "facefold.report")))
    assert not training, f"{module} imports training code: {training}"


# ---------------------------------------------------------------- layers (tests/codestats.py)


def test_every_package_has_a_layer() -> None:
    assert set(PACKAGE_LAYER.values()) <= set(LAYERS)
    assert all(set(below) <= set(LAYERS) for below in LAYERS.values())
    for module in modules():
        layer_of(module)  # KeyError naming a package without a layer


def _import(module: str, target: str) -> Import:
    return Import(module, 1, target, None)


def test_the_layer_check_tells_down_from_up_and_sideways() -> None:
    assert not is_upward(_import("facefold.predict.predictor", "facefold.models.scores"))
    assert not is_upward(_import("facefold.evaluate.generalization", "facefold.predict.loading"))
    assert not is_upward(_import("facefold.evaluate.cv", "facefold.evaluate.executor"))
    assert not is_upward(_import("facefold.cli", "facefold.fitting"))
    assert is_upward(_import("facefold.predict.predictor", "facefold.evaluate.openset"))
    assert is_upward(_import("facefold.faces.cluster", "facefold.predict.predictor"))
    assert is_upward(_import("facefold.serve", "facefold.train"))  # deployment: no training
    assert is_upward(_import("facefold.train.trainer", "facefold.predict"))  # sideways
    assert is_upward(_import("facefold.serve", "facefold.recognizer"))  # sideways in a layer
    assert is_upward(_import("facefold.bench.speed", "facefold.cli"))  # a package like a module


def test_no_import_runs_upward_or_sideways() -> None:
    """Lazy imports included; the layers are ``LAYERS`` in tests/codestats.py."""
    upward = [f"{f.module}:{f.line} ({layer_of(f.module)}) imports {f.target} "
              f"({layer_of(f.target)})" for f in upward_imports()]
    assert not upward, "imports that are not from beneath:\n" + "\n".join(upward)


def test_the_name_check_finds_a_missing_name() -> None:
    assert has_name("facefold.models.presets", "resolve_config")
    assert not has_name("facefold.config", "resolve_config")
    assert has_name("facefold.data.images", "Path")  # imported names can be imported again
    assert has_name("facefold", "fit") and not has_name("facefold", "no_such_name")  # lazy API


def test_every_imported_name_exists() -> None:
    """``from facefold.x import name`` (lazy ones too) finds ``name`` in ``facefold.x``: a
    lazy import of a moved name fails only when its function runs."""
    missing = [f"{f.module}:{f.line}: from {f.target} import {f.name}" for f in missing_names()]
    assert not missing, "imported names that do not exist:\n" + "\n".join(missing)


# The files and folders of run, cv and experiment folders, and the one module that names them.
NAMES_MODULE = "facefold/runs/names.py"
RUN_FOLDER_NAMES = [
    "run.json", "cv.json", "config.json", "versions.json", "metrics.jsonl", "sparsity.jsonl",
    "predictions.npz", "threshold.json", "centroids.npy", "openset.json", "ensemble.json",
    "experiment.json", "comparison.csv", "comparison.png", "export.json", "checkpoints",
    "tensorboard", "case-", "step-", "teacher.npz", "model_card.json", "MODEL_CARD.md",
    "gallery.sqlite", "gallery.npz", "enrollment_test.json", "model.keras", "model.tflite",
]


def test_run_folder_names_are_literals_in_one_module_only() -> None:
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        # String literals only: docstrings and comments may name the files for the reader.
        tree = ast.parse(path.read_text(), str(path))
        not_file_names = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(
            n, ast.Module | ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
            and n.body and isinstance(n.body[0], ast.Expr)}
        # ``__all__`` lists Python names (runs.checkpoints, the function), not files.
        not_file_names |= {id(c) for n in tree.body if isinstance(n, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)
            for c in ast.walk(n.value)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                    id(node) not in not_file_names):
                for name in RUN_FOLDER_NAMES:
                    if re.fullmatch(re.escape(name) + (r".*" if name.endswith("-") else ""),
                                    node.value):
                        found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert found, "the scan found no literal at all: it is broken"
    elsewhere = {name: files for name, files in found.items() if files != {NAMES_MODULE}}
    assert not elsewhere, f"run-folder names outside {NAMES_MODULE}: {elsewhere}"


def test_git_grep_agrees() -> None:
    """The "Done when" check as a reader would run it: git grep for the quoted names."""
    try:
        out = subprocess.run(["git", "grep", "-l", "-E", r'"(run|cv|experiment)\.json"', "--",
                              "facefold"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("git is not available")
    if out.returncode not in (0, 1) or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    assert out.stdout.split() == [NAMES_MODULE]


@pytest.mark.parametrize("module", ["facefold.runs", "facefold.predict.gallery"])
def test_cold_start_imports_no_tensorflow(module: str) -> None:
    """What ``verify`` and ``identify`` read (run folders, the gallery) loads without
    TensorFlow, whose import costs seconds; a fresh interpreter, since this one has it."""
    code = f"import sys, {module}; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", f"importing {module} imports TensorFlow"


def test_serve_bench_without_a_model_reaches_training(monkeypatch) -> None:
    """``python -m facefold.serve_bench`` with no MODEL (docs/deployment.md): its lazy imports
    resolve and it trains the tiny model it then serves (training and serving stubbed)."""
    import facefold.train
    from facefold import serve_bench

    trained, served = [], []

    def fake_train(data_dir, config, out, eval_shards, log=print):
        trained.append((Path(data_dir, "labels.txt").is_file(), config.preset,
                        list(eval_shards)))
        return []

    monkeypatch.setattr(facefold.train, "train", fake_train)
    monkeypatch.setattr(serve_bench, "run", lambda model, *args: served.append(model) or True)
    assert serve_bench.main([]) == 0
    assert trained == [(True, "seed", [0])]  # on the synthetic dataset it built
    assert [model.name for model in served] == ["run"]


def test_package_data_is_declared() -> None:
    """Every file of the package that is not Python (the web page) is listed as package data,
    so that a wheel, not only an editable install, carries it."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]
    data = {p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")}
    assert PACKAGE / "serve" / "page.html" in data
    missing = {str(p.relative_to(ROOT)) for p in data
               if p.name not in declared.get(module_name(p.parent / "__init__.py"), [])}
    assert not missing, f"not in [tool.setuptools.package-data]: {sorted(missing)}"


def test_the_public_api_gives_functions_even_after_their_modules_were_imported() -> None:
    # Python binds a package attribute to a submodule once it is imported: an API name that
    # is also a submodule's name (`facefold.fit`, once the CLI had imported it) then gives
    # the module, and the documented `from facefold import fit; fit(...)` raised TypeError.
    # A fresh interpreter: this test process may have imported anything already.
    script = """
import importlib, inspect, facefold
for name, (module, _) in facefold._API.items():
    importlib.import_module(module)
    assert not inspect.ismodule(getattr(facefold, name)), name
from facefold import fit
try:
    fit("no-data", None, "no-out", far=2.0)
except ValueError as err:
    print(err)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "--far must be in (0, 1), got 2.0"
