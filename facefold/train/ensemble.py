"""Ensembles: several models trained alone, their held-out probabilities averaged.

An ensemble's config names registered presets in ``model.members`` (e.g. the
``ensemble`` preset: ``fast`` + ``dlib128``); each member is an ordinary run
of its config (see :func:`facefold.models.presets.member_configs`). The
ensemble's probabilities are the plain mean of its members' softmax
probabilities, each after the member's own TTA. Besides the files of any run
(:mod:`facefold.runs`), an ensemble's run folder holds ``ensemble.json`` (each
member's run folder) and, for members trained for it, ``members/<preset>/``.

**Members are handed their folders by the caller.** An experiment or a
cross-validation that also runs preset ``fast`` hands the ensemble its
``fast`` run of the same fold (``member_dirs``); a finished run there of the
member's exact identity (data, held-out shards, config, embedding version) is
reused, an unfinished one is trained there. A member nobody handed over is
trained into ``RUN/members/<preset>``. The executor trains members as trials of
their own (in parallel under Ray) and then calls :func:`combine`.

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

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from facefold import runs
from facefold.config import Config
from facefold.data.records import read_labels
from facefold.models.families import Ensemble, SplitSource, family_of
from facefold.train.trainer import Log, Trainer, versions


def average_predictions(run_dirs: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (N,), mean probabilities (N, C))`` of the runs' predictions.

    Raises ``ValueError`` when the runs were evaluated on different images or classes.
    """
    labels, probabilities = None, []
    for run_dir in run_dirs:
        data = runs.read_predictions(run_dir)
        if labels is not None and not np.array_equal(labels, data["labels"]):
            raise ValueError(f"{run_dir}/{runs.PREDICTIONS_FILE} holds other held-out labels "
                             f"than {run_dirs[0]}: the members saw different images")
        labels = data["labels"]
        probabilities.append(data["probabilities"].astype(np.float64))
    shapes = {p.shape for p in probabilities}
    if len(shapes) != 1:
        raise ValueError(f"the members' probabilities differ in shape: {sorted(shapes)}")
    return labels, np.mean(probabilities, axis=0)


def member_runs(config: Config, out: str | Path,
                member_dirs: Mapping[str, Path] | None = None) -> list[tuple[Config, Path]]:
    """Each member's config and run folder: the one handed over in ``member_dirs`` (by
    preset name), else ``OUT/members/<preset>``."""
    family = family_of(config)
    if not isinstance(family, Ensemble):
        raise ValueError(f"preset '{config.preset}' is not an ensemble")
    handed = dict(member_dirs or {})
    return [(member, Path(handed.get(member.preset) or runs.member_dir(out, member.preset)))
            for member in family.members(config)]


def ensemble_identity(data: dict, config: Config, eval_shards: Sequence[int],
                      people: Sequence[str] | None) -> dict:
    return runs.run_identity(data, eval_shards, config, people)


def combine(
    data_dir: str | Path, config: Config, out: str | Path, eval_shards: Sequence[int],
    members: Sequence[tuple[Config, Path]], reused: Mapping[str, bool] | None = None,
    log: Log = print, people: Sequence[str] | None = None, data: dict | None = None,
    restart: bool = False,
) -> list[dict]:
    """Write the ensemble run of finished member runs: ``ensemble.json``, the averaged
    predictions and the one metrics row; returns ``[row]``."""
    data_dir, out = Path(data_dir), Path(out)
    data = data or runs.data_fingerprint(data_dir)
    labels = list(people) if people is not None else read_labels(data_dir)
    identity = ensemble_identity(data, config, eval_shards, people)
    runs.prepare_run_dir(out, identity, labels, runs.run_notes(data_dir, 0), versions(),
                         restart)
    dirs = {member.preset: path for member, path in members}
    runs.write_ensemble(out, dirs, {p: bool((reused or {}).get(p)) for p in dirs})
    y, probabilities = average_predictions(list(dirs.values()))
    correct = probabilities.argmax(axis=1) == y
    row = {
        "step": config.train.steps,
        "eval_accuracy": float(correct.mean()),
        "eval_loss": float(-np.log(np.maximum(probabilities[np.arange(len(y)), y], 1e-12)).mean()),
        "train_loss": None,
        "train_accuracy": None,
        "seconds_per_step": None,
        "eval_images": len(y),
        "members": {preset: runs.read_metrics(path)[-1]["eval_accuracy"]
                    for preset, path in dirs.items()},
    }
    runs.write_predictions(out, row["step"], y, probabilities.astype(np.float32))
    runs.write_metrics(out, [row])
    members_text = ", ".join(f"{p} {a:.4f}" for p, a in row["members"].items())
    log(f"[{out.name}] ensemble eval acc {row['eval_accuracy']:.4f} (members: {members_text})")
    return [row]


def train_ensemble(
    data_dir: str | Path,
    config: Config,
    out: str | Path,
    eval_shards: Sequence[int] = (0,),
    splits: SplitSource | None = None,
    log: Log = print,
    people: Sequence[str] | None = None,
    restart: bool = False,
    member_dirs: Mapping[str, Path] | None = None,
) -> list[dict]:
    """Reuse or train every member of ``config``'s ensemble (in ``member_dirs`` when handed,
    else in ``OUT/members/``), then :func:`combine` them; returns ``[row]``.

    ``splits`` must be a :class:`SplitSource` or None (the members take different inputs).
    """
    if splits is not None and not isinstance(splits, SplitSource):
        raise ValueError("an ensemble's members take different inputs: give a SplitSource "
                         "(or nothing), not one list of splits")
    data_dir, out = Path(data_dir), Path(out)
    family_of(config).check_available(config)  # a missing extra fails before any training
    data = runs.data_fingerprint(data_dir)
    runs.check_run_dir(out, ensemble_identity(data, config, eval_shards, people), restart)
    source = splits or SplitSource(data_dir, log)
    members = member_runs(config, out, member_dirs)
    reused = {}
    for member, run_dir in members:
        identity = runs.run_identity(data, eval_shards, member, people,
                                     family_of(member).identity(member))
        reused[member.preset] = runs.is_finished(run_dir, identity)
        if reused[member.preset]:
            log(f"[{out.name}] member {member.preset}: reusing the finished run {run_dir}")
            continue
        log(f"[{out.name}] member {member.preset}: training into {run_dir}")
        Trainer(data_dir, member, run_dir, eval_shards, source, log, people=people,
                restart=restart, data=data).run()
    return combine(data_dir, config, out, eval_shards, members, reused, log, people, data,
                   restart)
