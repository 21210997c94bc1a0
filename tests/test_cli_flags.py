"""One vocabulary of flags: a name means one thing everywhere, an idea has one name.

The checks walk the parser itself (every subcommand), so a new flag that reuses a
name for something else, or a second spelling of an existing idea, fails here.
Hidden deprecated aliases are left out of the vocabulary checks and tested apart.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from facefold import __version__, choices
from facefold.cli import build_parser, iter_commands, main, parse_args

ROOT = Path(__file__).resolve().parents[1]

# Names that once meant an idea that now has another name, or that mean different
# things in different tools: none may be a visible option of any command.
RETIRED = {"--batch", "--eval-shards", "--json-out", "--output", "-o", "--steps-timed"}

# (command, option) -> why its default differs from the same option elsewhere.
DEFAULT_EXCEPTIONS = {
    ("train", "--folds"): "one run holds out one fold; 'all' would leave nothing to train on",
    ("fit", "--far"): "a deployed model's threshold: 1 % of strangers accepted, where cv "
                      "--unknown-people measures at 5 % by default",
}

# Commands that write files: each names its output folder with --out.
NO_OUTPUT = {("dataset",), ("dataset", "inspect"), ("analyze",), ("faces",), ("predict",),
             ("serve",), ("presets",),
             # These write into the MODEL folder (enroll) or one CSV file (identify --csv).
             ("enroll",), ("identify",), ("verify",),
             # audit prints, and writes only the files named (--csv, --sheet, --fixes); fix
             # moves pictures between the source folder's person folders.
             ("dataset", "audit"), ("dataset", "fix")}


def _commands() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    parser = build_parser()
    return [((), parser), *iter_commands(parser)]


def _visible(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.help is not argparse.SUPPRESS
            and not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)]


def _signature(action: argparse.Action) -> tuple:
    return (action.dest, type(action).__name__, action.type, tuple(action.choices or ()),
            action.nargs)


def test_one_option_name_means_one_thing() -> None:
    signatures: dict[str, dict[tuple, list[str]]] = {}
    defaults: dict[str, dict[object, list[str]]] = {}
    for words, parser in _commands():
        where = " ".join(words) or "facefold"
        for action in _visible(parser):
            for option in action.option_strings:
                signatures.setdefault(option, {}).setdefault(_signature(action), []).append(where)
                if (action.default not in (None, argparse.SUPPRESS)
                        and (where, option) not in DEFAULT_EXCEPTIONS):
                    defaults.setdefault(option, {}).setdefault(action.default, []).append(where)
    assert len(signatures) > 40  # the walk saw the whole parser
    clashes = {o: s for o, s in signatures.items() if len(s) > 1}
    assert not clashes, f"one option name, several meanings: {clashes}"
    differing = {o: d for o, d in defaults.items() if len(d) > 1}
    assert not differing, f"one option, several defaults: {differing}"


def test_one_idea_has_one_name() -> None:
    names: dict[str, set[str]] = {}
    for _, parser in _commands():
        for action in _visible(parser):
            if action.option_strings:
                names.setdefault(action.dest, set()).update(action.option_strings)
    assert {d: n for d, n in names.items() if len(n) > 1} == {}
    visible = set().union(*names.values())
    assert not visible & RETIRED


def test_the_output_folder_is_out_everywhere() -> None:
    for words, parser in _commands():
        if not words or words in NO_OUTPUT:
            continue
        visible = _visible(parser)
        assert "--out" in {o for a in visible for o in a.option_strings}, words
        positionals = [a.dest for a in visible if not a.option_strings]
        assert not [p for p in positionals if "out" in p], words


def test_folds_default_to_all_in_cross_validation() -> None:
    assert parse_args(["cv", "d", "--out", "o"]).folds == "all"
    assert parse_args(["experiment", "d", "--presets", "reduced", "--out", "o"]).folds == "all"
    assert parse_args(["train", "d", "--out", "o"]).folds == "0"


@pytest.mark.parametrize("argv", [
    ["--threads", "3", "cv", "d", "--out", "o"],
    ["cv", "d", "--out", "o", "--threads", "3"],
    ["dataset", "--threads", "3", "build", "s", "--out", "o"],
    ["dataset", "build", "s", "--out", "o", "--threads", "3"],
    ["bench", "--threads", "3"],
    ["presets", "--threads", "3"],
])
def test_threads_anywhere(argv: list[str]) -> None:
    assert parse_args(argv).threads == 3


def test_threads_default_and_every_command_takes_it() -> None:
    assert parse_args(["presets"]).threads == 0
    for words, parser in iter_commands(build_parser()):
        assert "--threads" in parser._option_string_actions, words


def test_version_matches_the_package(capsys: pytest.CaptureFixture) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert __version__ == project["version"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"facefold {__version__}"


@pytest.mark.parametrize(("old", "new", "notice"), [
    (["train", "d", "--eval-shards", "1", "--out", "o"],
     ["train", "d", "--folds", "1", "--out", "o"], "--eval-shards is deprecated, use --folds"),
    (["bench", "--batch", "8"], ["bench", "--batch-size", "8"], "--batch is deprecated"),
    (["bench", "--size", "64"], ["bench", "--input-size", "64"], "--size is deprecated"),
    (["bench", "--steps", "3"], ["bench", "--timed-steps", "3"], "--steps is deprecated"),
    (["dataset", "build", "s", "o", "--per-class", "9"],
     ["dataset", "build", "s", "--out", "o", "--per-class", "9"], "positional OUT is deprecated"),
    (["faces", "crop", "p", "o"], ["faces", "crop", "p", "--out", "o"],
     "positional OUT is deprecated"),
])
def test_old_spellings_still_work_with_one_line_notice(
    capsys: pytest.CaptureFixture, old: list[str], new: list[str], notice: str
) -> None:
    def parsed(argv: list[str]) -> dict:
        values = vars(parse_args(argv))
        return {k: v for k, v in values.items() if k not in ("legacy_out", "out_parser")}

    assert parsed(old) == parsed(new)
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and notice in err
    assert "facefold: warning:" in err


def test_out_once_and_required(capsys: pytest.CaptureFixture) -> None:
    for argv in (["dataset", "build", "s"], ["dataset", "build", "s", "o", "--out", "o2"]):
        with pytest.raises(SystemExit) as exit_info:
            parse_args(argv)
        assert exit_info.value.code == 2
    assert "required: --out" in capsys.readouterr().err


def test_bench_out_writes_bench_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture) -> None:
    from facefold import bench

    calls = []
    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: calls.append((a, k)) or {"ok": 1})
    monkeypatch.setattr(bench, "format_bench", lambda result: "table")
    assert main(["bench", "--batch-size", "8", "--timed-steps", "3", "--input-size", "32",
                 "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "bench.json").read_text()) == {"ok": 1}
    assert calls[0][0][2:5] == (32, 8, 3)  # input size, batch size, timed steps
    assert main(["bench", "--json", str(tmp_path / "old.json")]) == 0  # deprecated spelling
    assert (tmp_path / "old.json").is_file()
    assert "--json is deprecated" in capsys.readouterr().err


def test_analyze_sparsity_out_is_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    from facefold.report import sparsity

    seen = []
    monkeypatch.setattr(sparsity, "analyze_sparsity", lambda runs, out: seen.append(out) or "")
    assert main(["analyze", "sparsity", "run", "--out", str(tmp_path / "plots")]) == 0
    assert main(["analyze", "sparsity", "run", "--out", str(tmp_path / "s.png")]) == 0
    assert main(["analyze", "sparsity", "run"]) == 0
    assert seen == [tmp_path / "plots" / "sparsity.png", tmp_path / "s.png", None]
    assert "--out FILE.png is deprecated" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "closed_set"), [
    ("--precision", choices.PRECISION_SETTINGS), ("--executor", choices.EXECUTORS),
    ("--format", choices.EXPORT_FORMATS), ("--score", choices.SCORES)])
def test_closed_sets_are_read_from_one_registry(option: str, closed_set: tuple) -> None:
    offered = {" ".join(words): tuple(action.choices) for words, parser in _commands()
               for action in _visible(parser) if option in action.option_strings}
    assert offered and set(offered.values()) == {closed_set}, offered


def test_the_registries_agree_with_the_library() -> None:
    from facefold import runs
    from facefold.models.presets import resolve_config
    from facefold.models.scores import SCORES

    assert tuple(runs.MODEL_FILES) == choices.EXPORT_FORMATS
    assert tuple(SCORES) == choices.SCORES
    with pytest.raises(ValueError, match=r"train\.precision must be one of auto, float32"):
        resolve_config("seed", overrides={"train": {"precision": "float16"}})


def test_building_the_parser_starts_no_tensorflow() -> None:
    """The oneDNN choice is applied after parsing and must come before TensorFlow starts."""
    code = ("import sys; from facefold.cli import build_parser; build_parser(); "
            "sys.exit('tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr or "building the parser imported TensorFlow"


# Runs a facefold command, then makes TensorFlow retrace a function 8 times (it warns from the
# 6th call): what a command prints on standard error, TensorFlow's own lines included.
_COMMAND_THEN_RETRACING = """
import sys
from facefold.cli import main
status = main(sys.argv[1:])
# As facefold starts TensorFlow where a command needs it (verify with a kept TFLite copy, or
# an error before any model, never does).
from facefold.machine import start_tensorflow
tf = start_tensorflow()

@tf.function
def plus(x):
    return x + 1

for i in range(8):
    plus(i)  # a Python number: one trace per value
sys.exit(status)
"""


@pytest.mark.parametrize("argv, status", [(["presets"], 0),
                                          (["verify", "no-model", "a.jpg", "b.jpg"], 2)])
def test_tensorflow_is_silent_unless_verbose(argv: list[str], status: int,
                                             tmp_path: Path) -> None:
    def stderr_of(*flags: str) -> str:
        done = subprocess.run([sys.executable, "-c", _COMMAND_THEN_RETRACING, *flags, *argv],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert done.returncode == status, done.stderr
        return done.stderr

    quiet = stderr_of()
    if status:  # only the one-line error
        assert quiet.startswith("facefold: error: ") and quiet.count("\n") == 1, quiet
    else:
        assert quiet == ""
    loud = stderr_of("--verbose")
    assert "oneDNN" in loud and "triggered tf.function retracing" in loud
