"""K-fold cross-validation over the shards of a dataset: case k holds out shard k.

Folds are data: :func:`parse_folds` turns ``"all"`` or ``"0,3"`` into shard
indices, and each case is an ordinary training run (a
:class:`~facefold.evaluate.executor.Trial`) in ``OUT/case-K``, so a killed
cross-validation resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facefold import runs
from facefold.config import Config
from facefold.data.records import list_shards, shard_labels
from facefold.evaluate.executor import LOCAL, Executor, Trial, run_trials
from facefold.locks import locks_folders
from facefold.log import Log
from facefold.train.plan import check_batch_size, check_image_size


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
        k: {r["step"]: r["eval_accuracy"] for r in runs.read_metrics(runs.case_dir(out, k))}
        for k in cases
    }
    steps = sorted({s for rows in per_case.values() for s in rows})
    accuracy = np.full((len(steps), len(cases)), np.nan)
    for j, k in enumerate(cases):
        for i, step in enumerate(steps):
            accuracy[i, j] = per_case[k].get(step, np.nan)
    return CVResult(steps, list(cases), accuracy)


def prepare_cv_dir(data_dir: str | Path, config: Config, out: Path, cases: list[int],
                   restart: bool = False, data: dict | None = None, **extra: object) -> None:
    """Check ``OUT`` (a CV folder of other data or config is refused unless ``restart``),
    then create it and write ``OUT/cv.json`` (data fingerprint and folder, cases, config)."""
    data = data or runs.data_fingerprint(data_dir)
    runs.check_cv_dir(out, data, config, restart)
    runs.write_cv_info(out, runs.cv_info(data, data_dir, cases, config, **extra))


def cv_trials(config: Config, out: Path, cases: Sequence[int], name: str = "") -> list[Trial]:
    """One trial per case: train on every shard but k, evaluate on k, in ``OUT/case-k``.
    An ensemble's trials hand no member its folder (an experiment adds its own, see
    :func:`facefold.evaluate.experiment.run_experiment`)."""
    prefix = f"{name}/" if name else ""
    return [Trial(f"{prefix}{runs.case_dir(out, k).name}", config, k, runs.case_dir(out, k))
            for k in cases]


@locks_folders("out")
def run_cv(
    data_dir: str | Path,
    config: Config,
    out: str | Path,
    folds: str | Sequence[int] | None = None,
    log: Log = print,
    executor: Executor = LOCAL,
    restart: bool = False,
) -> CVResult:
    """Run case k (train on all shards but k, evaluate on k) for each fold; return the table.

    Writes ``OUT/case-K/`` run folders and ``OUT/cv.json``; the caller writes
    the table and plots (see :mod:`facefold.report`). Complete cases are
    skipped, interrupted ones resume; a folder of other data or config is refused
    before any work (unless ``restart``). ``executor`` runs the cases locally one
    after another, or as parallel Ray tasks.
    """
    out = Path(out)
    cases = parse_folds(folds, len(list_shards(data_dir)))
    data = runs.data_fingerprint(data_dir)
    runs.check_cv_dir(out, data, config, restart)
    trials = cv_trials(config, out, cases)

    def before() -> None:  # every case folder checked; cv.json not (re)written yet
        labels = shard_labels(data_dir)
        total = sum(len(shard) for shard in labels)
        check_batch_size(config, {f"case {k}": total - len(labels[k]) for k in cases})
        check_image_size(config, data_dir)
        prepare_cv_dir(data_dir, config, out, cases, restart, data)

    # Every case folder is checked before cv.json is (re)written: nothing stale is kept.
    run_trials(data_dir, trials, executor, log, restart, before=before)
    return collect(out, cases)


def load_cv(out: str | Path) -> CVResult:
    """Read a cross-validation folder written by :func:`run_cv`."""
    return collect(out, runs.cv_cases(out))
