"""Ensembles: several models trained alone, their held-out probabilities averaged.

An ensemble's config names registered presets in ``model.members`` (e.g. the
``ensemble`` preset: ``fast`` + ``dlib128``); each member is an ordinary run
of its config (see :func:`facefold.models.presets.member_configs`). The
ensemble's probabilities are the mean of its members' softmax probabilities,
each after the member's own TTA: the plain mean (``model.member_weights =
"equal"``) or a weighted one (``"inner"``, below). Besides the files of any run
(:mod:`facefold.runs`), an ensemble's run folder holds ``ensemble.json`` (each
member's run folder, and its weight) and, for members trained for it,
``members/<preset>/``.

**Members are handed their folders by the caller.** An experiment or a
cross-validation that also runs preset ``fast`` hands the ensemble its
``fast`` run of the same fold (``member_dirs``); a finished run there of the
member's exact identity (data, held-out shards, config, embedding version) is
reused, an unfinished one is trained there. A member nobody handed over is
trained into ``RUN/members/<preset>``. The executor trains members as trials of
their own (in parallel under Ray) and then calls :func:`combine`.

**Weights from an inner split** (``member_weights = "inner"``, preset
``ensemble-weighted``). Equal weights let two weak members outvote a strong
one; weights chosen on the held-out shards would make the held-out accuracy a
score of the choice itself, no longer an estimate for new pictures. So the
weights are chosen on one *training* shard, the inner shard
(:func:`inner_shards`): each member is trained once more, on the training
shards but that one, into ``RUN/inner/<preset>`` — an ordinary run whose
identity excludes the held-out shards, so it is reused and resumed like any
run — and its probabilities on the inner shard choose the weights
(:func:`fit_weights`: the most faces named right, then the least log-loss),
which are then applied to the members' ordinary runs (trained on every training
shard) on the held-out shards. One inner shard, not an inner cross-validation
over every training shard: it costs one extra training per member and fold
instead of one per training shard, and a few hundred images pin down two or
three weights. The inner runs see one shard less than the members they stand
for, so they are a little weaker; the weights are the best ones for models
trained that way.

**Curve**: members evaluate at different steps (``fast`` every 500 of 2,000,
``dlib128`` every 250 of 1,000) and keep only their final predictions, so
there is no common step at which averaging partly trained members would mean
anything. The ensemble's ``metrics.jsonl`` therefore holds one row, its final
accuracy and loss, at step ``train.steps``, which the ensemble preset sets to
its longest member's step count: on the accuracy plot the ensemble is one
point at the right end, where its members' curves end. The row has no
training loss and no time per step (the members' rows have them).

``predict``, ``export`` and ``serve`` load the members and average their
probabilities with the weights of ``ensemble.json`` (see :mod:`facefold.predict`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facefold import runs
from facefold.config import Config
from facefold.data.records import read_labels
from facefold.log import Log
from facefold.models.families import SplitSource, ensemble_of, family_of, identity_of
from facefold.models.outputs import weighted_mean
from facefold.train.trainer import Trainer, versions

# The floor of a probability inside a logarithm: a member sure of a wrong class costs
# -log(1e-12) = 27.6 nats for that image instead of an infinite loss.
PROBABILITY_FLOOR = 1e-12


def member_predictions(run_dirs: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (N,), probabilities (M, N, C))`` of M runs' predictions, in float64.

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
    return labels, np.stack(probabilities)


def average_predictions(run_dirs: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (N,), mean probabilities (N, C))`` of the runs' predictions.

    Raises ``ValueError`` when the runs were evaluated on different images or classes.
    """
    labels, probabilities = member_predictions(run_dirs)
    return labels, np.mean(list(probabilities), axis=0)


def log_loss_and_accuracy(labels: np.ndarray, probabilities: np.ndarray) -> tuple[float, float]:
    """Mean ``-log p(true class)`` (floored at :data:`PROBABILITY_FLOOR`) and accuracy of
    probabilities (N, C)."""
    true = probabilities[np.arange(len(labels)), labels]
    return (float(-np.log(np.maximum(true, PROBABILITY_FLOOR)).mean()),
            float((probabilities.argmax(axis=1) == labels).mean()))


def simplex_grid(count: int, resolution: int) -> np.ndarray:
    """Every weight vector of ``count`` members whose weights are multiples of
    ``1 / resolution`` and sum to 1: ``(C(resolution + count - 1, count - 1), count)``, in
    lexicographic order."""
    rows = [c for c in itertools.product(range(resolution + 1), repeat=count - 1)
            if sum(c) <= resolution]
    grid = np.array([[*c, resolution - sum(c)] for c in rows], np.float64)
    return grid / resolution


def fit_weights(labels: np.ndarray, probabilities: np.ndarray, resolution: int = 20,
                max_points: int = 5_000) -> np.ndarray:
    """Member weights (M,) on the probability simplex (>= 0, sum 1) for the weighted mean of
    ``probabilities`` (M, N, C): of every weight vector on a grid of step ``1 / resolution``
    (:func:`simplex_grid`), the one whose mean names the most ``labels`` (N,) right; among
    those, the one of least log-loss; among those, the one nearest equal weights.

    Why accuracy first and not the log-loss alone: the log-loss of a weighted *mean* rewards
    confident members, and members trained with label smoothing are all underconfident by
    design (their mean top probability stays well below their accuracy), so
    the least log-loss can give a member no weight at all although averaging it in names
    more faces right — which is what an ensemble is for, and what it is scored on. The
    log-loss still decides between weights that name the same faces (a plateau of accuracy
    is wide on a few hundred images). A grid, not a solver: accuracy is a step function of
    the weights, and a grid of 1/20 is exact on it, deterministic, and fine enough for an
    inner shard of a few hundred images. It is made coarser for many members, so that it
    has at most ``max_points`` points (1/20 up to 4 members).
    """
    probabilities = np.asarray(probabilities, np.float64)
    count = probabilities.shape[0]
    while resolution > 1 and math.comb(resolution + count - 1, count - 1) > max_points:
        resolution -= 1
    grid = simplex_grid(count, resolution)
    scores = []  # (accuracy, -log-loss, -distance to equal) of each grid point
    for weights in grid:
        loss, accuracy = log_loss_and_accuracy(labels, weighted_mean(probabilities, weights))
        scores.append((accuracy, -round(loss, 12), -np.abs(weights - 1.0 / count).sum()))
    return grid[max(range(len(grid)), key=scores.__getitem__)]


def weights_and_facts(labels: np.ndarray, probabilities: np.ndarray
                      ) -> tuple[np.ndarray, dict[str, Any]]:
    """:func:`fit_weights`'s choice on ``probabilities`` (M, N, C) and how it scores there:
    the number of images and the log-loss and accuracy with these weights and with equal
    ones (the facts ``ensemble.json`` and a model card keep)."""
    weights = fit_weights(labels, probabilities)
    loss, accuracy = log_loss_and_accuracy(labels, weighted_mean(probabilities, weights))
    equal_loss, equal_accuracy = log_loss_and_accuracy(labels, probabilities.mean(axis=0))
    return weights, {"images": len(labels), "log_loss": loss, "accuracy": accuracy,
                     "equal_log_loss": equal_loss, "equal_accuracy": equal_accuracy}


def inner_shards(eval_shards: Sequence[int], num_shards: int) -> list[int]:
    """The inner shard that chooses a weighted ensemble's weights: the first shard after the
    last held-out one (cyclically) that is not held out, so every fold of a cross-validation
    gets another one. Needs two training shards (one to train on, one to weigh on); raises
    ``ValueError`` naming the shards otherwise."""
    held_out = set(eval_shards)
    if num_shards - len(held_out) < 2:
        raise ValueError(
            f"a weighted ensemble (model.member_weights = \"inner\") needs at least two "
            f"training shards, one to train its inner runs on and one to weigh them on; "
            f"holding out {sorted(held_out)} of {num_shards} shards leaves "
            f"{num_shards - len(held_out)}")
    start = max(held_out) + 1
    return [next(k % num_shards for k in range(start, start + num_shards)
                 if k % num_shards not in held_out)]


def member_runs(config: Config, out: str | Path,
                member_dirs: Mapping[str, Path] | None = None) -> list[tuple[Config, Path]]:
    """Each member's config and run folder: the one handed over in ``member_dirs`` (by
    preset name), else ``OUT/members/<preset>``."""
    return ensemble_of(config).dependency_runs(config, out, member_dirs)


def inner_runs(config: Config, out: str | Path) -> list[tuple[Config, Path]]:
    """Each member's config and inner-split run folder ``OUT/inner/<preset>`` for a weighted
    ensemble; empty for an equally weighted one (it needs none)."""
    if not family_of(config).weighs_on_inner_split(config):
        return []
    return [(member, runs.inner_dir(out, member.preset)) for member, _ in member_runs(config, out)]


def inner_identity(data: dict, member: Config, eval_shards: Sequence[int],
                   people: Sequence[str] | None = None) -> dict:
    """The identity of a member's inner-split run for the held-out ``eval_shards``: held out
    the inner shard, excluded the ensemble's held-out shards."""
    return identity_of(data, inner_shards(eval_shards, len(data["shards"])), member, people,
                       eval_shards)


def choose_weights(
    data: dict, eval_shards: Sequence[int], inner: Sequence[tuple[Config, Path]],
    people: Sequence[str] | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """``({preset: weight}, facts)`` from the members' finished inner-split runs.

    Each run must be exactly its :func:`inner_identity` (the inner shard held out, the
    ensemble's held-out shards excluded), so no held-out image reaches the choice;
    ``ValueError`` names a run that is not. ``facts`` (for ``ensemble.json``) are the inner
    and excluded shards, the number of images, and the inner log-loss and accuracy with
    these weights and with equal ones.
    """
    for member, path in inner:
        if not runs.is_finished(path, inner_identity(data, member, eval_shards, people)):
            raise ValueError(f"{path} is not a finished inner-split run of member "
                             f"{member.preset} (trained without held-out shards "
                             f"{list(eval_shards)}): the weights cannot be chosen")
    labels, probabilities = member_predictions([path for _, path in inner])
    weights, scores = weights_and_facts(labels, probabilities)
    facts = {
        "members": {member.preset: path for member, path in inner},
        "eval_shards": inner_shards(eval_shards, len(data["shards"])),
        "excluded_shards": sorted(eval_shards),
        **scores,
    }
    return {m.preset: float(w) for (m, _), w in zip(inner, weights, strict=True)}, facts


def combine(
    data_dir: str | Path, config: Config, out: str | Path, eval_shards: Sequence[int],
    members: Sequence[tuple[Config, Path]], reused: Mapping[str, bool] | None = None,
    log: Log = print, people: Sequence[str] | None = None, data: dict | None = None,
    restart: bool = False, inner: Sequence[tuple[Config, Path]] = (),
) -> list[dict]:
    """Write the ensemble run of finished member runs: ``ensemble.json``, the averaged
    predictions and the one metrics row; returns ``[row]``. A weighted ensemble also needs
    its members' finished ``inner`` runs (:func:`inner_runs`), which choose the weights."""
    data_dir, out = Path(data_dir), Path(out)
    data = data or runs.data_fingerprint(data_dir)
    labels = list(people) if people is not None else read_labels(data_dir)
    identity = identity_of(data, eval_shards, config, people)
    weighted = family_of(config).weighs_on_inner_split(config)
    if weighted and len(inner) != len(members):
        raise ValueError(f"a weighted ensemble needs an inner-split run of each of its "
                         f"{len(members)} members, got {len(inner)}")
    runs.prepare_run_dir(out, identity, labels, runs.run_notes(data_dir, 0), versions(),
                         restart)
    dirs = {member.preset: path for member, path in members}
    y, probabilities = member_predictions(list(dirs.values()))
    weights, facts = None, None
    if weighted:
        weights, facts = choose_weights(data, eval_shards, inner, people)
        mean = weighted_mean(probabilities, np.array([weights[p] for p in dirs]))
    else:
        mean = np.mean(list(probabilities), axis=0)
    runs.write_ensemble(out, dirs, {p: bool((reused or {}).get(p)) for p in dirs}, weights,
                        facts)
    loss, accuracy = log_loss_and_accuracy(y, mean)
    row = {
        "step": config.train.steps,
        "eval_accuracy": accuracy,
        "eval_loss": loss,
        "train_loss": None,
        "train_accuracy": None,
        "seconds_per_step": None,
        "eval_images": len(y),
        "members": {preset: runs.read_metrics(path)[-1]["eval_accuracy"]
                    for preset, path in dirs.items()},
    }
    if weights is not None:
        row["weights"] = weights
    runs.write_predictions(out, row["step"], y, mean.astype(np.float32))
    runs.write_metrics(out, [row])
    if facts is not None:
        log(_weights_line(out.name, weights or {}, facts))
    members_text = ", ".join(f"{p} {a:.4f}" for p, a in row["members"].items())
    log(f"[{out.name}] ensemble eval acc {row['eval_accuracy']:.4f} (members: {members_text})")
    return [row]


def _weights_line(name: str, weights: dict[str, float], facts: dict[str, Any]) -> str:
    """The log line of a weighted ensemble's choice."""
    shards = ", ".join(map(str, facts["eval_shards"]))
    chosen = ", ".join(f"{p} {w:.3f}" for p, w in weights.items())
    return (f"[{name}] weights {chosen}, chosen on inner shard {shards} "
            f"({facts['images']} images): log-loss {facts['log_loss']:.4f} "
            f"(equal weights {facts['equal_log_loss']:.4f}), accuracy {facts['accuracy']:.4f} "
            f"(equal {facts['equal_accuracy']:.4f})")


def _reuse_or_train(
    data_dir: Path, member: Config, run_dir: Path, eval_shards: Sequence[int],
    excluded: Sequence[int], identity: dict, source: SplitSource, log: Log, name: str,
    people: Sequence[str] | None, restart: bool, data: dict,
) -> bool:
    """Reuse the finished run of ``identity`` in ``run_dir`` (True) or train it there;
    ``name`` starts the log lines (``[case-0] member fast``)."""
    if runs.is_finished(run_dir, identity):
        log(f"{name}: reusing the finished run {run_dir}")
        return True
    log(f"{name}: training into {run_dir}")
    Trainer(data_dir, member, run_dir, eval_shards, source, log, people=people,
            restart=restart, data=data, excluded_shards=excluded).run()
    return False


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
    else in ``OUT/members/``) and, weighted, every member's inner-split run (in
    ``OUT/inner/``), then :func:`combine` them; returns ``[row]``.

    ``splits`` must be a :class:`SplitSource` or None (the members take different inputs).
    """
    if splits is not None and not isinstance(splits, SplitSource):
        raise ValueError("an ensemble's members take different inputs: give a SplitSource "
                         "(or nothing), not one list of splits")
    data_dir, out = Path(data_dir), Path(out)
    family_of(config).check_available(config)  # a missing extra fails before any training
    data = runs.data_fingerprint(data_dir)
    runs.check_run_dir(out, identity_of(data, eval_shards, config, people), restart)
    inner = inner_runs(config, out)
    if inner:  # too few shards fails before any training
        inner_eval = inner_shards(eval_shards, len(data["shards"]))
    source = splits or SplitSource(data_dir, log)
    members = member_runs(config, out, member_dirs)
    reused = {}
    for member, run_dir in members:
        identity = identity_of(data, eval_shards, member, people)
        reused[member.preset] = _reuse_or_train(
            data_dir, member, run_dir, eval_shards, (), identity, source, log,
            f"[{out.name}] member {member.preset}", people, restart, data)
    for member, run_dir in inner:
        _reuse_or_train(data_dir, member, run_dir, inner_eval, eval_shards,
                        inner_identity(data, member, eval_shards, people), source, log,
                        f"[{out.name}] inner run of {member.preset}", people, restart, data)
    return combine(data_dir, config, out, eval_shards, members, reused, log, people, data,
                   restart, inner)
