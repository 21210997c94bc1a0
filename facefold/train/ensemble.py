"""Ensembles: several models trained alone, their held-out probabilities averaged.

An ensemble's config names registered presets in ``model.members`` (e.g. the
``ensemble`` preset: ``fast`` + ``dlib128``); each member is an ordinary run
of its config (see :func:`facefold.models.presets.member_configs`). The
ensemble's probabilities are the plain mean of its members' softmax
probabilities, each after the member's own TTA. A run folder of an ensemble::

    RUN/run.json, config.json, labels.txt, versions.json   as for any run
    RUN/ensemble.json      the members: preset, run folder (relative to RUN), reused
    RUN/members/<preset>/  a member trained here: an ordinary, resumable run
    RUN/metrics.jsonl      one row (see below)
    RUN/predictions.npz    held-out labels and the averaged probabilities

**Reuse**: when RUN is ``OUT/<ensemble>/case-K`` of an experiment (or of
cross-validations side by side) and ``OUT/<member>/case-K`` holds a finished
run of the member's exact identity (dataset, held-out shards, config, embedding
version), that run is used and nothing is trained; otherwise the member is
trained into ``RUN/members/<member>``. An experiment runs ensembles after the
other presets, so that their members are there to reuse.

**Curve**: members evaluate at different steps (``fast`` every 500 of 2,000,
``dlib128`` every 250 of 1,000) and keep only their final predictions, so
there is no common step at which averaging partly trained members would mean
anything. The ensemble's ``metrics.jsonl`` therefore holds one row, its final
accuracy and loss, at step ``train.steps``, which the ensemble preset sets to
its longest member's step count: on the accuracy plot the ensemble is one
point at the right end, where its members' curves end. The row has no
training loss and no time per step (the members' rows have them).

``predict``, ``export`` and ``serve`` load the members and average their
probabilities the same way (see :mod:`facefold.predict`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facefold.config import Config
from facefold.data.pipeline import Split
from facefold.data.records import (
    atomic_path,
    read_labels,
    write_json_atomic,
    write_rows_atomic,
)
from facefold.embeddings.shards import SplitSource, check_inputs
from facefold.models.presets import member_configs
from facefold.train.trainer import (
    METRICS_FILE,
    Log,
    _prepare_run_dir,
    _run_identity,
    _same_run,
    read_metrics,
    train,
)

ENSEMBLE_FILE = "ensemble.json"
MEMBERS_DIR = "members"
PREDICTIONS_FILE = "predictions.npz"


def finished_run(run_dir: Path, identity: dict, steps: int) -> bool:
    """Whether ``run_dir`` holds a run of exactly ``identity`` trained to ``steps``, with its
    predictions."""
    run_file = run_dir / "run.json"
    if not run_file.is_file() or not (run_dir / PREDICTIONS_FILE).is_file():
        return False
    if _same_run(json.loads(run_file.read_text()), identity):
        return False
    rows = read_metrics(run_dir)
    return bool(rows) and rows[-1]["step"] == steps


def average_predictions(run_dirs: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (N,), mean probabilities (N, C))`` of the runs' ``predictions.npz``.

    Raises ``ValueError`` when the runs were evaluated on different images or classes.
    """
    labels, probabilities = None, []
    for run_dir in run_dirs:
        with np.load(run_dir / PREDICTIONS_FILE) as data:
            if labels is not None and not np.array_equal(labels, data["labels"]):
                raise ValueError(f"{run_dir}/{PREDICTIONS_FILE} holds other held-out labels "
                                 f"than {run_dirs[0]}: the members saw different images")
            labels = data["labels"]
            probabilities.append(data["probabilities"].astype(np.float64))
    shapes = {p.shape for p in probabilities}
    if len(shapes) != 1:
        raise ValueError(f"the members' probabilities differ in shape: {sorted(shapes)}")
    return labels, np.mean(probabilities, axis=0)


def _member_run(
    out: Path, member: Config, data_dir: Path, eval_shards: Sequence[int],
    source: SplitSource, log: Log, people: Sequence[str] | None,
) -> tuple[Path, bool]:
    """``(run folder, reused)`` of one member: the finished sibling run, else one trained here."""
    people_list = list(people) if people is not None else None
    sibling = out.parent.parent / member.preset / out.name
    identity = _run_identity(data_dir, eval_shards, member, people_list)
    if finished_run(sibling, identity, member.train.steps):
        log(f"[{out.name}] member {member.preset}: reusing the finished run {sibling}")
        return sibling, True
    run_dir = out / MEMBERS_DIR / member.preset
    log(f"[{out.name}] member {member.preset}: training into {run_dir}")
    train(data_dir, member, run_dir, eval_shards, source, log, people)
    return run_dir, False


def train_ensemble(
    data_dir: str | Path,
    config: Config,
    out: str | Path,
    eval_shards: Sequence[int] = (0,),
    splits: list[Split] | SplitSource | None = None,
    log: Log = print,
    people: Sequence[str] | None = None,
) -> list[dict]:
    """Reuse or train every member of ``config``'s ensemble, then write the averaged
    predictions and the one metrics row; returns ``[row]``.

    ``splits`` must be a :class:`SplitSource` or None (the members take different inputs).
    """
    if splits is not None and not isinstance(splits, SplitSource):
        raise ValueError("an ensemble's members take different inputs: give a SplitSource "
                         "(or nothing), not one list of splits")
    data_dir, out = Path(data_dir), Path(out)
    source = splits or SplitSource(data_dir, log)
    members = member_configs(config)
    for member in members:  # a missing extra fails before the first member trains
        check_inputs(member)
    labels = list(people) if people is not None else read_labels(data_dir)
    people_list = list(people) if people is not None else None
    _prepare_run_dir(out, _run_identity(data_dir, eval_shards, config, people_list), labels)
    entries = []
    for member in members:
        run_dir, reused = _member_run(out, member, data_dir, eval_shards, source, log, people)
        entries.append({"preset": member.preset, "run": os.path.relpath(run_dir, out),
                        "reused": reused})
    write_json_atomic(out / ENSEMBLE_FILE, {"members": entries})
    runs = [out / e["run"] for e in entries]
    y, probabilities = average_predictions(runs)
    correct = probabilities.argmax(axis=1) == y
    row = {
        "step": config.train.steps,
        "eval_accuracy": float(correct.mean()),
        "eval_loss": float(-np.log(np.maximum(probabilities[np.arange(len(y)), y], 1e-12)).mean()),
        "train_loss": None,
        "train_accuracy": None,
        "seconds_per_step": None,
        "eval_images": len(y),
        "members": {e["preset"]: read_metrics(r)[-1]["eval_accuracy"]
                    for e, r in zip(entries, runs, strict=True)},
    }
    with atomic_path(out / PREDICTIONS_FILE) as tmp, tmp.open("wb") as handle:
        np.savez(handle, step=row["step"], labels=y, probabilities=probabilities.astype(np.float32))
    write_rows_atomic(out / METRICS_FILE, [row])
    members_text = ", ".join(f"{p} {a:.4f}" for p, a in row["members"].items())
    log(f"[{out.name}] ensemble eval acc {row['eval_accuracy']:.4f} (members: {members_text})")
    return [row]
