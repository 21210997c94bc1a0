"""The command line: a thin shell whose errors are one clear line and a non-zero exit."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_tiny_dataset

from facefold.cli import main


def test_presets_lists_the_registry(capsys: pytest.CaptureFixture) -> None:
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert names[:3] == ["seed", "reduced", "grayscale"]
    assert {"modern", "fast", "fast-noema", "fast-nores"} <= set(names)
    starts = {len(line) - len(line[len(name):].lstrip())
              for line, name in zip(lines, names, strict=True)}
    assert len(starts) == 1  # the descriptions start in one column


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "{missing}", "--out", "{tmp}/r"], "does not exist"),
        (["train", "{data}", "--out", "{tmp}/r", "--preset", "huge"], "unknown preset 'huge'"),
        (["cv", "{data}", "--out", "{tmp}/c", "--folds", "9"], "out of range"),
        (["train", "{data}", "--out", "{tmp}/r", "--steps", "-1"], "train.steps must be >= 1"),
        (["train", "{data}", "--out", "{tmp}/r", "--steps", "0"], "train.steps must be >= 1, "
         "got 0"),
        (["cv", "{data}", "--out", "{tmp}/c", "--steps", "0"], "train.steps must be >= 1, got 0"),
        (["dataset", "inspect", "{missing}"], "does not exist"),
    ],
)
def test_errors_are_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    data = make_tiny_dataset(tmp_path / "data", per_shard=2)
    values = {"missing": str(tmp_path / "nope"), "tmp": str(tmp_path), "data": str(data)}
    assert main([a.format(**values) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("facefold: error:") and message in err


@pytest.mark.slow
def test_cli_train_then_cv_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_tiny_dataset(tmp_path / "data")
    common = ["--steps", "10", "--eval-every", "5", "--batch-size", "16", "--precision",
              "float32", "--config", str(_small_crop_toml(tmp_path))]
    assert main(["train", str(data), "--eval-shards", "1", "--out", str(tmp_path / "r"),
                 *common]) == 0
    assert "final held-out accuracy at step 10" in capsys.readouterr().out
    assert main(["cv", str(data), "--folds", "0,1", "--out", str(tmp_path / "cv"), *common]) == 0
    out = capsys.readouterr().out
    assert "Case #0  Case #1  AVERAGE" in out
    assert (tmp_path / "cv" / "accuracy.csv").is_file()


def _small_crop_toml(tmp_path: Path) -> Path:
    path = tmp_path / "small.toml"
    path.write_text("[model]\ncrop_size = 32\ninput_size = 32\n")
    return path
