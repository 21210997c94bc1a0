"""Experiments: significance tests, the preset comparison, and the error analysis."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_dataset
from scipy import stats

from facefold.atomic import write_text_atomic
from facefold.cli import main
from facefold.data.records import write_labels
from facefold.evaluate.errors import (
    collect_predictions,
    confusion_matrix,
    per_person_accuracy,
    row_normalize,
)
from facefold.evaluate.experiment import (
    ExperimentResult,
    compare_presets,
    finished_cases,
    run_experiment,
)
from facefold.evaluate.stats import mcnemar_test, paired_t_test
from facefold.models.cnn import build_model
from facefold.models.presets import resolve_config
from facefold.report.comparison import format_comparison, save_comparison
from facefold.report.errors import save_error_report, write_per_person_csv
from facefold.runs import latest_checkpoint, read_metrics

PRESETS = ["seed", "reduced"]
TRAIN = {"train": {"steps": 4, "eval_every": 2}}
PNG = b"\x89PNG\r\n\x1a\n"


def _small_toml(folder: Path) -> Path:
    path = folder / "small.toml"
    path.write_text(
        "[model]\ncrop_size = 32\ninput_size = 32\n"
        '[train]\nbatch_size = 16\nprecision = "float32"\n'
    )
    return path


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentResult, Path, Path]:
    """seed and reduced, 2 folds x 4 steps on the tiny dataset: (result, data, toml)."""
    root = tmp_path_factory.mktemp("experiment")
    data = make_tiny_dataset(root / "data")
    toml = _small_toml(root)
    result = run_experiment(data, ["reduced"], root / "out", "0,1", TRAIN, toml, log=lambda _: None)
    save_comparison(result, root / "out")  # evaluate computes, report writes
    return result, data, toml


def _linked_copy(src: Path, dst: Path) -> Path:
    """Copy a folder as hard links: fast, and safe because facefold replaces files by rename."""
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def row_steps(row: dict[str, str]) -> int | None:
    return int(row["steps_to_baseline"]) if row["steps_to_baseline"] else None


def _correct(run_dir: Path) -> np.ndarray:
    with np.load(run_dir / "predictions.npz") as data:
        return data["probabilities"].argmax(axis=1) == data["labels"]


# --- statistics -------------------------------------------------------------------------------


def test_paired_t_test_agrees_with_scipy() -> None:
    a, b = [0.80, 0.90, 0.85, 0.70], [0.82, 0.93, 0.86, 0.69]
    expected = stats.ttest_rel(b, a)
    t, p = paired_t_test(a, b)
    assert t == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue)
    # Hand check: differences 0.02, 0.03, 0.01 -> mean 0.02, sd 0.01, t = 0.02 / (0.01 / sqrt 3).
    t3, _ = paired_t_test(a[:3], b[:3])
    assert t3 == pytest.approx(0.02 / (0.01 / np.sqrt(3)))
    assert paired_t_test([0.9], [0.8]) is None
    assert paired_t_test([0.9, 0.8], [0.9, 0.8]) == (0.0, 1.0)
    assert paired_t_test([0.8, 0.7], [0.9, 0.8]) == (np.inf, 0.0)  # constant difference 0.1
    with pytest.raises(ValueError, match="equally long"):
        paired_t_test([0.9, 0.8], [0.9])


def test_mcnemar_exact_test_by_hand() -> None:
    # b01 = 1 (A wrong, B right), b10 = 7 (A right, B wrong), plus concordant pairs.
    a = [0] + [1] * 7 + [1, 1, 0]
    b = [1] + [0] * 7 + [1, 1, 0]
    b01, b10, p = mcnemar_test(a, b)
    assert (b01, b10) == (1, 7)
    assert p == pytest.approx(2 * (1 + 8) / 2**8) == 0.0703125
    assert mcnemar_test([1, 0], [1, 0]) == (0, 0, 1.0)  # no discordant image
    assert mcnemar_test([0] * 5, [1] * 5)[2] == pytest.approx(2 / 2**5)


# --- the experiment ---------------------------------------------------------------------------


def test_experiment_table_numbers(experiment: tuple[ExperimentResult, Path, Path]) -> None:
    result, _, toml = experiment
    out = result.out
    assert [s.preset for s in result.summaries] == PRESETS  # seed added first as the baseline
    rows = {r["preset"]: r for r in csv.DictReader((out / "comparison.csv").open())}
    for s in result.summaries:
        case_dirs = [out / s.preset / f"case-{k}" for k in (0, 1)]
        finals = [read_metrics(d)[-1]["eval_accuracy"] for d in case_dirs]
        assert s.cases == [0, 1]
        assert s.accuracy_mean == pytest.approx(np.mean(finals))
        assert s.accuracy_std == pytest.approx(np.std(finals, ddof=1))
        model = build_model(resolve_config(s.preset, toml).model, num_classes=4)
        assert s.parameters == model.count_params()
        assert s.checkpoint_bytes == latest_checkpoint(case_dirs[0])[1].stat().st_size
        assert 0 < s.weights_bytes < s.checkpoint_bytes  # the checkpoint adds optimizer state
        times = [r["seconds_per_step"] for d in case_dirs for r in read_metrics(d) if r["step"]]
        assert len(times) == 4 and s.seconds_per_step == pytest.approx(np.median(times))
        assert s.images_per_second == pytest.approx(16 / s.seconds_per_step)
        row = rows[s.preset]
        assert float(row["accuracy_mean"]) == pytest.approx(s.accuracy_mean, rel=1e-5)
        assert int(row["parameters"]) == s.parameters
    seed, reduced = result.summaries
    assert seed.t_test is None and seed.mcnemar is None
    seed_finals = [read_metrics(out / "seed" / f"case-{k}")[-1]["eval_accuracy"] for k in (0, 1)]
    red_finals = [read_metrics(out / "reduced" / f"case-{k}")[-1]["eval_accuracy"] for k in (0, 1)]
    assert reduced.t_test == paired_t_test(seed_finals, red_finals)
    pooled = [np.concatenate([_correct(out / p / f"case-{k}") for k in (0, 1)]) for p in PRESETS]
    assert reduced.mcnemar == mcnemar_test(*pooled)
    assert result.baseline_curve.cases == [0, 1]
    target = np.mean(seed_finals)
    for s in result.summaries:  # time to the seed's accuracy, by hand from metrics.jsonl
        runs = [read_metrics(out / s.preset / f"case-{k}") for k in (0, 1)]
        means = [np.mean([run[i]["eval_accuracy"] for run in runs]) for i in range(3)]
        hit = next((i for i, m in enumerate(means) if m >= target - 1e-9), None)
        if hit is None:
            assert s.steps_to_baseline is None and s.seconds_to_baseline is None
            continue
        assert s.steps_to_baseline == 2 * hit  # evaluations at steps 0, 2, 4
        seconds = [2 * hit * np.median([r["seconds_per_step"] for r in run[1:]]) for run in runs]
        assert s.seconds_to_baseline == pytest.approx(np.mean(seconds))
        assert row_steps(rows[s.preset]) == s.steps_to_baseline
    assert seed.steps_to_baseline is not None  # the baseline reaches its own final accuracy
    assert (out / "comparison.png").read_bytes()[:8] == PNG
    table = format_comparison(result)
    assert "reduced" in table and f"{reduced.parameters:,}" in table


def test_cli_reuses_finished_runs_and_reports_one_fold(
    experiment: tuple[ExperimentResult, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    result, data, toml = experiment
    out = _linked_copy(result.out, tmp_path / "out")
    checkpoints = sorted((out / "seed" / "case-1" / "checkpoints").iterdir())
    argv = ["experiment", str(data), "--presets", "reduced", "--folds", "1", "--steps", "4",
            "--eval-every", "2", "--config", str(toml), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "[seed/case-1] complete, skipped" in printed and "step 4/4" not in printed  # no training
    assert sorted((out / "seed" / "case-1" / "checkpoints").iterdir()) == checkpoints
    rows = {r["preset"]: r for r in csv.DictReader((out / "comparison.csv").open())}
    assert rows["reduced"]["cases"] == "1"
    assert rows["reduced"]["t_test_p"] == "" and rows["reduced"]["mcnemar_p"] != ""  # one fold
    assert finished_cases(out / "seed").cases == [0, 1]  # the plot's seed reference: all folds
    for name in ("per_person.csv", "confusion.png", "errors.png"):
        assert (out / "reduced" / name).is_file()


def test_another_baseline_swaps_the_paired_tests(
    experiment: tuple[ExperimentResult, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    result, data, toml = experiment
    out = _linked_copy(result.out, tmp_path / "out")
    argv = ["experiment", str(data), "--presets", "seed", "--baseline", "reduced", "--folds",
            "0,1", "--steps", "4", "--eval-every", "2", "--config", str(toml), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "step 4/4" not in printed  # both presets reused, nothing trained
    assert json.loads((out / "experiment.json").read_text())["baseline"] == "reduced"
    rows = {r["preset"]: r for r in csv.DictReader((out / "comparison.csv").open())}
    assert list(rows) == ["reduced", "seed"]  # the baseline first
    assert rows["reduced"]["mcnemar_p"] == "" and rows["reduced"]["t_test_p"] == ""
    # The tests are symmetric: seed against reduced has the counts of reduced against seed
    # swapped and the same p-values.
    before = {s.preset: s for s in result.summaries}["reduced"]
    b01, b10, p = before.mcnemar
    assert (int(rows["seed"]["mcnemar_b01"]), int(rows["seed"]["mcnemar_b10"])) == (b10, b01)
    assert float(rows["seed"]["mcnemar_p"]) == pytest.approx(p, abs=1e-6)  # CSV: 6 digits
    assert float(rows["seed"]["t_test_p"]) == pytest.approx(before.t_test[1], abs=1e-6)
    assert "baseline reduced" in (out / "report.md").read_text()
    with pytest.raises(ValueError, match=r"unknown preset\(s\) nope"):
        run_experiment(data, ["seed"], out, "0", TRAIN, toml, baseline="nope")


def test_unknown_preset_fails_before_training(tiny_dataset: Path, tmp_path: Path) -> None:
    logged: list[str] = []
    with pytest.raises(ValueError, match=r"unknown preset\(s\) huge; known presets: seed, reduced"):
        run_experiment(tiny_dataset, ["reduced", "huge"], tmp_path / "out", log=logged.append)
    assert not (tmp_path / "out").exists() and not logged


@pytest.mark.parametrize("tamper", ["labels.txt", "run.json", "predictions.npz"])
def test_mismatched_runs_are_refused(
    experiment: tuple[ExperimentResult, Path, Path], tmp_path: Path, tamper: str
) -> None:
    out = _linked_copy(experiment[0].out, tmp_path / "out")
    case = out / "reduced" / "case-1"
    if tamper == "labels.txt":
        write_labels(case, ["person_0", "person_1", "person_2", "someone_else"])
        message = "labels.txt differs from .*seed/case-0/labels.txt"
    elif tamper == "run.json":
        run = json.loads((case / "run.json").read_text())
        data = {**run["data"], "digest": "other content"}
        write_text_atomic(case / "run.json", json.dumps({**run, "data": data,
                                                         "data_dir": "/elsewhere"}))
        message = r"trained on other data \(/elsewhere\)"
    else:
        with np.load(case / "predictions.npz") as npz:
            arrays = dict(npz)
        (case / "predictions.npz").unlink()  # a hard link: never write through it
        np.savez(case / "predictions.npz", **{**arrays, "labels": arrays["labels"][::-1]})
        message = "hold different held-out labels"
    with pytest.raises(ValueError, match=message):
        compare_presets(out, PRESETS)


# --- error analysis ---------------------------------------------------------------------------


def _fake_case(folder: Path, labels: list[int], predicted: list[int]) -> None:
    """A finished run folder with chosen labels and predictions (confidence 0.6 on the guess)."""
    probabilities = np.full((len(labels), 3), 0.2)
    probabilities[np.arange(len(labels)), predicted] = 0.6
    folder.mkdir(parents=True)
    write_labels(folder, ["ann", "bob", "cy"])
    np.savez(folder / "predictions.npz", step=4, labels=np.array(labels),
             probabilities=probabilities)


def test_per_person_accuracy_and_confusion_by_hand(tmp_path: Path) -> None:
    cv = tmp_path / "cv"
    _fake_case(cv / "case-0", labels=[0, 0, 1, 2], predicted=[0, 1, 1, 2])
    _fake_case(cv / "case-2", labels=[0, 1, 1, 2, 2], predicted=[0, 0, 1, 0, 2])
    (cv / "cv.json").write_text(json.dumps({"cases": [0, 2]}))
    pooled = collect_predictions(cv)
    assert pooled.labels.tolist() == [0, 0, 1, 2, 0, 1, 1, 2, 2]
    images, correct = per_person_accuracy(pooled.labels, pooled.predicted, 3)
    # ann: 3 images, 2 right; bob: 3 images, 2 right (one taken for ann); cy: 3, 2 right.
    assert images.tolist() == [3, 3, 3] and correct.tolist() == [2, 2, 2]
    matrix = confusion_matrix(pooled.labels, pooled.predicted, 3)
    assert matrix.tolist() == [[2, 1, 0], [1, 2, 0], [1, 0, 2]]
    np.testing.assert_allclose(row_normalize(matrix), matrix / 3)
    write_per_person_csv(pooled, tmp_path / "per_person.csv")
    rows = list(csv.reader((tmp_path / "per_person.csv").open()))
    assert rows[0] == ["person", "images", "correct", "accuracy", "most_confused_with", "times"]
    assert rows[1] == ["ann", "3", "2", "0.666667", "bob", "1"]
    assert rows[3] == ["cy", "3", "2", "0.666667", "ann", "1"]


def test_error_report_of_a_cv_folder(experiment: tuple[ExperimentResult, Path, Path]) -> None:
    cv = experiment[0].out / "seed"
    summary = save_error_report(cv)
    pooled = collect_predictions(cv)
    wrong = int((~pooled.correct).sum())
    assert len(pooled.labels) == 2 * 32  # two held-out shards of 4 people x 8 crops
    assert f"Misclassified {wrong} of 64 held-out images" in summary
    rows = list(csv.DictReader((cv / "per_person.csv").open()))
    assert [r["person"] for r in rows] == [f"person_{c}" for c in range(4)]
    assert sum(int(r["images"]) for r in rows) == 64
    assert sum(int(r["correct"]) for r in rows) == 64 - wrong
    for name in ("confusion.png", "errors.png"):
        assert (cv / name).read_bytes()[:8] == PNG
