"""The life cycle of a run folder: checked before any work, created (or discarded with
``restart``) when training starts, with the notes every new run records."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from facefold.atomic import write_json_atomic
from facefold.data.records import dataset_image_size, write_labels
from facefold.runs.files import read_run_info
from facefold.runs.identity import identity_differences, mismatch_error
from facefold.runs.names import (
    CONFIG_FILE,
    INNER_DIR,
    MEMBERS_DIR,
    RUN_FILE,
    TEACHER_DIR,
    TEACHER_FILE,
    VERSIONS_FILE,
    is_run,
)


def check_run_dir(run_dir: str | Path, identity: dict[str, Any], restart: bool = False) -> bool:
    """Check, without writing, that ``run_dir`` is new, empty or a run of ``identity``.

    Returns True when it holds that run. Raises :class:`RunMismatchError` naming what
    differs (unless ``restart``: then a different run will be discarded by
    :func:`prepare_run_dir`), ``FileExistsError`` for a non-empty folder that is no run.
    """
    run_dir = Path(run_dir)
    if is_run(run_dir):
        differences = identity_differences(read_run_info(run_dir), identity)
        if differences and not restart:
            raise mismatch_error(run_dir, "run", differences)
        return not differences
    # An ensemble's folder may hold the members (and inner-split runs) trained for it before
    # its own run.json, a distilled run's its teacher's runs and targets.
    if run_dir.exists() and (not run_dir.is_dir() or any(
            p.name not in (MEMBERS_DIR, INNER_DIR, TEACHER_DIR, TEACHER_FILE)
            for p in run_dir.iterdir())):
        raise FileExistsError(f"{run_dir} exists and is not a facefold run folder: "
                              "choose a new output folder")
    return False


def prepare_run_dir(
    run_dir: str | Path, identity: dict[str, Any], labels: Sequence[str],
    notes: dict[str, Any] | None = None, versions: dict[str, str] | None = None,
    restart: bool = False,
) -> None:
    """Create the run folder, or check that an existing one is the same run.

    ``notes`` are facts about the run that are not part of its identity (where the data
    lay, the image size …), written into a new ``run.json``. With ``restart`` a folder
    holding a different run is deleted first.
    """
    run_dir = Path(run_dir)
    if check_run_dir(run_dir, identity, restart):
        return
    if is_run(run_dir):  # a different run, and restart was asked for
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / CONFIG_FILE, identity["config"])
    write_labels(run_dir, list(labels))
    write_json_atomic(run_dir / VERSIONS_FILE, versions or {})
    write_json_atomic(run_dir / RUN_FILE, {**identity, **(notes or {})})


def run_notes(data_dir: str | Path, crop_size: int) -> dict[str, Any]:
    """The notes every new run records: where its data lay and the side of its images, so
    that inference never has to read the dataset back."""
    return {"data_dir": str(Path(data_dir).resolve()),
            "image_size": dataset_image_size(data_dir, crop_size)}
