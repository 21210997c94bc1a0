"""The report of cv/experiment folders (Markdown + self-contained HTML), and the progress line."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from conftest import make_tiny_dataset, tiny_config

from facefold.atomic import write_text_atomic
from facefold.cli import main
from facefold.data.records import write_labels
from facefold.evaluate.cv import load_cv
from facefold.evaluate.experiment import ExperimentResult, run_experiment
from facefold.report.comparison import curve_style, format_comparison, save_comparison
from facefold.report.document import ASSETS_DIR, write_report
from facefold.report.table import format_table
from facefold.train import train
from facefold.train.trainer import ProgressLine

PNG = b"\x89PNG\r\n\x1a\n"
TRAIN = {"train": {"steps": 4, "eval_every": 2}}
Snapshot = dict[str, tuple[int, int]]


def _snapshot(*folders: Path) -> Snapshot:
    """Every file under ``folders``: relative path -> (size, mtime in ns)."""
    return {
        str(path): (path.stat().st_size, path.stat().st_mtime_ns)
        for folder in folders for path in sorted(folder.rglob("*")) if path.is_file()
    }


def _linked_copy(src: Path, dst: Path) -> Path:
    """Copy a folder as hard links: fast, and safe because facefold replaces files by rename."""
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An experiment (seed, reduced; folds 0,1; 4 steps) and one report of it and its seed CV.

    Returns the paths, the experiment result, and snapshots of the run and
    dataset folders taken before and after the report was written.
    """
    root = tmp_path_factory.mktemp("report")
    data = make_tiny_dataset(root / "data")
    toml = root / "small.toml"
    toml.write_text('[model]\ncrop_size = 32\ninput_size = 32\n'
                    '[train]\nbatch_size = 16\nprecision = "float32"\nsparsity_every = 2\n')
    exp = root / "exp"
    result = run_experiment(data, ["reduced"], exp, "0,1", TRAIN, toml, log=lambda _: None)
    save_comparison(result, exp)  # what `facefold experiment` does
    before = _snapshot(exp, data)
    markdown, page = write_report([exp / "seed", exp], root / "report")
    return {"root": root, "data": data, "toml": toml, "exp": exp, "result": result,
            "markdown": markdown, "html": page, "before": before, "after": _snapshot(exp, data)}


def test_markdown_holds_the_cv_tables_and_its_images(reported: dict) -> None:
    text = reported["markdown"].read_text()
    for preset in ("seed", "reduced"):
        for line in format_table(load_cv(reported["exp"] / preset)).splitlines():
            assert line in text  # the 2016 layout, numbers as format_table prints them
    assert "Step 4: " in text and "(mean ± sample std over 2 cases)" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links and all(link.startswith(f"{ASSETS_DIR}/") for link in links)
    for link in links:
        assert (reported["markdown"].parent / link).read_bytes()[:8] == PNG
    names = {Path(link).name for link in links}
    assert {"montage.png", "accuracy.png", "sparsity.png", "confusion.png", "errors.png",
            "comparison.png"} <= names
    assert "| person | images | correct | accuracy |" in text
    assert 'precision = "float32"' in text and "| tensorflow |" in text  # config and versions


def test_html_is_self_contained(reported: dict) -> None:
    page = reported["html"].read_text()
    sources = re.findall(r'<img [^>]*src="([^"]*)"', page)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", reported["markdown"].read_text())
    assert len(sources) == len(links)
    prefix = "data:image/png;base64,"
    for src in sources:
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix):], validate=True)[:8] == PNG
    assert 'src="http' not in page and "<script" not in page and "<link" not in page
    assert "url(" not in page  # no external fonts or background images in the CSS


def test_experiment_report_compares_presets_with_p_values(reported: dict) -> None:
    text = reported["markdown"].read_text()
    result: ExperimentResult = reported["result"]
    assert "t-test p" in text and "McNemar p (b01/b10)" in text
    # The header and one row each.
    printed = format_comparison(result).splitlines()[: 1 + len(result.summaries)]
    for line in printed:
        assert line in text
    reduced = result.summaries[1]
    assert reduced.preset == "reduced" and f"{reduced.t_test[1]:.4f}" in text
    assert "### Preset seed" in text and "### Preset reduced" in text


def test_run_and_dataset_folders_are_not_modified(reported: dict) -> None:
    assert reported["after"] == reported["before"]
    assert not (reported["data"] / "montage.png").exists()  # drawn into the report instead
    assert (reported["root"] / "report" / ASSETS_DIR / "dataset" / "montage.png").is_file()
    assert not list(reported["root"].joinpath("report").glob(f".{ASSETS_DIR}*"))  # no leftovers


def test_cli_cv_writes_the_report_into_its_folder(
    reported: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cv = _linked_copy(reported["exp"] / "seed", tmp_path / "cv")
    argv = ["cv", str(reported["data"]), "--folds", "0,1", "--steps", "4", "--eval-every", "2",
            "--config", str(reported["toml"]), "--out", str(cv)]
    assert main(argv) == 0  # both cases are complete: nothing trains
    assert f"Report: {cv / 'report.md'} and {cv / 'report.html'}" in capsys.readouterr().out
    assets = cv / ASSETS_DIR
    # The cv command made per_person.csv before the report: the report copies it.
    assert (assets / "1-cv" / "per_person.csv").read_bytes() == (cv / "per_person.csv").read_bytes()
    before = _snapshot(cv)
    assert main(["report", str(cv)]) == 0  # --out defaults to the first DIR
    changed = {p for p, v in _snapshot(cv).items() if before.get(p) != v}
    assert changed and all(Path(p).relative_to(cv).parts[0] in {"report.md", "report.html",
                                                                 ASSETS_DIR} for p in changed)


def test_a_folder_that_is_no_run_is_named(reported: dict, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty is neither a facefold cv folder"):
        write_report([reported["exp"], tmp_path / "empty"], tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="nope does not exist"):
        write_report([tmp_path / "nope"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_runs_of_different_label_lists_or_datasets_are_refused(
    reported: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    seed = reported["exp"] / "seed"
    other = _linked_copy(seed, tmp_path / "other")
    for case in ("case-0", "case-1"):  # write_labels replaces by rename: the links stay intact
        write_labels(other / case, ["ann", "bob", "cy", "dee"])
    with pytest.raises(ValueError, match=r"other/case-0/labels.txt differs from .*labels.txt"):
        write_report([seed, other], tmp_path / "out")
    # Another dataset is refused; the same content in another folder is the same dataset.
    moved = _linked_copy(seed, tmp_path / "moved")
    cv = json.loads((moved / "cv.json").read_text())
    write_text_atomic(moved / "cv.json", json.dumps({**cv, "data_dir": "/elsewhere"}))
    other_data = _linked_copy(seed, tmp_path / "other_data")
    write_text_atomic(other_data / "cv.json", json.dumps(
        {**cv, "data_dir": "/elsewhere", "data": {**cv["data"], "digest": "other content"}}))
    assert main(["report", str(seed), str(other_data), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("facefold: error:") and "made from dataset /elsewhere" in err
    assert not (tmp_path / "out").exists()
    assert main(["report", str(seed), str(moved), "--out", str(tmp_path / "out")]) == 0


# --- the progress line ------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_renders_step_total_loss_accuracy_and_time_left() -> None:
    stream = io.StringIO()
    silent = ProgressLine("case-0", 10, 40, 0.5, stream=stream, min_interval=0)
    silent.on_train_batch_end(0, {"loss": 2.0})
    silent.clear()
    assert stream.getvalue() == ""  # a StringIO is no terminal
    line = ProgressLine("case-0", 10, 40, 0.5, stream=stream, force=True, min_interval=0)
    line.on_train_batch_end(0, {"loss": 2.0})  # the first batch (tracing) is not timed
    assert stream.getvalue() == "\r[case-0] step 11/40 loss 2.000 eval acc 0.5000 ? left"
    line.on_train_batch_end(1, {"loss": 1.5})
    last = stream.getvalue().split("\r")[-1]
    assert re.fullmatch(r"\[case-0\] step 12/40 loss 1\.500 eval acc 0\.5000 \d+s left", last)
    line.clear()
    assert stream.getvalue().endswith("\r") and stream.getvalue().split("\r")[-2].isspace()


def test_training_draws_the_line_only_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    data = make_tiny_dataset(tmp_path / "data", per_shard=2)
    config = tiny_config(steps=4, eval_every=2, sparsity_every=0)
    train(data, config, tmp_path / "quiet", [0], log=lambda _: None)
    assert "\r" not in capsys.readouterr().err  # pytest's capture is no terminal
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    train(data, config, tmp_path / "shown", [0], log=lambda _: None)
    drawn = terminal.getvalue()
    # The first batch of each interval is always drawn, with the last evaluation's accuracy.
    for step in (1, 3):
        pattern = rf"\r\[shown\] step {step}/4 loss \d+\.\d{{3}} eval acc \d\.\d{{4}}"
        assert re.search(pattern, drawn)
    assert drawn.endswith("\r")  # cleared before the trainer's own line


def test_more_than_ten_curves_still_look_different() -> None:
    styles = [curve_style(i) for i in range(30)]
    assert styles[0] == {"color": "C0", "linestyle": "-"}
    assert styles[10] == {"color": "C0", "linestyle": ":"}  # the 11th: C0 again, but dotted
    assert len({tuple(style.values()) for style in styles}) == 30
