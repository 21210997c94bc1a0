"""Cross-validation and experiment folders: ``cv.json`` (checked against the data and config
before any work), the case folders, ``experiment.json``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from facefold.atomic import write_json_atomic
from facefold.config import Config
from facefold.runs.files import read_json_object, read_run_info
from facefold.runs.identity import identity_differences, mismatch_error
from facefold.runs.names import (
    CASE_PREFIX,
    CV_FILE,
    EXPERIMENT_FILE,
    PREDICTIONS_FILE,
    case_dir,
    case_index,
    is_cv,
    is_run,
)


def cv_info(data: dict[str, Any], data_dir: str | Path, cases: Sequence[int], config: Config,
            **extra: Any) -> dict[str, Any]:
    """The content of ``cv.json``."""
    return {"data": data, "data_dir": str(Path(data_dir).resolve()), "cases": list(cases),
            "config": config.to_dict(), **extra}


def check_cv_dir(out: str | Path, data: dict[str, Any], config: Config,
                 restart: bool = False) -> None:
    """Refuse, before any work, a CV folder made from other data or another config
    (:class:`RunMismatchError` naming the difference), unless ``restart``."""
    path = Path(out) / CV_FILE
    if restart or not path.is_file():
        return
    existing = read_json_object(path)
    # Cases may change between calls (each case folder holds its own identity).
    existing = {key: existing[key] for key in ("data", "config") if key in existing}
    differences = identity_differences(existing, {"data": data, "config": config.to_dict()})
    if differences:
        raise mismatch_error(Path(out), "cross-validation", differences)


def write_cv_info(out: str | Path, info: dict[str, Any]) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(out) / CV_FILE, info)


def read_cv_info(out: str | Path) -> dict[str, Any]:
    """``OUT/cv.json``; ``FileNotFoundError`` saying what the folder is not."""
    path = Path(out) / CV_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {out} is not a facefold cv folder")
    return read_json_object(path)


def cv_cases(out: str | Path) -> list[int]:
    """The cases ``cv.json`` lists."""
    return [int(k) for k in read_cv_info(out)["cases"]]


def run_dirs(folder: str | Path) -> list[Path]:
    """The run folders of a CV folder (in ``cv.json`` case order), or ``[folder]`` for a run."""
    folder = Path(folder)
    if is_cv(folder):
        return [case_dir(folder, k) for k in cv_cases(folder)]
    if (folder / PREDICTIONS_FILE).is_file():
        return [folder]
    raise FileNotFoundError(f"{folder} is neither a facefold cv folder ({CV_FILE}) nor a "
                            f"finished run folder ({PREDICTIONS_FILE})")


def existing_cases(out: str | Path) -> list[tuple[int, Path]]:
    """Every ``case-K`` run folder in a CV folder, listed or not in ``cv.json``, by K."""
    found = [(k, p) for p in Path(out).glob(f"{CASE_PREFIX}*")
             if (k := case_index(p)) is not None and is_run(p)]
    return sorted(found)


def data_of(folder: str | Path) -> tuple[str, str]:
    """``(fingerprint digest or "", data_dir)`` of a run or CV folder, for "same dataset?"."""
    path = Path(folder)
    info = read_cv_info(path) if is_cv(path) else read_run_info(path)
    return (info.get("data") or {}).get("digest", ""), str(info.get("data_dir", ""))


def write_experiment_info(out: str | Path, info: dict[str, Any]) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(out) / EXPERIMENT_FILE, info)


def read_experiment_info(out: str | Path) -> dict[str, Any]:
    return read_json_object(Path(out) / EXPERIMENT_FILE)
