"""Run folders as bytes, for Ray: a worker sends its run folder back whole."""

from __future__ import annotations

import json
from pathlib import Path

from facefold.atomic import atomic_path
from facefold.runs.names import METRICS_FILE, PREDICTIONS_FILE, RUN_FILE, contained


def run_files(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run folder, by path relative to it (empty when it does not exist)."""
    if not run_dir.is_dir():
        return {}
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def write_run_files(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write a run folder sent as bytes (by a Ray worker). Metrics and predictions go last,
    so a copy cut short looks unfinished, not complete. Paths stay inside ``run_dir``."""
    last = (PREDICTIONS_FILE, METRICS_FILE)
    for name in sorted(files, key=lambda n: (n in last, last.index(n) if n in last else 0, n)):
        with atomic_path(contained(run_dir, name, "file", run_dir)) as tmp:
            tmp.write_bytes(files[name])


def set_data_dir_note(files: dict[str, bytes], data_dir: str) -> None:
    """Point the ``data_dir`` note of a run sent as bytes at ``data_dir`` (the worker's copy
    of the dataset, or the driver's folder); the identity is by content and unchanged."""
    if RUN_FILE in files:
        info = json.loads(files[RUN_FILE])
        info["data_dir"] = data_dir
        files[RUN_FILE] = (json.dumps(info, indent=2) + "\n").encode()
