"""``facefold fit DATA --preset P --out MODEL``: a model to deploy, trained on every shard.

A cross-validation case is trained on 5/6 of the data; the model to deploy should see all of
it. :func:`fit` trains on every shard (nothing held out) and then *calibrates* the
"unknown" decision honestly, by leave-people-out: the people are split into ``groups``
groups; for each group a model of the same config is trained without that group's people
(on every shard but one, :func:`facefold.runs.calibration_dir`) and scored on the held-out
shard's pictures of the known people and on every picture of the group's people, whom it
never saw. The scores are pooled over the groups, and for each open-set score
(:data:`facefold.models.scores.SCORES`) the threshold that accepts ``far`` of the
strangers is found; the score that names the most known faces right at that rate is chosen
— by the data, per model. The cosine score names a face by its nearest centroid, so people
can be enrolled later without retraining (:meth:`facefold.predict.Predictor.enroll`).
Verification ("same person?") gets its own threshold at ``far`` from pairs of pictures of
the strangers.

**Ensembles** fit like one network: each member is fit into ``MODEL/members/<preset>`` and
each calibration group's model is an ensemble of the same members. A weighted ensemble
(``model.member_weights = "inner"``) has its weights chosen by the rule of a
cross-validated one (:func:`facefold.train.ensemble.fit_weights`), on the calibration
models' held-out pictures of their known people: every model weighed was trained without
the pictures it is weighed on. The ensemble's features (centroids, cosine score,
verification) are its members' unit features side by side, so the cosine is the (weighted)
mean of the members' cosines (:func:`facefold.models.inference.combine_outputs`).

The model folder is an ordinary run folder plus ``threshold.json``, ``centroids.npy`` (of
every person, from all the training pictures) and a model card (``model_card.json`` and
``MODEL_CARD.md``: data and its fingerprint, people, the calibration's numbers, versions).
``predict``, ``identify``, ``verify``, ``enroll``, ``export`` and ``serve`` take it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import facefold
from facefold import runs
from facefold.config import Config
from facefold.data.pipeline import Split, concat
from facefold.data.records import read_labels, shard_labels
from facefold.evaluate.openset_cv import CaseScores, scores_of_outputs, split_people
from facefold.locks import locks_folders
from facefold.log import Log
from facefold.models.families import SplitSource, family_of, identity_of
from facefold.models.inference import combine_outputs, softmax
from facefold.models.scores import (
    CENTROID_SCORE,
    SCORES,
    auroc,
    class_centroids,
    threshold_at_far,
    unit_rows,
)
from facefold.predict import Predictor
from facefold.train.ensemble import weights_and_facts
from facefold.train.plan import check_batch_size, check_image_size
from facefold.train.trainer import CommandPlan, Trainer, versions

# The shards of a network's inputs (a CNN's pictures, an embedding head's embeddings) for
# the people a model is trained on: an ensemble's members take different inputs.
Inputs = Callable[[Config], list[Split]]
# {"logits", "features"} of a model's networks on some pictures, one dict per network.
NetworkOutputs = list[dict[str, np.ndarray]]

DEFAULT_FIT_FAR = 0.01  # one stranger in a hundred accepted as someone
# The score is chosen per model by its own calibration: the best score differs between an
# embedding head and a CNN from scratch (the scores each calibration measured, and the one it
# chose: docs/results.md, "Unknown people with facefold fit").
DEFAULT_GROUPS = 4


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` made: the model folder and its model card (a dict)."""

    model_dir: Path
    card: dict[str, Any]


def people_groups(count: int, groups: int, seed: int) -> list[list[int]]:
    """``groups`` disjoint groups of label indices covering ``count`` people, drawn with
    ``seed``; each leaves at least two people known."""
    if groups < 1:
        raise ValueError(f"--groups must be >= 1, got {groups}")
    order = np.random.default_rng(seed).permutation(count)
    split = [sorted(int(i) for i in part) for part in np.array_split(order, groups)]
    if min(len(g) for g in split) < 1 or count - max(len(g) for g in split) < 2:
        raise ValueError(f"{count} people cannot make {groups} groups of unknown people that "
                         "each leave at least 2 known: use fewer --groups")
    return split


def training_images(labels: Sequence[np.ndarray], groups: Sequence[Sequence[int]]
                    ) -> dict[str, int]:
    """The training images of each run :func:`fit` trains, by name, from every shard's
    ``labels``: the model (every shard), and calibration group ``g`` (every shard but
    ``g % shards``, without the group's people)."""
    counts = {"the model": sum(len(shard) for shard in labels)}
    for g, group in enumerate(groups):
        held_out = g % len(labels)
        counts[f"calibration group {g}"] = sum(
            int(np.isin(shard, group, invert=True).sum())
            for k, shard in enumerate(labels) if k != held_out)
    return counts


def fit_plan(config: Config, groups: int, log: Log) -> CommandPlan:
    """The training :func:`fit` does: every network of ``config`` once for the model and
    once per calibration group (an upper bound when resuming: steps an interrupted fit
    already trained count too)."""
    networks = family_of(config).networks(config)
    runs_count = len(networks) * (1 + groups)
    return CommandPlan("fit", sum(n.train.steps for n in networks) * (1 + groups),
                       runs_count, log)


def _pooled(parts: Sequence[CaseScores], far: float) -> dict[str, dict[str, float]]:
    """Per score, over every group: AUROC, the threshold at ``far``, the false-accept rate
    it reaches, the share of known faces accepted, and accepted *and* named right (by the
    classifier, or for a score that uses centroids by the nearest centroid)."""
    report = {}
    for name, score in SCORES.items():
        if not all(name in p.known for p in parts):
            continue
        known = np.concatenate([p.known[name] for p in parts])
        unknown = np.concatenate([p.unknown[name] for p in parts])
        right = np.concatenate([p.nearest_correct if score.uses_centroids else p.correct
                                for p in parts])
        threshold = threshold_at_far(unknown, far)
        accepted = known >= threshold
        report[name] = {
            "auroc": auroc(known, unknown), "threshold": threshold,
            "far": float(np.mean(unknown >= threshold)), "accepted": float(accepted.mean()),
            "known_accuracy": float((accepted & right).mean()),
        }
    return report


def _verification(parts: Sequence[CaseScores], far: float) -> dict[str, float]:
    """The verification threshold at ``far`` over pairs of pictures of people the models never
    saw (same person: a true pair; two people: a false one) and the true pairs it accepts."""
    same, other = [], []
    for part in parts:
        features = unit_rows(part.unknown_features)
        similarity = features @ features.T
        upper = np.triu_indices(len(features), k=1)
        is_same = part.unknown_labels[:, None] == part.unknown_labels[None, :]
        same.append(similarity[upper][is_same[upper]])
        other.append(similarity[upper][~is_same[upper]])
    same_all, other_all = np.concatenate(same), np.concatenate(other)
    threshold = threshold_at_far(other_all, far)
    return {"threshold": threshold, "far": float(np.mean(other_all >= threshold)),
            "true_accepts": float(np.mean(same_all >= threshold)),
            "auroc": auroc(same_all, other_all), "same_pairs": len(same_all),
            "other_pairs": len(other_all)}


def networks(config: Config, run_dir: Path) -> list[tuple[Config, Path]]:
    """The networks that make up ``config``'s model in ``run_dir`` and their run folders:
    the run itself, or an ensemble's members in ``RUN/members/<preset>``."""
    return family_of(config).network_runs(config, run_dir)


def train_model(
    data_dir: Path, config: Config, run_dir: Path, inputs: Inputs, eval_shards: Sequence[int],
    log: Log, name: str, people: Sequence[str] | None, data: dict, restart: bool = False,
    hold_out: bool = True, plan: CommandPlan | None = None,
) -> list[tuple[Config, Path]]:
    """Train (or resume, or find finished) the model of ``config`` in ``run_dir``: one run,
    or an ensemble's folder with a run per member inside; returns :func:`networks`. An
    ensemble's ``ensemble.json`` is written once its weights are known
    (:func:`write_ensemble`)."""
    found = networks(config, run_dir)
    if found != [(config, run_dir)]:  # runs of their own inside it: it needs a run.json first
        runs.prepare_run_dir(run_dir, identity_of(data, eval_shards, config, people),
                             list(people or read_labels(data_dir)), runs.run_notes(data_dir, 0),
                             versions(), restart)
    for network, path in found:
        label = name if path == run_dir else f"{name}/{network.preset}"
        Trainer(data_dir, network, path, eval_shards, inputs(network), log, name=label,
                people=people, restart=restart, data=data, hold_out=hold_out, plan=plan).run()
    return found


def by_people(inputs: Inputs, left_out: Sequence[int], count: int
              ) -> Callable[[Config], tuple[list[Split], list[Split]]]:
    """``inputs`` split into the shards of the people kept (relabelled) and of the
    ``left_out`` ones (:func:`~facefold.evaluate.openset_cv.split_people`), once per network."""
    done: dict[str, tuple[list[Split], list[Split]]] = {}

    def split(network: Config) -> tuple[list[Split], list[Split]]:
        if network.preset not in done:
            done[network.preset] = split_people(inputs(network), left_out, count)
        return done[network.preset]

    return split


def network_outputs(found: Sequence[tuple[Config, Path]], pictures: Callable[[Config], Split]
                    ) -> tuple[NetworkOutputs, np.ndarray]:
    """Each network's outputs on its own inputs of the same pictures (``pictures(network)``),
    and the pictures' labels; ``ValueError`` when two networks' inputs hold other labels
    (other pictures)."""
    outputs, labels = [], None
    for network, path in found:
        split = pictures(network)
        if labels is not None and not np.array_equal(labels, split.labels):
            raise ValueError(f"the inputs of {network.preset} hold other pictures than those of "
                             f"{found[0][0].preset}")
        labels = split.labels
        outputs.append(Predictor.load(path).outputs_for_model_inputs(split.images))
    return outputs, labels


def model_outputs(outputs: NetworkOutputs, weights: Sequence[float] | None
                  ) -> dict[str, np.ndarray]:
    """The model's outputs from its networks': one network's own, or the ensemble's
    (:func:`facefold.models.inference.combine_outputs`, as ``predict`` computes them)."""
    return outputs[0] if len(outputs) == 1 else combine_outputs(outputs, weights)


@dataclass(frozen=True)
class _GroupOutputs:
    """One calibration group's network outputs: on the training pictures, on the held-out
    shard's pictures of the known people, and on the group's people (strangers to it)."""

    trained: NetworkOutputs
    trained_labels: np.ndarray
    known: NetworkOutputs
    known_labels: np.ndarray
    unknown: NetworkOutputs
    unknown_labels: np.ndarray
    classes: int


def choose_fit_weights(config: Config, groups: Sequence[_GroupOutputs]
                       ) -> tuple[list[float] | None, dict[str, Any] | None]:
    """A weighted ensemble's member weights (``model.member_weights = "inner"``) and the facts
    of the choice, or ``(None, None)`` for any other model. Chosen by the rule of a
    cross-validated weighted ensemble (:func:`facefold.train.ensemble.fit_weights`) on the
    calibration models' held-out pictures of their known people: pictures none of the
    models weighed was trained on, and never the model's own training pictures."""
    if not family_of(config).weighs_on_inner_split(config):
        return None, None
    width = max(g.classes for g in groups)  # the groups know different numbers of people

    def padded(logits: np.ndarray) -> np.ndarray:  # people a group lacks: probability 0
        out = np.zeros((len(logits), width))
        out[:, :logits.shape[1]] = softmax(logits)
        return out

    labels = np.concatenate([g.known_labels for g in groups])
    members = len(groups[0].known)
    probabilities = np.stack([np.concatenate([padded(g.known[m]["logits"]) for g in groups])
                              for m in range(members)])
    weights, scores = weights_and_facts(labels, probabilities)
    facts = {"source": "the calibration groups' held-out pictures of their known people",
             **scores}
    return [float(w) for w in weights], facts


def write_ensemble(run_dir: Path, found: Sequence[tuple[Config, Path]],
                   weights: Sequence[float] | None) -> None:
    """An ensemble's ``ensemble.json`` in ``run_dir`` (nothing for one network); how the
    weights were chosen is in the model card (``calibration.weights_choice``)."""
    if len(found) == 1 and found[0][1] == run_dir:
        return
    presets = [network.preset for network, _ in found]
    runs.write_ensemble(run_dir, {network.preset: path for network, path in found},
                        dict.fromkeys(presets, False),
                        None if weights is None else dict(zip(presets, weights, strict=True)))


def _calibration_group(data_dir: Path, config: Config, model_dir: Path, inputs: Inputs,
                       labels: list[str], g: int, group: list[int], data: dict, log: Log,
                       plan: CommandPlan | None = None) -> _GroupOutputs:
    """Train (or find) calibration group ``g``'s model, without the ``group`` people, held out
    shard ``g % shards``; its networks' outputs."""
    k = g % len(data["shards"])
    known_names = [n for i, n in enumerate(labels) if i not in group]
    log(f"[fit] calibration group {g}: {len(group)} people left out "
        f"({', '.join(labels[i] for i in group)}); evaluated on shard {k}")
    split = by_people(inputs, group, len(labels))

    def trained(network: Config) -> Split:
        return concat([s for j, s in enumerate(split(network)[0]) if j != k])

    def known(network: Config) -> Split:
        return split(network)[0][k]

    def unknown(network: Config) -> Split:
        return concat(split(network)[1])

    found = train_model(data_dir, config, runs.calibration_dir(model_dir, g),
                        lambda network: split(network)[0], [k], log, f"group-{g}",
                        known_names, data, plan=plan)
    return _GroupOutputs(*network_outputs(found, trained), *network_outputs(found, known),
                         *network_outputs(found, unknown), len(known_names))


def calibrate(data_dir: Path, config: Config, model_dir: Path, inputs: Inputs,
              labels: list[str], groups: int, far: float, data: dict, log: Log,
              plan: CommandPlan | None = None) -> tuple[dict[str, Any], list[float] | None]:
    """Leave-people-out calibration (see the module docstring); ``inputs`` gives each
    network's shards of the ``labels`` people; ``plan`` counts their training steps off.
    Returns the report and a weighted ensemble's weights (:func:`choose_fit_weights`; the
    report holds them by preset, and the facts of their choice)."""
    outputs = [
        _calibration_group(data_dir, config, model_dir, inputs, labels, g, group, data, log,
                           plan)
        for g, group in enumerate(people_groups(len(labels), groups, config.train.seed))]
    weights, facts = choose_fit_weights(config, outputs)
    parts = []
    for g, group_outputs in enumerate(outputs):
        write_ensemble(runs.calibration_dir(model_dir, g),
                       networks(config, runs.calibration_dir(model_dir, g)), weights)
        parts.append(scores_of_outputs(
            model_outputs(group_outputs.trained, weights), group_outputs.trained_labels,
            model_outputs(group_outputs.known, weights), group_outputs.known_labels,
            model_outputs(group_outputs.unknown, weights), group_outputs.unknown_labels,
            group_outputs.classes))
    scores = _pooled(parts, far)
    chosen = max(scores, key=lambda n: (scores[n]["known_accuracy"], scores[n]["auroc"]))
    report = {
        "groups": groups, "far": far, "scores": scores, "score": chosen,
        "verification": _verification(parts, far),
        "closed_set_accuracy": float(np.mean([p.correct.mean() for p in parts])),
        "known_images": int(sum(len(p.correct) for p in parts)),
        "unknown_images": int(sum(len(p.unknown_labels) for p in parts)),
    }
    if weights is not None:
        report["weights"] = dict(zip([n.preset for n, _ in networks(config, model_dir)],
                                     weights, strict=True))
        report["weights_choice"] = facts
    return report, weights


@locks_folders("out")
def fit(
    data_dir: str | Path, config: Config, out: str | Path, groups: int = DEFAULT_GROUPS,
    far: float = DEFAULT_FIT_FAR, log: Log = print, restart: bool = False,
) -> FitResult:
    """Train ``config`` on every shard of ``data_dir`` into ``out``, calibrate its unknown and
    verification thresholds by leave-people-out over ``groups`` groups, and write the model
    card. Resumable like any run; an ``out`` of other data or config is refused unless
    ``restart``."""
    if not 0 < far < 1:
        raise ValueError(f"--far must be in (0, 1), got {far}")
    data_dir, out = Path(data_dir), Path(out)
    family_of(config).check_available(config)
    data = runs.data_fingerprint(data_dir)
    labels = read_labels(data_dir)
    check_image_size(config, data_dir)
    check_batch_size(config, training_images(shard_labels(data_dir),
                                             people_groups(len(labels), groups,
                                                           config.train.seed)))
    source = SplitSource(data_dir, log)
    started = time.perf_counter()
    plan = fit_plan(config, groups, log)
    found = train_model(data_dir, config, out, source.get, [], log, "fit", None, data,
                        restart, hold_out=False, plan=plan)
    fit_seconds = time.perf_counter() - started
    calibration, weights = calibrate(data_dir, config, out, source.get, labels, groups, far,
                                     data, log, plan)
    write_ensemble(out, found, weights)
    _write_decision(out, found, source.get, weights, labels, calibration)
    chosen = calibration["scores"][calibration["score"]]
    card = _model_card(data_dir, data, config, calibration, fit_seconds,
                       time.perf_counter() - started)
    runs.write_model_card(out, card, format_model_card(card))
    log(f"[fit] {out}: {len(labels)} people; {calibration['score']} score, threshold "
        f"{chosen['threshold']:.4f}: {chosen['far']:.1%} of strangers accepted, "
        f"{chosen['known_accuracy']:.1%} of known faces accepted and named right")
    return FitResult(out, card)


def _write_decision(model_dir: Path, found: Sequence[tuple[Config, Path]], inputs: Inputs,
                    weights: Sequence[float] | None, labels: list[str],
                    calibration: dict[str, Any]) -> None:
    """Every person's centroid (from all their training pictures) and ``threshold.json``."""
    def everything(network: Config) -> Split:
        return concat(inputs(network))

    outputs, picture_labels = network_outputs(found, everything)
    features = model_outputs(outputs, weights)["features"]
    runs.write_centroids(model_dir, class_centroids(features, picture_labels, len(labels)))
    chosen = calibration["scores"][calibration["score"]]
    runs.write_threshold(model_dir, {
        "score": calibration["score"], "threshold": chosen["threshold"],
        "far": calibration["far"],
        "naming": "centroid" if SCORES[calibration["score"]].uses_centroids else "classifier",
        "source": f"facefold fit: leave-people-out over {calibration['groups']} groups",
        "thresholds": {n: r["threshold"] for n, r in calibration["scores"].items()},
        "verify_threshold": calibration["verification"]["threshold"],
    })


@locks_folders("out")
def measure_enrollment(
    data_dir: str | Path, config: Config, out: str | Path, newcomers: int = 4,
    strangers: int = 4, shots: int = 5, groups: int = DEFAULT_GROUPS,
    far: float = DEFAULT_FIT_FAR, log: Log = print,
) -> dict[str, Any]:
    """How well people enrolled without retraining are named, and whether the false-accept
    rate on strangers holds: ``newcomers`` and ``strangers`` people (drawn with the seed) are
    left out; a model is fit and calibrated on the others into ``out``; each newcomer is
    enrolled from ``shots`` of their pictures and named on the rest, and every stranger's
    picture is tried. Returns the counts and rates (the cosine score decides)."""
    data_dir, out = Path(data_dir), Path(out)
    labels = read_labels(data_dir)
    order = np.random.default_rng(config.train.seed + 1).permutation(len(labels))
    new, strange = sorted(order[:newcomers].tolist()), sorted(
        order[newcomers:newcomers + strangers].tolist())
    data = runs.data_fingerprint(data_dir)
    source = SplitSource(data_dir, log)
    split = by_people(source.get, new + strange, len(labels))

    def known(network: Config) -> list[Split]:
        return split(network)[0]

    known_names = [n for i, n in enumerate(labels) if i not in new + strange]
    found = train_model(data_dir, config, out, known, [], log, "fit", known_names, data,
                        hold_out=False)
    calibration, weights = calibrate(data_dir, config, out, known, known_names, groups, far,
                                     data, log)
    write_ensemble(out, found, weights)
    _write_decision(out, found, known, weights, known_names, calibration)
    predictor = Predictor.load(out)
    predictor.clear_gallery()  # a rerun enrolls afresh
    outputs, other_labels = network_outputs(found, lambda n: concat(split(n)[1]))
    features = model_outputs(outputs, weights)["features"]
    rng = np.random.default_rng(config.train.seed + 2)
    tests = []
    for label in new:
        pictures = rng.permutation(np.flatnonzero(other_labels == label))
        predictor.enroll_features(labels[label], features[pictures[:shots]])
        tests += [(i, labels[label]) for i in pictures[shots:]]
    threshold = calibration["scores"][CENTROID_SCORE]["threshold"]
    similarity = unit_rows(features) @ predictor.all_centroids().T
    best, value = similarity.argmax(axis=1), similarity.max(axis=1)
    people = predictor.people
    named = [people[best[i]] == name and value[i] >= threshold for i, name in tests]
    strangers_in = np.isin(other_labels, strange)
    result = {
        "newcomers": [labels[i] for i in new], "strangers": [labels[i] for i in strange],
        "trained_people": len(known_names), "shots": shots, "threshold": threshold,
        "far_target": far, "newcomer_pictures": len(tests),
        "newcomers_named_right": float(np.mean(named)),
        "stranger_pictures": int(strangers_in.sum()),
        "strangers_accepted": float(np.mean(value[strangers_in] >= threshold)),
        "calibration": calibration,
    }
    runs.write_enrollment_test(out, result)
    return result


def _model_card(data_dir: Path, data: dict, config: Config, calibration: dict,
                fit_seconds: float, total_seconds: float) -> dict[str, Any]:
    return {
        "facefold_version": facefold.__version__,
        "made": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "data": {"folder": str(data_dir.resolve()), "digest": data["digest"],
                 "shards": data["shards"], "people": data["labels"]},
        "preset": config.preset, "family": family_of(config).name, "config": config.to_dict(),
        "calibration": calibration,
        "seconds": {"fit": round(fit_seconds, 1), "total": round(total_seconds, 1)},
        "versions": versions(),
    }


def _members_text(card: dict[str, Any]) -> str:
    """An ensemble's members and their weights, for the model card ("" for one network)."""
    members = card["config"]["model"].get("members") or []  # only an ensemble names members
    if not members:
        return ""
    weights = card["calibration"].get("weights")
    if weights is None:
        return f" An ensemble: the mean probabilities of {', '.join(members)}."
    chosen = ", ".join(f"{p} {w:.2f}" for p, w in weights.items())
    return (f" An ensemble: the weighted mean probabilities of {chosen}, the weights chosen "
            "on the calibration models' held-out pictures of their known people.")


def format_model_card(card: dict[str, Any]) -> str:
    """``MODEL_CARD.md``: the card in words."""
    cal = card["calibration"]
    chosen = cal["scores"][cal["score"]]
    verify = cal["verification"]
    rows = "\n".join(
        f"| {name} | {r['auroc']:.3f} | {r['threshold']:.4f} | {r['far']:.3%} | "
        f"{r['accepted']:.1%} | {r['known_accuracy']:.1%} |"
        for name, r in cal["scores"].items())
    people = card["data"]["people"]
    return f"""# Model card: {card['preset']} on {len(people)} people

Made {card['made']} by facefold {card['facefold_version']} (`facefold fit`), on
{card['versions'].get('machine', '?')}; fit {card['seconds']['fit']:.0f} s, with calibration
{card['seconds']['total']:.0f} s.

## Data
`{card['data']['folder']}`, fingerprint `{card['data']['digest'][:16]}…`
({len(card['data']['shards'])} shards). People: {', '.join(people)}.

## Model
Preset `{card['preset']}` ({card['family']} family), trained on every shard: no picture was
held out of this model.{_members_text(card)}

## Unknown people
Calibrated by leave-people-out over {cal['groups']} groups: each group's people were left out of
a model of the same config and scored as strangers ({cal['unknown_images']} pictures), against
{cal['known_images']} held-out pictures of the known people. Threshold at
{cal['far']:.0%} false accepts:

| score | AUROC | threshold | strangers accepted | known accepted | known accepted and named right |
|-------|-------|-----------|--------------------|----------------|--------------------------------|
{rows}

Chosen: **{cal['score']}** — expect about {chosen['far']:.1%} of strangers to be accepted as
someone and {chosen['known_accuracy']:.1%} of the known people's faces to be accepted and named
right (the calibration models' closed-set accuracy was {cal['closed_set_accuracy']:.1%}).

## Verification
Two pictures are the same person when the cosine similarity of their features is at least
{verify['threshold']:.4f}: {verify['far']:.2%} of {verify['other_pairs']} pairs of two strangers
and {verify['true_accepts']:.1%} of {verify['same_pairs']} pairs of one stranger pass (AUROC
{verify['auroc']:.3f}).

## Caveats
The rates hold for pictures like the training ones (same cameras, crops, people of similar
appearance); strangers who look like a known person, or other capture conditions, can do worse.
"""
