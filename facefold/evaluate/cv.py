"""K-fold cross-validation over the shards of a dataset: case k holds out shard k.

Folds are data: :func:`parse_folds` turns ``"all"`` or ``"0,3"`` into shard
indices, and each case is an ordinary training run (a
:class:`~facefold.evaluate.executor.Trial`) in ``OUT/case-K``, so a killed
cross-validation resumes where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facefold.config import Config
from facefold.data.records import list_shards, write_json_atomic
from facefold.evaluate.executor import LOCAL, Executor, Trial, run_trials
from facefold.train.trainer import Log, read_metrics

CASE_DIR = "case-{}"


@dataclass(frozen=True)
class CVResult:
    """Accuracy of every case at every evaluated step.

    ``accuracy[i, j]`` is the held-out accuracy of case ``cases[j]`` at step
    ``steps[i]`` (NaN where that case has not reached the step yet).
    """

    steps: list[int]
    cases: list[int]
    accuracy: np.ndarray  # (len(steps), len(cases))

    @property
    def average(self) -> np.ndarray:
        """Mean over cases at each step (NaN where any case is missing)."""
        return self.accuracy.mean(axis=1)

    def final(self) -> tuple[float, float]:
        """Mean and sample standard deviation (ddof=1; 0 for one case) at the last step."""
        last = self.accuracy[-1]
        std = float(last.std(ddof=1)) if len(last) > 1 else 0.0
        return float(last.mean()), std


def parse_folds(spec: str | Sequence[int] | None, num_shards: int) -> list[int]:
    """``None``/``"all"`` → every shard; ``"0,3"`` → [0, 3]. Errors name the bad value."""
    if spec is None or spec == "all":
        return list(range(num_shards))
    if isinstance(spec, str):
        try:
            folds = [int(part) for part in spec.split(",") if part.strip()]
        except ValueError:
            raise ValueError(
                f"--folds must be 'all' or comma-separated integers, got {spec!r}"
            ) from None
    else:
        folds = list(spec)
    bad = [k for k in folds if not 0 <= k < num_shards]
    if bad or not folds:
        raise ValueError(f"folds {bad or folds} out of range: the dataset has {num_shards} shards")
    return sorted(set(folds))


def collect(out: str | Path, cases: Sequence[int]) -> CVResult:
    """Gather the metrics of ``OUT/case-K`` for each case into a :class:`CVResult`."""
    per_case = {
        k: {r["step"]: r["eval_accuracy"] for r in read_metrics(Path(out) / CASE_DIR.format(k))}
        for k in cases
    }
    steps = sorted({s for rows in per_case.values() for s in rows})
    accuracy = np.full((len(steps), len(cases)), np.nan)
    for j, k in enumerate(cases):
        for i, step in enumerate(steps):
            accuracy[i, j] = per_case[k].get(step, np.nan)
    return CVResult(steps, list(cases), accuracy)


def prepare_cv_dir(data_dir: str | Path, config: Config, out: Path, cases: list[int]) -> None:
    """Create ``OUT`` and write ``OUT/cv.json`` (dataset, cases, config)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        out / "cv.json",
        {"data_dir": str(Path(data_dir).resolve()), "cases": cases, "config": config.to_dict()},
    )


def cv_trials(config: Config, out: Path, cases: Sequence[int], name: str = "") -> list[Trial]:
    """One trial per case: train on every shard but k, evaluate on k, in ``OUT/case-k``."""
    prefix = f"{name}/" if name else ""
    return [Trial(f"{prefix}case-{k}", config, k, out / CASE_DIR.format(k)) for k in cases]


def run_cv(
    data_dir: str | Path,
    config: Config,
    out: str | Path,
    folds: str | Sequence[int] | None = None,
    log: Log = print,
    executor: Executor = LOCAL,
) -> CVResult:
    """Run case k (train on all shards but k, evaluate on k) for each fold; return the table.

    Writes ``OUT/case-K/`` run folders and ``OUT/cv.json``; the caller writes
    the table and plots (see :mod:`facefold.report`). Complete cases are
    skipped, interrupted ones resume. ``executor`` runs the cases locally one
    after another, or as parallel Ray tasks.
    """
    out = Path(out)
    cases = parse_folds(folds, len(list_shards(data_dir)))
    prepare_cv_dir(data_dir, config, out, cases)
    run_trials(data_dir, cv_trials(config, out, cases), executor, log)
    return collect(out, cases)


def load_cv(out: str | Path) -> CVResult:
    """Read a cross-validation folder written by :func:`run_cv`."""
    path = Path(out) / "cv.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {out} is not a facefold cv folder")
    return collect(out, json.loads(path.read_text())["cases"])
