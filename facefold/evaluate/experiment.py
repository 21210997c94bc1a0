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
This module returns the numbers (:class:`ExperimentResult`);
:mod:`facefold.report.comparison` writes the table and plot.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np

import facefold.models.head  # noqa: F401  (registers the custom layers checkpoints need)
from facefold import runs
from facefold.config import Config
from facefold.data.records import list_shards, read_labels
from facefold.evaluate.cv import CVResult, collect, cv_trials, load_cv, parse_folds, prepare_cv_dir
from facefold.evaluate.executor import LOCAL, Executor, run_trials
from facefold.evaluate.stats import mcnemar_test, paired_t_test
from facefold.locks import locks_folders
from facefold.log import Log
from facefold.models.families import family_of, identity_of
from facefold.models.presets import (
    describe_preset,
    list_presets,
    resolve_config,
)

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
    """Every preset's curves and summary (:func:`facefold.report.comparison.save_comparison`
    writes and prints them).

    ``curves[p]`` covers the folds preset ``p`` ran; ``baseline_curve`` covers
    every finished fold of the baseline folder (earlier runs included), which
    is what the plot draws as the dashed black reference.
    """

    out: Path
    baseline: str
    summaries: list[PresetSummary]
    curves: dict[str, CVResult]
    baseline_curve: CVResult


def check_presets(presets: Sequence[str], baseline: str = DEFAULT_BASELINE) -> list[str]:
    """The presets to run, baseline first; ``ValueError`` lists the known ones on a typo."""
    known = list_presets()
    unknown = [p for p in [baseline, *presets] if p not in known]
    if unknown:
        raise ValueError(
            f"unknown preset(s) {', '.join(unknown)}; known presets: {', '.join(known)}"
        )
    return list(dict.fromkeys([baseline, *presets]))


@locks_folders("out")
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
    restart: bool = False,
) -> ExperimentResult:
    """Cross-validate each preset into ``OUT/<preset>/`` and compare them with ``baseline``.

    ``folds`` is ``"0"``, ``"all"``, ``"0,3"`` or a list of shard indices, the
    same for every preset. Each preset's config is the preset < ``config_file``
    (its ``preset`` key is ignored) < ``overrides`` (``{"train": {"steps": 2000}}``).
    ``baseline`` (default ``seed``) is added when missing. Unknown presets and folders holding other
    runs are errors before any training (``restart`` discards such runs instead).
    ``executor`` runs the (preset, fold) trials locally one after another or as parallel
    Ray tasks; an ensemble's members are the experiment's own runs of those presets, or
    finished runs of them that an earlier experiment left in ``OUT`` (:func:`_member_runs`).
    Returns the result (the caller writes the comparison: :mod:`facefold.report.comparison`).
    """
    data_dir, out = Path(data_dir), Path(out)
    names = check_presets(presets, baseline)
    configs = {name: resolve_config(name, config_file, overrides) for name in names}
    cases = parse_folds(folds, len(list_shards(data_dir)))
    data = runs.data_fingerprint(data_dir)
    for name, config in configs.items():
        runs.check_cv_dir(runs.preset_dir(out, name), data, config, restart)
    trials = []
    for name, config in configs.items():
        log(f"preset {name}: {describe_preset(name)}")
        trials += [replace(trial, members=_member_runs(out, config, configs, data, trial.fold))
                   for trial in cv_trials(config, runs.preset_dir(out, name), cases, name)]

    def write_folders() -> None:
        runs.write_experiment_info(out, {
            "data": data, "data_dir": str(data_dir.resolve()), "presets": names,
            "baseline": baseline, "cases": cases, "overrides": overrides or {},
            "config_file": str(config_file or "")})
        for name, config in configs.items():
            prepare_cv_dir(data_dir, config, runs.preset_dir(out, name), cases, restart, data)

    run_trials(data_dir, trials, executor, log, restart, before=write_folders)
    return compare_presets(out, names, baseline)


def _member_runs(out: Path, config: Config, configs: dict[str, Config], data: dict,
                 case: int) -> dict[str, Path]:
    """The run folders, by preset, handed to an ensemble's members or a distilled run's
    teachers in case ``case`` (empty for other configs). A member (teacher) that is a preset
    of this experiment gets the experiment's own ``OUT/<member>/case-K`` (trained there when
    unfinished). Any other member gets that folder only when it already holds a finished
    run of exactly the member (left by an earlier experiment into ``OUT``), so that it is
    reused, not trained again into ``members/``; an unfinished one is never trained there,
    since its CV folder is not this experiment's."""
    handed = {}
    for member in family_of(config).dependencies(config):
        run_dir = runs.case_dir(runs.preset_dir(out, member.preset), case)
        if configs.get(member.preset) == member or runs.is_finished(
                run_dir, identity_of(data, [case], member)):
            handed[member.preset] = run_dir
    return handed


def compare_presets(
    out: str | Path, presets: Sequence[str], baseline: str = DEFAULT_BASELINE
) -> ExperimentResult:
    """Summarize the CV folders ``OUT/<preset>/`` against ``OUT/<baseline>/``.

    Raises ``ValueError`` when the runs come from different datasets or label
    lists, or were evaluated on different images.
    """
    out = Path(out)
    names = list(dict.fromkeys([baseline, *presets]))
    curves = {name: load_cv(runs.preset_dir(out, name)) for name in names}
    _check_same_data(out, curves, baseline)
    summaries = [
        _summarize(name, runs.preset_dir(out, name), curves[name],
                   runs.preset_dir(out, baseline), curves[baseline])
        for name in names
    ]
    reference = finished_cases(runs.preset_dir(out, baseline))
    if not reference.cases:  # nothing finished yet: draw what there is
        reference = curves[baseline]
    return ExperimentResult(out, baseline, summaries, curves, reference)


def _check_same_data(out: Path, curves: dict[str, CVResult], baseline: str) -> None:
    """Every case of every preset must come from the baseline's dataset and label list."""
    reference = runs.case_dir(runs.preset_dir(out, baseline), curves[baseline].cases[0])
    data = runs.data_of(reference)
    labels = read_labels(reference)
    for name, curve in curves.items():
        for k in curve.cases:
            case = runs.case_dir(runs.preset_dir(out, name), k)
            other = runs.data_of(case)
            # Same fingerprint; runs older than fingerprints compare by folder.
            same = other[0] == data[0] if other[0] or data[0] else other[1] == data[1]
            if not same:
                raise ValueError(
                    f"{case} was trained on other data ({other[1]}) than {reference} "
                    f"({data[1]}); only runs of the same dataset can be compared"
                )
            if read_labels(case) != labels:
                raise ValueError(
                    f"{case}/labels.txt differs from {reference}/labels.txt; "
                    "runs with different label lists cannot be compared"
                )


def _summarize(
    name: str, cv_dir: Path, curve: CVResult, base_dir: Path, base: CVResult
) -> PresetSummary:
    first = runs.case_dir(cv_dir, curve.cases[0])
    config = runs.read_run_config(first)
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
    seconds = [_training_seconds(runs.case_dir(cv_dir, k), step) for k in cases]
    return step, float(np.mean(seconds))


def _training_seconds(run_dir: Path, step: int) -> float:
    """Training time of a run from step 0 to ``step`` at its median seconds per step; of an
    ensemble (one evaluated step, see facefold.train.ensemble), its members' whole training,
    and a weighted one's inner-split runs' too (they are what its weights cost)."""
    members = runs.ensemble_member_dirs(run_dir)
    if members is not None:
        trained = [*members.values(), *runs.ensemble_inner_dirs(run_dir).values()]
        return sum(_training_seconds(m, runs.read_metrics(m)[-1]["step"]) for m in trained)
    return step * _median_seconds_per_step([run_dir])


def _median_seconds_per_step(run_dirs: Sequence[Path]) -> float:
    """Median ``seconds_per_step`` over the evaluation intervals (rows after step 0) of
    ``run_dirs`` (NaN if none; an ensemble's rows have none)."""
    times = [
        row["seconds_per_step"]
        for run_dir in run_dirs
        for row in runs.read_metrics(run_dir)
        if row["step"] > 0 and row.get("seconds_per_step") is not None
    ]
    return float(np.median(times)) if times else float("nan")


def model_sizes(run_dir: Path) -> tuple[int, int, int]:
    """``(parameters, weights-only bytes, full checkpoint bytes)`` of a run's last checkpoint;
    of an ensemble, the sums over its members."""
    members = runs.ensemble_member_dirs(run_dir)
    if members is not None:
        sizes = [model_sizes(member) for member in members.values()]
        return tuple(int(sum(column)) for column in zip(*sizes, strict=True))
    found = runs.latest_checkpoint(run_dir)
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
    return _median_seconds_per_step([runs.case_dir(cv_dir, k) for k in cases])


def _final_predictions(run_dir: Path) -> dict[str, np.ndarray]:
    """``predictions.npz`` of a run, checked to be from its last evaluated step."""
    data = runs.read_predictions(run_dir)
    rows = runs.read_metrics(run_dir)
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
        a_dir, b_dir = runs.case_dir(base_dir, k), runs.case_dir(other_dir, k)
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
    """Every finished ``case-K`` of a CV folder of its ``cv.json`` data and config.

    Includes cases of earlier runs that the latest ``cv.json`` no longer lists,
    so a quick one-fold experiment still draws the seed's all-fold average.
    """
    cv = runs.read_cv_info(cv_dir)
    config = Config.from_dict(cv["config"])
    data = cv.get("data") or {"digest": None}
    # What an installed extra adds to an identity (an embedding's version) was checked in
    # training; reading results must not need the extra.
    ignore = family_of(config).installed_keys
    cases = [k for k, case in runs.existing_cases(cv_dir)
             if runs.is_finished(case, identity_of(data, [k], config, installed=False), ignore)]
    return collect(cv_dir, cases)
