"""Compare presets: one cross-validation per preset, one table and one plot against a baseline.

An experiment folder holds::

    OUT/experiment.json     dataset, presets, baseline, folds, overrides
    OUT/<preset>/           an ordinary CV folder per preset (resumes; reused when complete)
    OUT/comparison.csv      one row per preset (see :class:`PresetSummary`)
    OUT/comparison.png      every preset's average accuracy curve against the baseline's

The baseline is ``seed`` (the 2016 model) unless another preset is named, e.g.
``fast`` to ask what each of its ablations changes. Significance against it uses the
folds both ran: a paired t-test over per-fold final accuracies and an exact
McNemar test over the pooled held-out images (see :mod:`facefold.evaluate.stats`).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

import facefold.models.head  # noqa: F401  (registers the custom layers checkpoints need)
from facefold.config import Config, resolve_config
from facefold.data.records import list_shards, read_labels, write_json_atomic
from facefold.evaluate.cv import (
    CASE_DIR,
    CVResult,
    collect,
    cv_trials,
    load_cv,
    parse_folds,
    prepare_cv_dir,
)
from facefold.evaluate.errors import read_predictions
from facefold.evaluate.executor import LOCAL, Executor, run_trials
from facefold.evaluate.stats import mcnemar_test, paired_t_test
from facefold.models.presets import describe_preset, list_presets
from facefold.train.ensemble import ENSEMBLE_FILE
from facefold.train.trainer import Log, latest_checkpoint, read_metrics

DEFAULT_BASELINE = "seed"


@dataclass(frozen=True)
class PresetSummary:
    """One row of the comparison.

    ``accuracy_mean``/``accuracy_std``: final held-out accuracy, mean and
    sample std over ``cases``. ``parameters``: ``model.count_params()``.
    ``weights_bytes``: a ``.weights.h5`` of the final model; ``checkpoint_bytes``:
    the last ``.keras`` checkpoint (model + optimizer state), both of the first
    case. ``seconds_per_step``: median over every evaluation interval of every
    case (a median, so that an interval slowed by a paused or contended process
    does not stand for the preset's speed); ``images_per_second`` = batch size /
    seconds per step. ``t_test`` ``(t, p)`` and ``mcnemar`` ``(b01, b10, p)``
    compare with the baseline on the folds both ran (None for the baseline
    itself; ``t_test`` also None for a single common fold). ``b01`` counts
    images the baseline got wrong and this preset right. ``steps_to_baseline``
    and ``seconds_to_baseline``: the first evaluated step at which this preset's
    accuracy, averaged over the folds both ran, reaches the baseline's final
    accuracy averaged over the same folds, and the training time up to it (that
    many steps at each run's median seconds per step, mean over those folds);
    None when it never does or no fold is shared.
    """

    preset: str
    cases: list[int]
    accuracy_mean: float
    accuracy_std: float
    parameters: int
    weights_bytes: int
    checkpoint_bytes: int
    seconds_per_step: float
    images_per_second: float
    t_test: tuple[float, float] | None
    mcnemar: tuple[int, int, float] | None
    steps_to_baseline: int | None = None
    seconds_to_baseline: float | None = None


@dataclass(frozen=True)
class ExperimentResult:
    """Every preset's curves and summary; ``table`` is the printed comparison.

    ``curves[p]`` covers the folds preset ``p`` ran; ``baseline_curve`` covers
    every finished fold of the baseline folder (earlier runs included), which
    is what the plot draws as the dashed black reference.
    """

    out: Path
    baseline: str
    summaries: list[PresetSummary]
    curves: dict[str, CVResult]
    baseline_curve: CVResult
    table: str = ""


def check_presets(presets: Sequence[str], baseline: str = DEFAULT_BASELINE) -> list[str]:
    """The presets to run, baseline first; ``ValueError`` lists the known ones on a typo."""
    known = list_presets()
    unknown = [p for p in [baseline, *presets] if p not in known]
    if unknown:
        raise ValueError(
            f"unknown preset(s) {', '.join(unknown)}; known presets: {', '.join(known)}"
        )
    return list(dict.fromkeys([baseline, *presets]))


def _check_existing(cv_dir: Path, data_dir: Path, config: Config) -> None:
    """Refuse, before any training, an existing preset folder made from other data or config."""
    path = cv_dir / "cv.json"
    if not path.is_file():
        return
    existing = json.loads(path.read_text())
    if existing.get("data_dir") != str(data_dir.resolve()):
        raise ValueError(
            f"{path}: that cross-validation used dataset {existing.get('data_dir')}, "
            f"not {data_dir.resolve()}; choose a new output folder"
        )
    try:
        same = Config.from_dict(existing["config"]) == config
    except (KeyError, ValueError):
        same = False
    if not same:
        raise ValueError(
            f"{path}: that cross-validation used another config for preset "
            f"'{config.preset}'; choose a new output folder or the same options"
        )


def run_experiment(
    data_dir: str | Path,
    presets: Sequence[str],
    out: str | Path,
    folds: str | Sequence[int] | None = "0",
    overrides: dict[str, dict[str, Any]] | None = None,
    config_file: str | Path | None = None,
    log: Log = print,
    executor: Executor = LOCAL,
    baseline: str = DEFAULT_BASELINE,
) -> ExperimentResult:
    """Cross-validate each preset into ``OUT/<preset>/`` and compare them with ``baseline``.

    ``folds`` is ``"0"``, ``"all"``, ``"0,3"`` or a list of shard indices, the
    same for every preset. Each preset's config is the preset < ``config_file``
    (its ``preset`` key is ignored) < ``overrides`` (``{"train": {"steps": 2000}}``).
    ``baseline`` (default ``seed``) is added when missing. Unknown presets and folders holding other
    runs are errors before any training. ``executor`` runs the (preset, fold)
    trials locally one after another or as parallel Ray tasks. Writes ``OUT/comparison.csv`` and
    ``.png``, logs the table, and returns the result.
    """
    data_dir, out = Path(data_dir), Path(out)
    names = check_presets(presets, baseline)
    configs = {name: resolve_config(name, config_file, overrides) for name in names}
    cases = parse_folds(folds, len(list_shards(data_dir)))
    for name, config in configs.items():
        _check_existing(out / name, data_dir, config)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        out / "experiment.json",
        {"data_dir": str(data_dir.resolve()), "presets": names, "baseline": baseline,
         "cases": cases, "overrides": overrides or {}, "config_file": str(config_file or "")},
    )
    trials = []
    for name, config in configs.items():
        log(f"preset {name}: {describe_preset(name)}")
        prepare_cv_dir(data_dir, config, out / name, cases)
        trials += cv_trials(config, out / name, cases, name)
    # Ensembles last, so that they reuse their members' runs of this experiment.
    trials.sort(key=lambda trial: bool(trial.config.model.members))
    run_trials(data_dir, trials, executor, log)  # every (preset, fold) is one trial
    result = compare_presets(out, names, baseline)
    log(result.table)
    return result


def compare_presets(
    out: str | Path, presets: Sequence[str], baseline: str = DEFAULT_BASELINE
) -> ExperimentResult:
    """Summarize the CV folders ``OUT/<preset>/`` against ``OUT/<baseline>/`` and write the
    comparison (``comparison.csv`` and ``.png``; the table is ``result.table``).

    Raises ``ValueError`` when the runs come from different datasets or label
    lists, or were evaluated on different images.
    """
    out = Path(out)
    names = list(dict.fromkeys([baseline, *presets]))
    curves = {name: load_cv(out / name) for name in names}
    _check_same_data(out, curves, baseline)
    summaries = [
        _summarize(name, out / name, curves[name], out / baseline, curves[baseline])
        for name in names
    ]
    reference = finished_cases(out / baseline)
    if not reference.cases:  # nothing finished yet: draw what there is
        reference = curves[baseline]
    result = ExperimentResult(out, baseline, summaries, curves, reference)
    from facefold.report.comparison import save_comparison  # report builds on evaluate

    return dataclasses.replace(result, table=save_comparison(result, out))


def _check_same_data(out: Path, curves: dict[str, CVResult], baseline: str) -> None:
    """Every case of every preset must come from the baseline's dataset and label list."""
    reference = out / baseline / CASE_DIR.format(curves[baseline].cases[0])
    data = json.loads((reference / "run.json").read_text())["data_dir"]
    labels = read_labels(reference)
    for name, curve in curves.items():
        for k in curve.cases:
            case_dir = out / name / CASE_DIR.format(k)
            other = json.loads((case_dir / "run.json").read_text())["data_dir"]
            if other != data:
                raise ValueError(
                    f"{case_dir} was trained on dataset {other}, but {reference} on {data}; "
                    "only runs of the same dataset can be compared"
                )
            if read_labels(case_dir) != labels:
                raise ValueError(
                    f"{case_dir}/labels.txt differs from {reference}/labels.txt; "
                    "runs with different label lists cannot be compared"
                )


def _summarize(
    name: str, cv_dir: Path, curve: CVResult, base_dir: Path, base: CVResult
) -> PresetSummary:
    first = cv_dir / CASE_DIR.format(curve.cases[0])
    config = Config.from_dict(json.loads((first / "config.json").read_text()))
    parameters, weights_bytes, checkpoint_bytes = model_sizes(first)
    seconds = seconds_per_step(cv_dir, curve.cases)
    mean, std = curve.final()
    common = [k for k in curve.cases if k in base.cases]
    t_test = mcnemar = None
    if cv_dir != base_dir and common:
        t_test = paired_t_test(
            [base.accuracy[-1, base.cases.index(k)] for k in common],
            [curve.accuracy[-1, curve.cases.index(k)] for k in common],
        )
        mcnemar = mcnemar_test(*pooled_correct(base_dir, cv_dir, common))
    reached = time_to_accuracy(cv_dir, curve, common, _final_on(base, common)) if common else None
    return PresetSummary(
        name, list(curve.cases), mean, std, parameters, weights_bytes, checkpoint_bytes,
        seconds, config.train.batch_size / seconds if seconds > 0 else float("nan"),
        t_test, mcnemar, *(reached or (None, None)),
    )


def _final_on(curve: CVResult, cases: Sequence[int]) -> float:
    """The final accuracy of ``curve`` averaged over ``cases``."""
    return float(np.mean([curve.accuracy[-1, curve.cases.index(k)] for k in cases]))


def time_to_accuracy(
    cv_dir: Path, curve: CVResult, cases: Sequence[int], target: float
) -> tuple[int, float] | None:
    """``(step, seconds)``: the first evaluated step at which ``curve`` averaged over ``cases``
    reaches ``target``, and the training time up to it (``step`` x the run's median
    ``seconds_per_step`` from ``metrics.jsonl``, mean over ``cases``); None when it never
    does. Evaluation time is not counted."""
    columns = [curve.cases.index(k) for k in cases]
    average = curve.accuracy[:, columns].mean(axis=1)
    hits = np.flatnonzero(average >= target - 1e-9)  # tolerate float noise in the means
    if not hits.size:
        return None
    step = curve.steps[hits[0]]
    seconds = [_training_seconds(cv_dir / CASE_DIR.format(k), step) for k in cases]
    return step, float(np.mean(seconds))


def _training_seconds(run_dir: Path, step: int) -> float:
    """Training time of a run from step 0 to ``step`` at its median seconds per step; of an
    ensemble (one evaluated step, see facefold.train.ensemble), its members' whole training."""
    if (run_dir / ENSEMBLE_FILE).is_file():
        entries = json.loads((run_dir / ENSEMBLE_FILE).read_text())["members"]
        members = [run_dir / entry["run"] for entry in entries]
        return sum(_training_seconds(m, read_metrics(m)[-1]["step"]) for m in members)
    return step * _median_seconds_per_step([run_dir])


def _median_seconds_per_step(run_dirs: Sequence[Path]) -> float:
    """Median ``seconds_per_step`` over the evaluation intervals (rows after step 0) of
    ``run_dirs`` (NaN if none; an ensemble's rows have none)."""
    times = [
        row["seconds_per_step"]
        for run_dir in run_dirs
        for row in read_metrics(run_dir)
        if row["step"] > 0 and row.get("seconds_per_step") is not None
    ]
    return float(np.median(times)) if times else float("nan")


def model_sizes(run_dir: Path) -> tuple[int, int, int]:
    """``(parameters, weights-only bytes, full checkpoint bytes)`` of a run's last checkpoint;
    of an ensemble, the sums over its members."""
    if (run_dir / ENSEMBLE_FILE).is_file():
        members = json.loads((run_dir / ENSEMBLE_FILE).read_text())["members"]
        sizes = [model_sizes(run_dir / member["run"]) for member in members]
        return tuple(int(sum(column)) for column in zip(*sizes, strict=True))
    found = latest_checkpoint(run_dir)
    if found is None:
        raise FileNotFoundError(f"{run_dir} holds no checkpoint: the run has not started")
    path = found[1]
    model = keras.models.load_model(path, compile=False)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model.weights.h5"
        model.save_weights(weights)
        return model.count_params(), weights.stat().st_size, path.stat().st_size


def seconds_per_step(cv_dir: Path, cases: Sequence[int]) -> float:
    """Median ``seconds_per_step`` over the evaluation intervals of ``cases`` (NaN if none)."""
    return _median_seconds_per_step([cv_dir / CASE_DIR.format(k) for k in cases])


def _final_predictions(run_dir: Path) -> dict[str, np.ndarray]:
    """``predictions.npz`` of a run, checked to be from its last evaluated step."""
    data = read_predictions(run_dir)
    rows = read_metrics(run_dir)
    if not rows or int(data["step"]) != rows[-1]["step"]:
        last = rows[-1]["step"] if rows else "nothing"
        raise ValueError(
            f"{run_dir}/predictions.npz is from step {int(data['step'])} but metrics.jsonl "
            f"ends at {last}; run the experiment again to finish the run"
        )
    return data


def pooled_correct(
    base_dir: Path, other_dir: Path, cases: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image correctness of two CV folders on the same held-out images, pooled over ``cases``.

    Raises ``ValueError`` when a case's two ``predictions.npz`` hold different labels.
    """
    correct_base, correct_other = [], []
    for k in cases:
        a_dir, b_dir = base_dir / CASE_DIR.format(k), other_dir / CASE_DIR.format(k)
        a, b = _final_predictions(a_dir), _final_predictions(b_dir)
        if not np.array_equal(a["labels"], b["labels"]):
            raise ValueError(
                f"{a_dir}/predictions.npz and {b_dir}/predictions.npz hold different "
                "held-out labels: they were not evaluated on the same images"
            )
        correct_base.append(a["probabilities"].argmax(axis=1) == a["labels"])
        correct_other.append(b["probabilities"].argmax(axis=1) == b["labels"])
    return np.concatenate(correct_base), np.concatenate(correct_other)


def finished_cases(cv_dir: Path) -> CVResult:
    """Every finished ``case-K`` of a CV folder with its ``cv.json`` dataset and config.

    Includes cases of earlier runs that the latest ``cv.json`` no longer lists,
    so a quick one-fold experiment still draws the seed's all-fold average.
    """
    cv = json.loads((cv_dir / "cv.json").read_text())
    config = Config.from_dict(cv["config"])
    cases = []
    for case_dir in cv_dir.glob(CASE_DIR.format("*")):
        index = case_dir.name.removeprefix(CASE_DIR.format(""))
        if not index.isdigit() or not (case_dir / "run.json").is_file():
            continue
        run = json.loads((case_dir / "run.json").read_text())
        try:
            same = run["data_dir"] == cv["data_dir"] and Config.from_dict(run["config"]) == config
        except (KeyError, ValueError):
            same = False
        rows = read_metrics(case_dir)
        if same and rows and rows[-1]["step"] == config.train.steps:
            cases.append(int(index))
    return collect(cv_dir, sorted(cases))
