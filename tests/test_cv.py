"""Cross-validation: folds, the 2016 table (hand-computed), CSV, plot, and a tiny real run."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config

from facefold.evaluate.cv import CVResult, load_cv, parse_folds, run_cv
from facefold.report import save_cv_report
from facefold.report.table import format_table
from facefold.runs import read_metrics


def test_parse_folds() -> None:
    assert parse_folds("all", 6) == [0, 1, 2, 3, 4, 5]
    assert parse_folds(None, 3) == [0, 1, 2]
    assert parse_folds("3,0", 6) == [0, 3]
    with pytest.raises(ValueError, match=r"folds \[6\] out of range: the dataset has 6 shards"):
        parse_folds("0,6", 6)
    with pytest.raises(ValueError, match="comma-separated integers, got 'x'"):
        parse_folds("x", 6)


def test_table_layout_and_numbers() -> None:
    result = CVResult([0, 1000, 2000], [0, 1, 2], np.array(
        [[0.05, 0.04, 0.06], [0.80, 0.70, 0.75], [0.95, 0.93, 0.94]]))
    lines = format_table(result).splitlines()
    assert lines[0].split() == ["Step", "Case", "#0", "Case", "#1", "Case", "#2", "AVERAGE"]
    assert lines[2].split() == ["1000", "0.8000", "0.7000", "0.7500", "0.7500"]
    # mean of (0.95, 0.93, 0.94) = 0.94; sample std = sqrt((0.01^2 + 0.01^2 + 0) / 2) = 0.01
    assert lines[-1] == "Step 2000: 0.9400 ± 0.0100 (mean ± sample std over 3 cases)"


def test_tiny_cross_validation_end_to_end(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "cv"
    config = tiny_config(steps=20, eval_every=10)
    result = run_cv(tiny_dataset, config, out, "0,2", log=lambda _: None)
    assert result.cases == [0, 2]
    assert result.steps == [0, 10, 20]
    for j, case in enumerate(result.cases):
        metrics = read_metrics(out / f"case-{case}")
        assert list(result.accuracy[:, j]) == [m["eval_accuracy"] for m in metrics]
    np.testing.assert_allclose(result.average, result.accuracy.mean(axis=1))
    table = save_cv_report(result, out)
    rows = list(csv.reader((out / "accuracy.csv").open()))
    assert rows[0] == ["Step", "Case #0", "Case #2", "AVERAGE"]
    assert float(rows[-1][3]) == pytest.approx(result.average[-1], abs=1e-6)
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Case #2" in table
    # Loading the folder again gives the same table; re-running resumes (no new training).
    assert load_cv(out).accuracy.tolist() == result.accuracy.tolist()
    again = run_cv(tiny_dataset, config, out, "0,2", log=lambda _: None)
    assert again.accuracy.tolist() == result.accuracy.tolist()


def test_a_batch_size_above_a_cases_training_images_is_refused_before_any_training(
        tiny_dataset: Path, tmp_path: Path) -> None:
    # 4 people x 8 pictures in each of 3 shards: every case trains on 2 shards, 64 pictures.
    out = tmp_path / "cv"
    with pytest.raises(ValueError, match=r"batch size 65 exceeds the 64 training images of "
                       r"case 0 .*give --batch-size 64 or less"):
        run_cv(tiny_dataset, tiny_config(batch_size=65), out, log=lambda _: None)
    assert not out.exists()


def test_cv_logs_the_time_left_for_all_its_cases_early(tiny_dataset: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    run_cv(tiny_dataset, tiny_config(steps=30, eval_every=30, sparsity_every=0), tmp_path / "cv",
           log=lines.append)
    # 3 cases of 30 steps, told once, during the first case's first 30 steps.
    plan = [i for i, line in enumerate(lines) if "of training left in all" in line]
    assert len(plan) == 1 and "90 steps in 3 run(s)" in lines[plan[0]]
    assert plan[0] < next(i for i, line in enumerate(lines) if "step 30/30" in line)


def test_each_run_logs_its_early_estimate_once_however_many_evaluations(
        tiny_dataset: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    run_cv(tiny_dataset, tiny_config(steps=60, eval_every=30, sparsity_every=0), tmp_path / "cv",
           folds="0", log=lines.append)
    # Two evaluation intervals of 30 steps, each a `fit` timing its first steps: one line.
    estimates = [line for line in lines if "s/step on the first steps" in line]
    assert len(estimates) == 1 and "for this run's 60 steps" in estimates[0]


def test_open_set_cv_checks_the_batch_size_against_the_known_people_only(
        tiny_dataset: Path, tmp_path: Path) -> None:
    from facefold.evaluate.openset_cv import run_open_set_cv

    # 2 of the 4 people held out: each case trains on 2 people x 8 pictures x 2 shards = 32.
    out = tmp_path / "cv"
    with pytest.raises(ValueError, match=r"batch size 33 exceeds the 32 training images of "
                       r"case 0 .*give --batch-size 32 or less"):
        run_open_set_cv(tiny_dataset, tiny_config(batch_size=33), out, "all", 2,
                        log=lambda _: None)
    assert not out.exists()
