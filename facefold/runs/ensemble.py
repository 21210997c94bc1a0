"""The ensemble schema (``ensemble.json``) and the rules on member weights."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from facefold.atomic import write_json_atomic
from facefold.runs.files import is_finite_number, read_json_object
from facefold.runs.names import ENSEMBLE_FILE


def _ensemble_entries(path: Path, entries: Any, field: str) -> list[dict[str, Any]]:
    if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("preset"), str)
            and isinstance(e.get("run"), str) for e in entries):
        raise ValueError(f"{path}: field '{field}' must be a list of {{preset, run}} entries")
    return entries


def ensemble_member_dirs(run_dir: str | Path) -> dict[str, Path] | None:
    """``{preset: member run folder}`` of an ensemble run, or None for any other run."""
    run_dir = Path(run_dir)
    path = run_dir / ENSEMBLE_FILE
    if not path.is_file():
        return None
    entries = _ensemble_entries(path, read_json_object(path).get("members"), "members")
    return {e["preset"]: run_dir / e["run"] for e in entries}


def ensemble_weights(run_dir: str | Path) -> dict[str, float] | None:
    """``{preset: weight}`` of a weighted ensemble run (checked: :func:`check_member_weights`),
    None for an equally weighted one (its members' probabilities are plainly averaged)."""
    path = Path(run_dir) / ENSEMBLE_FILE
    entries = _ensemble_entries(path, read_json_object(path).get("members"), "members")
    return check_member_weights(entries, path)


def ensemble_inner_dirs(run_dir: str | Path) -> dict[str, Path]:
    """``{preset: inner-split run folder}`` of a weighted ensemble run (empty for any other):
    the runs whose probabilities chose the weights."""
    run_dir = Path(run_dir)
    path = run_dir / ENSEMBLE_FILE
    if not path.is_file():
        return {}
    inner = read_json_object(path).get("inner")
    if inner is None:
        return {}
    if not isinstance(inner, dict):
        raise ValueError(f"{path}: field 'inner' must be an object, got {inner!r}")
    entries = _ensemble_entries(path, inner.get("members"), "inner.members")
    return {e["preset"]: run_dir / e["run"] for e in entries}


def check_member_weights(entries: list[dict[str, Any]], where: Path) -> dict[str, float] | None:
    """The ``weight`` of each member entry (of ``ensemble.json`` or an export's
    ``export.json``) as ``{preset: weight}``, checked to be finite, >= 0 and to sum to 1;
    None when no entry has one (an equally weighted ensemble, as every ensemble before
    weights). Raises ``ValueError`` naming ``where`` when only some entries have one."""
    weights = {str(e.get("preset")): e.get("weight") for e in entries}
    if all(w is None for w in weights.values()):
        return None
    if not all(is_finite_number(w) and w >= 0 for w in weights.values()) or not np.isclose(
            sum(weights.values()), 1.0, atol=1e-6):
        raise ValueError(f"{where}: every member's 'weight' must be a number >= 0 and they "
                         f"must sum to 1, got {weights}")
    return {p: float(w) for p, w in weights.items()}


def weight_field(weights: dict[str, float] | None, preset: str) -> dict[str, float]:
    """The ``weight`` field of a member entry (``ensemble.json``, ``export.json``):
    ``{"weight": w}`` in a weighted ensemble, nothing in an equally weighted one, as
    :func:`check_member_weights` reads them."""
    return {} if weights is None else {"weight": weights[preset]}


def write_ensemble(run_dir: str | Path, members: dict[str, Path], reused: dict[str, bool],
                   weights: dict[str, float] | None = None,
                   inner: dict[str, Any] | None = None) -> None:
    """Write ``RUN/ensemble.json``: each member's run folder, relative to ``RUN``, and for a
    weighted ensemble each member's ``weight`` and how they were chosen: ``inner`` holds the
    inner-split runs' folders (``inner["members"]``, ``{preset: path}``) and the facts about
    the choice (shards, images, inner log-loss and accuracy …), written as given."""
    run_dir = Path(run_dir)
    entries = []
    for preset, path in members.items():
        entries.append({"preset": preset, "run": os.path.relpath(path, run_dir),
                        "reused": reused[preset], **weight_field(weights, preset)})
    content: dict[str, Any] = {"members": entries}
    if inner is not None:
        content["inner"] = {**inner, "members": [
            {"preset": preset, "run": os.path.relpath(path, run_dir)}
            for preset, path in inner["members"].items()]}
    write_json_atomic(run_dir / ENSEMBLE_FILE, content)
