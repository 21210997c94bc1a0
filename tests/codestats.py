"""Numbers on facefold's shape: ``python tests/codestats.py`` from the repository's root.

It prints

- the largest file of ``facefold/`` (in lines);
- the functions (and methods) longer than :data:`LONG_FUNCTION` lines, from ``def`` to
  their last line;
- the **switches on model family outside** ``facefold/models/``: places that ask which
  family a config is instead of asking its family (:mod:`facefold.models.families`). One
  per line of code, of three kinds:

  - ``isinstance``: an ``isinstance(…, F)`` call where ``F`` (or one member of a tuple) is a
    class of ``models/families.py`` (``ModelFamily`` and its subclasses);
  - ``family name``: a comparison (``==``, ``!=``, ``in``, ``not in``) with a family's name
    (the ``name`` of those classes: ``"cnn"``, ``"embedding"``, ``"ensemble"``), or a
    condition on an attribute called ``family`` (``config.family``);
  - ``field``: a condition on a config field that only some families have, an attribute
    named in :data:`FAMILY_FIELDS` (``model.members``, ``model.member_weights``,
    ``model.embedding``, ``train.teacher``).

  A *condition* is the test of an ``if``/``elif``/``while``/conditional expression/
  ``assert``/comprehension ``if``, or any comparison or ``and``/``or`` expression.
  Not switches: the config validating its own fields (:data:`CONFIG_VALIDATION`: the
  invariants that tie ``model.family`` to ``model.embedding`` and ``model.members``, checked
  in the base layer before any family can be asked), and the flags of the command line
  (attributes of ``args``, the argparse namespace: ``bench --embedding`` names what to
  measure, not a config field). The switches that remain say why in a comment;
- the **results in comments**: lines of a ``#`` comment or a docstring in ``facefold/``
  holding a measured-looking number (:data:`RESULT_NUMBER`: a number followed by ``%``, by
  ``ms``, or by ``s/step`` / ``s per step``). Results live in the docs (docs/results.md,
  docs/performance.md …) with their command, machine and date; a comment says why and points
  to the docs section. The lines that remain are listed, to be justified one by one (a
  percentage that defines a parameter, not a result);
- the **upward imports**: imports (lazy ones in functions included) from a package that is
  not beneath the importing one in :data:`LAYERS` — the same check as
  ``tests/test_structure.py``, which imports this module.

The report imports nothing of facefold (it reads the files with ``ast``), so it runs in a
second with any Python 3.11.
"""

from __future__ import annotations

import ast
import functools
import importlib
import io
import re
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "facefold"
LONG_FUNCTION = 60  # lines: a function longer than this no longer fits on a screen

# Each layer and the layers directly beneath it. A module may import its own package (the
# name after ``facefold.``) and any package of a layer reachable downwards: never upwards,
# and never sideways into another package of its own layer.
LAYERS: dict[str, tuple[str, ...]] = {
    "leaf": (),                     # imports nothing of facefold: Log, closed sets, atomic
                                    # writes, safe CSV cells
    "base": ("leaf",),              # configuration, this machine
    "package": ("base",),           # facefold/__init__.py: __version__, the lazy public API
    "data": ("package",),           # the shard format, images, the input pipeline
    "runs": ("data",),              # the files of run, cv, experiment and export folders
    "embeddings": ("runs",),        # pretrained embeddings and their cache
    "faces": ("embeddings",),       # detection, alignment, cropping, clustering photos
    "models": ("faces",),           # builders, families, inference, presets, open-set scores
    "train": ("models",),           # training runs, ensembles, distillation
    "predict": ("models",),         # a model folder naming faces: no training code
    "deploy": ("predict",),         # the Recognizer API, exports, the web server
    "evaluate": ("train", "predict"),  # cross-validation, experiments, held-out measures
    "report": ("evaluate",),        # tables, figures, report.md/html of finished runs
    "commands": ("report", "deploy"),  # fit, the demo, the benchmarks
    "cli": ("commands",),           # the `facefold` command
}
# The layer of each package of facefold, by its top-level name (a module or a package alike,
# so bench.py becoming bench/ keeps its layer).
PACKAGE_LAYER: dict[str, str] = {
    "log": "leaf", "choices": "leaf", "atomic": "leaf", "csvcells": "leaf", "locks": "leaf",
    "config": "base", "machine": "base",
    "facefold": "package",
    "data": "data",
    "runs": "runs",
    "embeddings": "embeddings",
    "faces": "faces",
    "models": "models",
    "train": "train",
    "predict": "predict",
    "recognizer": "deploy", "export": "deploy", "serve": "deploy",
    "evaluate": "evaluate",
    "report": "report",
    "fitting": "commands", "demo": "commands", "bench": "commands", "serve_bench": "commands",
    "label": "commands",
    "cli": "cli",
}

# Config fields only some families have (see the module docstring).
FAMILY_FIELDS = ("members", "member_weights", "embedding", "teacher")
# A number as a measurement states it: 96.5 %, 12 ms, 0.21 s/step, 3 s per step.
RESULT_NUMBER = re.compile(r"\d(?:[\d,]*\d)?(?:\.\d+)?\s?(?:%|ms\b|s/step\b|s per step\b)")
# The config's validation of its own fields, by file: no family switch (module docstring).
CONFIG_VALIDATION = {"facefold/config.py": ("check_config", "_check_embedding_and_members")}


# ---------------------------------------------------------------- modules and their imports


def module_name(path: Path) -> str:
    """``facefold/a/b.py`` -> ``facefold.a.b``; a package's ``__init__.py`` -> the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def modules() -> dict[str, Path]:
    """Every module of facefold by its dotted name."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@functools.cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


@dataclass(frozen=True)
class Import:
    """One facefold import of a module: ``from target import name`` (``name`` None for
    ``import target``) at ``line``; ``target`` is the module itself when ``name`` is one."""

    module: str
    line: int
    target: str
    name: str | None


def imports_of(module: str) -> Iterator[Import]:
    """Every import of a facefold module by ``module``, anywhere in its file (lazy imports in
    functions count: a function runs sooner or later)."""
    known = modules()
    for node in ast.walk(parsed(known[module])):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "facefold":
                    yield Import(module, node.lineno, alias.name, None)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:  # relative: resolve against the importing package
                package = module if known[module].name == "__init__.py" else (
                    module.rpartition(".")[0])
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}"
            else:
                source = node.module
            if source.split(".")[0] != "facefold":
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                # `from a.b import c` imports module a.b.c when there is one, else a name of a.b.
                yield (Import(module, node.lineno, submodule, None) if submodule in known
                       else Import(module, node.lineno, source, alias.name))


def layer_of(module: str) -> str:
    """The layer of a facefold module, by its top-level package; KeyError names a new one."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else parts[0]
    if top not in PACKAGE_LAYER:
        raise KeyError(f"facefold.{top} has no layer: add it to PACKAGE_LAYER in {__file__}")
    return PACKAGE_LAYER[top]


@functools.cache
def beneath(layer: str) -> frozenset[str]:
    """Every layer strictly beneath ``layer``."""
    below: set[str] = set()
    for lower in LAYERS[layer]:
        below |= {lower, *beneath(lower)}
    return frozenset(below)


def is_upward(found: Import) -> bool:
    """True when ``found`` imports upwards or sideways across packages (see :data:`LAYERS`)."""
    source, target = found.module.split("."), found.target.split(".")
    if len(source) > 1 and source[:2] == target[:2]:
        return False  # the same package
    return layer_of(found.target) not in beneath(layer_of(found.module))


def upward_imports() -> list[Import]:
    """Every import of facefold that is not from beneath the importing package (one per
    module, line and imported module)."""
    found = {(f.module, f.line, f.target): f for module in modules() for f in imports_of(module)
             if is_upward(f)}
    return list(found.values())


# ---------------------------------------------------------------- names that must exist


def _defined_at_top(body: list[ast.stmt]) -> Iterator[str]:
    """The names a module's top level binds (inside if/try/with blocks too)."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield node.name
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                yield from (n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                yield alias.asname or alias.name.split(".")[0]
        for block in ("body", "orelse", "finalbody", "handlers"):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                yield from _defined_at_top(getattr(node, block, []))


def has_name(module: str, name: str) -> bool:
    """Whether ``from module import name`` finds ``name``: read from the file, or by importing
    the module when it makes names on demand (a module-level ``__getattr__``)."""
    defined = set(_defined_at_top(parsed(modules()[module]).body))
    if name in defined:
        return True
    if "__getattr__" in defined or "*" in defined:
        return hasattr(importlib.import_module(module), name)
    return False


def missing_names() -> list[Import]:
    """Every ``from facefold… import name`` whose module or name does not exist."""
    known = modules()
    return [found for module in known for found in imports_of(module)
            if found.target not in known
            or (found.name is not None and not has_name(found.target, found.name))]


# ---------------------------------------------------------------- size and family switches


def long_functions(limit: int = LONG_FUNCTION) -> list[tuple[str, int]]:
    """``("file:line name", lines)`` of every function longer than ``limit`` lines, longest
    first."""
    found = []
    for path in modules().values():
        for node in ast.walk(parsed(path)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append((f"{path.relative_to(ROOT)}:{node.lineno} {node.name}", lines))
    return sorted(found, key=lambda item: -item[1])


def _family_classes() -> dict[str, str]:
    """``class name -> family name`` of models/families.py (ModelFamily itself: "")."""
    classes = {}
    for node in parsed(PACKAGE / "models" / "families.py").body:
        if isinstance(node, ast.ClassDef) and (node.name == "ModelFamily" or any(
                isinstance(b, ast.Name) and b.id == "ModelFamily" for b in node.bases)):
            classes[node.name] = next(
                (s.value.value for s in node.body if isinstance(s, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == "name" for t in s.targets)
                 and isinstance(s.value, ast.Constant)), "")
    return classes


def _conditions(tree: ast.AST) -> Iterator[ast.expr]:
    for node in ast.walk(tree):
        if isinstance(node, ast.If | ast.While | ast.IfExp | ast.Assert):
            yield node.test
        elif isinstance(node, ast.comprehension):
            yield from node.ifs
        elif isinstance(node, ast.Compare | ast.BoolOp):
            yield node


def _switch_kind(node: ast.AST, classes: dict[str, str], condition: bool) -> str | None:
    families = {name for name in classes.values() if name}
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "isinstance" and len(node.args) == 2):
        kinds = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
        if any(isinstance(k, ast.Name) and k.id in classes for k in kinds):
            return "isinstance"
    if isinstance(node, ast.Compare) and any(
            isinstance(side, ast.Constant) and side.value in families
            for side in [node.left, *node.comparators]):
        return "family name"
    if condition and isinstance(node, ast.Attribute):
        if isinstance(node.value, ast.Name) and node.value.id == "args":
            return None  # a command-line flag, not a config field
        if node.attr == "family":
            return "family name"
        if node.attr in FAMILY_FIELDS:
            return "field"
    return None


def family_switches() -> list[tuple[str, str]]:
    """``("file:line", kind)`` of every switch on model family outside facefold/models/ (one
    per line; the kinds are defined in the module docstring)."""
    classes = _family_classes()
    found: dict[str, str] = {}
    for path in modules().values():
        if path.is_relative_to(PACKAGE / "models"):
            continue
        tree = parsed(path)
        in_condition = {id(n) for c in _conditions(tree) for n in ast.walk(c)}
        validation = CONFIG_VALIDATION.get(str(path.relative_to(ROOT)), ())
        skipped = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
                   and f.name in validation for n in ast.walk(f)}
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            kind = _switch_kind(node, classes, id(node) in in_condition)
            if kind:
                found.setdefault(f"{path.relative_to(ROOT)}:{node.lineno}", kind)
    return sorted(found.items(), key=lambda item: _file_line_key(item[0]))


def _file_line_key(place: str) -> tuple[str, int]:
    file, _, line = place.rpartition(":")
    return file, int(line)


def comment_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, text)`` of every ``#`` comment and every docstring line of a file."""
    source = path.read_text()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) \
                and node.body and isinstance(node.body[0], ast.Expr) \
                and isinstance(node.body[0].value, ast.Constant) \
                and isinstance(node.body[0].value.value, str):
            first = node.body[0].lineno
            for offset, text in enumerate(node.body[0].value.value.splitlines()):
                yield first + offset, text


def result_comments() -> list[tuple[str, str]]:
    """``("file:line", text)`` of every comment or docstring line of facefold/ with a
    :data:`RESULT_NUMBER`, in file and line order."""
    found = []
    for path in modules().values():
        for line, text in comment_lines(path):
            if RESULT_NUMBER.search(text):
                found.append((f"{path.relative_to(ROOT)}:{line}", text.strip()))
    return sorted(found, key=lambda item: _file_line_key(item[0]))


def largest_file() -> tuple[str, int]:
    path = max(modules().values(), key=lambda p: len(p.read_text().splitlines()))
    return str(path.relative_to(ROOT)), len(path.read_text().splitlines())


def main() -> None:
    name, lines = largest_file()
    print(f"largest file: {name} ({lines} lines)")
    long = long_functions()
    print(f"functions over {LONG_FUNCTION} lines: {len(long)}")
    for where, count in long:
        print(f"  {count:4d}  {where}")
    switches = family_switches()
    print(f"switches on model family outside facefold/models/: {len(switches)}")
    for where, kind in switches:
        print(f"  {where}  ({kind})")
    results = result_comments()
    print(f"results in comments (numbers with %, ms, s/step): {len(results)}")
    for where, text in results:
        print(f"  {where}  {text}")
    upward = upward_imports()
    print(f"upward imports: {len(upward)}")
    for found in upward:
        print(f"  {found.module}:{found.line} ({layer_of(found.module)}) imports "
              f"{found.target} ({layer_of(found.target)})")


if __name__ == "__main__":
    main()
