"""Readers and writers of a run folder's records: run.json, the config, labels, metrics,
sparsity, predictions and a distilled run's teacher targets; JSON read with errors that name
the file."""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facefold.atomic import atomic_path, write_rows_atomic
from facefold.config import Config
from facefold.data.records import (
    LABELS_FILE,
    MAX_IMAGE_SIZE,
    dataset_image_size,
    read_labels,
    read_step_rows,
)
from facefold.runs.names import (
    METRICS_FILE,
    PREDICTIONS_FILE,
    RUN_FILE,
    SPARSITY_FILE,
    TEACHER_FILE,
    VERSIONS_FILE,
)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON file that must hold an object; errors name the file."""
    data = _read_json(Path(path))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def is_finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    """``RUN/run.json``: the identity and notes."""
    return read_json_object(Path(run_dir) / RUN_FILE)


def read_run_config(run_dir: str | Path) -> Config:
    """The run's resolved config; one this facefold cannot read names both versions."""
    import facefold

    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    try:
        return Config.from_dict(info["config"])
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        made_by = "an unknown version"
        if (run_dir / VERSIONS_FILE).is_file():
            made_by = read_json_object(run_dir / VERSIONS_FILE).get("facefold", made_by)
        raise ValueError(
            f"{run_dir / RUN_FILE}: its config cannot be read by facefold "
            f"{facefold.__version__} (the run was made by facefold {made_by}): {err}"
        ) from err


def read_run_labels(run_dir: str | Path) -> list[str]:
    """The run's label list (``labels.txt``), index = class, checked against the labels its
    ``run.json`` recorded when it was made (``people``, else ``data.labels``): ``ValueError``
    naming both files when they differ (swapped lines would swap the names silently)."""
    run_dir = Path(run_dir)
    labels = read_labels(run_dir)
    info = read_run_info(run_dir)
    # A run trained on some people only (fit's calibration groups) records them as "people";
    # any other run's classes are its dataset's labels.
    data = info.get("data")
    recorded = info.get("people", data.get("labels") if isinstance(data, dict) else None)
    if recorded is not None and recorded != labels:
        pairs = zip(labels, recorded, strict=False)  # the shorter list's length at most
        differ = next((i for i, (a, b) in enumerate(pairs) if a != b),
                      min(len(labels), len(recorded)))
        raise ValueError(
            f"{run_dir / LABELS_FILE} does not match the labels {run_dir / RUN_FILE} recorded "
            f"when the run was made (first difference at line {differ + 1}): the label file "
            "was changed; restore it")
    return labels


def run_image_size(run_dir: str | Path, crop_size: int) -> int:
    """The side of the square images the run was trained on.

    Recorded in ``run.json`` by every run since fingerprints. For an older run it is read
    from the dataset the run names, with a warning, since that dataset may have changed or
    moved; when it is gone, ``crop_size + 16`` (the 112/96 convention), with a warning too.
    """
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    size = info.get("image_size")
    if isinstance(size, int) and not isinstance(size, bool) and (
            crop_size <= size <= MAX_IMAGE_SIZE):
        return size
    if size is not None:
        raise ValueError(f"{run_dir / RUN_FILE}: image_size must be an integer from the crop "
                         f"size {crop_size} to {MAX_IMAGE_SIZE}, got {size!r}")
    data_dir = Path(str(info.get("data_dir", "")))
    guess = dataset_image_size(data_dir, crop_size)
    where = f"its dataset {data_dir}" if data_dir.is_dir() else "the 112/96 convention"
    warnings.warn(f"{run_dir / RUN_FILE} records no image size (an older run): using "
                  f"{guess} px from {where}", stacklevel=2)
    return guess


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The evaluations logged in ``RUN/metrics.jsonl``, in step order (empty if none)."""
    return read_step_rows(Path(run_dir) / METRICS_FILE)


def read_sparsity(run_dir: str | Path) -> list[dict]:
    """The ReLU zero fractions logged in ``RUN/sparsity.jsonl`` (written during training by
    :class:`facefold.train.sparsity.SparsityTracker`), in step order (empty if none)."""
    return read_step_rows(Path(run_dir) / SPARSITY_FILE)


def write_metrics(run_dir: str | Path, rows: Sequence[dict]) -> None:
    write_rows_atomic(Path(run_dir) / METRICS_FILE, rows)


def read_predictions(run_dir: str | Path) -> dict[str, np.ndarray]:
    """``step``, ``labels`` (N,) and ``probabilities`` (N, C) from ``RUN/predictions.npz``."""
    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the run has not finished")
    with np.load(path) as data:
        return {key: data[key] for key in ("step", "labels", "probabilities")}


def write_predictions(run_dir: str | Path, step: int, labels: np.ndarray,
                      probabilities: np.ndarray) -> None:
    """Write ``RUN/predictions.npz`` atomically."""
    with atomic_path(Path(run_dir) / PREDICTIONS_FILE) as tmp, tmp.open("wb") as handle:
        np.savez(handle, step=step, labels=labels, probabilities=probabilities)


def read_teacher_targets(run_dir: str | Path) -> dict[str, Any]:
    """``labels`` (N,), ``targets`` (N, C) and ``teachers`` (the teacher run folders) from
    ``RUN/teacher.npz``; ``FileNotFoundError`` when it is missing."""
    path = Path(run_dir) / TEACHER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: a distilled run's teacher targets are "
                                "written before it trains (by `facefold cv` or `experiment`)")
    try:
        with np.load(path) as data:
            return {"labels": data["labels"], "targets": data["targets"],
                    "teachers": [str(t) for t in data["teachers"]]}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is unreadable ({err}): delete it to compute it again"
                         ) from err


def write_teacher_targets(run_dir: str | Path, labels: np.ndarray, targets: np.ndarray,
                          teachers: Sequence[str | Path]) -> None:
    """Write ``RUN/teacher.npz`` atomically."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with atomic_path(Path(run_dir) / TEACHER_FILE) as tmp, tmp.open("wb") as handle:
        np.savez(handle, labels=labels, targets=targets,
                 teachers=np.array([str(t) for t in teachers]))
