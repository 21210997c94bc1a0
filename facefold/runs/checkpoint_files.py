"""A run's checkpoints: their paths, the ones of ours in a folder, the newest whole one."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

from facefold.runs.names import (
    CHECKPOINT_DIR,
    CHECKPOINT_MEMBERS,
    CHECKPOINT_PREFIX,
    CHECKPOINT_SUFFIX,
)


def _checkpoint_step(path: Path) -> int | None:
    """The step of a file named like one of our checkpoints, else None (not ours)."""
    name = path.name
    if not (name.startswith(CHECKPOINT_PREFIX) and name.endswith(CHECKPOINT_SUFFIX)):
        return None
    digits = name[len(CHECKPOINT_PREFIX): -len(CHECKPOINT_SUFFIX)]
    return int(digits) if digits.isdigit() else None


def _readable_checkpoint(path: Path) -> bool:
    """Cheap check that a ``.keras`` file is whole: a zip whose directory lists the model's
    config and weights (a truncated file loses the directory at its end)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return names >= CHECKPOINT_MEMBERS


def checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every file of ours in ``RUN/checkpoints``, by step; other files
    (a stray ``step-final.keras``, editor backups, partial saves) are ignored."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(step, p) for p in folder.iterdir() if (step := _checkpoint_step(p)) is not None]
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> tuple[int, Path] | None:
    """``(step, path)`` of the newest whole checkpoint of a run folder, or None.

    An unreadable newest checkpoint (truncated, say by a full disk) is skipped with a
    warning, so that a run resumes from the one before it.
    """
    for step, path in reversed(checkpoints(run_dir)):
        if _readable_checkpoint(path):
            return step, path
        warnings.warn(f"{path} is not a whole checkpoint (truncated or corrupt): skipped",
                      stacklevel=2)
    return None


def newest_checkpoint(run_dir: str | Path) -> tuple[int, Path] | None:
    """``(step, path)`` of the newest checkpoint, for inference, or None when there is none.

    Unlike :func:`latest_checkpoint` (resuming), an unreadable newest checkpoint is an error
    (``ValueError`` naming it): an earlier one holds other weights than the ones the run's
    threshold and centroids were computed with, down to the untrained step 0.
    """
    found = checkpoints(run_dir)
    if not found:
        return None
    step, path = found[-1]
    if not _readable_checkpoint(path):
        raise ValueError(f"{path} is not a whole checkpoint (truncated or corrupt): the model "
                         "cannot be used; restore the file, or train the run again")
    return step, path
