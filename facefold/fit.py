"""``facefold fit DATA --preset P --out MODEL``: a model to deploy, trained on every shard.

A cross-validation case is trained on 5/6 of the data; the model to deploy should see all of
it. :func:`fit` trains on every shard (nothing held out) and then *calibrates* the
"unknown" decision honestly, by leave-people-out: the people are split into ``groups``
groups; for each group a model of the same config is trained without that group's people
(on every shard but one, :func:`facefold.runs.calibration_dir`) and scored on the held-out
shard's pictures of the known people and on every picture of the group's people, whom it
never saw. The scores are pooled over the groups, and for each open-set score
(:data:`facefold.evaluate.openset.SCORES`) the threshold that accepts ``far`` of the
strangers is found; the score that names the most known faces right at that rate is chosen
— by the data, per model. The cosine score names a face by its nearest centroid, so people
can be enrolled later without retraining (:meth:`facefold.predict.Predictor.enroll`).
Verification ("same person?") gets its own threshold at ``far`` from pairs of pictures of
the strangers.

The model folder is an ordinary run folder plus ``threshold.json``, ``centroids.npy`` (of
every person, from all the training pictures) and a model card (``model_card.json`` and
``MODEL_CARD.md``: data and its fingerprint, people, the calibration's numbers, versions).
``predict``, ``identify``, ``verify``, ``enroll``, ``export`` and ``serve`` take it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import facefold
from facefold import runs
from facefold.config import Config
from facefold.data.pipeline import Split, concat
from facefold.data.records import read_labels
from facefold.evaluate.openset import (
    SCORES,
    auroc,
    class_centroids,
    threshold_at_far,
    unit_rows,
)
from facefold.evaluate.openset_cv import CaseScores, case_scores, split_people
from facefold.models.families import Ensemble, SplitSource, family_of
from facefold.predict import Predictor
from facefold.train.trainer import Log, Trainer, versions

DEFAULT_FIT_FAR = 0.01  # one stranger in a hundred accepted as someone
# The score is chosen per model by its own calibration. Measured on celeb21 (AUROC / known
# accepted and named right at 1 %; docs/results.md has the commands), 2026-12-01:
#   dlib128, 4 groups:    cosine 0.993 / 93.3 %, msp 0.971 / 87.6 %, max_logit 0.968 / 88.8 %,
#                         energy 0.963 / 87.5 %  -> cosine (nearest centroid; enroll works)
#   fast-nogap, 2 groups: msp 0.917 / 54.1 %, max_logit 0.913 / 48.7 %, energy 0.905 / 46.3 %,
#                         cosine 0.741 / 17.4 %  -> msp
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


def _pooled(parts: Sequence[CaseScores], far: float) -> dict[str, dict[str, float]]:
    """Per score, over every group: AUROC, the threshold at ``far``, the false-accept rate
    it reaches, the share of known faces accepted, and accepted *and* named right (by the
    classifier, or for the cosine score by the nearest centroid)."""
    report = {}
    for name in SCORES:
        if not all(name in p.known for p in parts):
            continue
        known = np.concatenate([p.known[name] for p in parts])
        unknown = np.concatenate([p.unknown[name] for p in parts])
        right = np.concatenate([p.nearest_correct if name == "cosine" else p.correct
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


def calibrate(data_dir: Path, config: Config, model_dir: Path, splits: list[Split],
              labels: list[str], groups: int, far: float, data: dict, log: Log
              ) -> tuple[dict[str, Any], list[CaseScores]]:
    """Leave-people-out calibration (see the module docstring); returns the report and the
    per-group scores."""
    parts, closed = [], []
    for g, group in enumerate(people_groups(len(labels), groups, config.train.seed)):
        k = g % len(splits)
        known_splits, unknown_splits = split_people(splits, group, len(labels))
        known_names = [n for i, n in enumerate(labels) if i not in group]
        run_dir = runs.calibration_dir(model_dir, g)
        log(f"[fit] calibration group {g}: {len(group)} people left out "
            f"({', '.join(labels[i] for i in group)}); evaluated on shard {k}")
        Trainer(data_dir, config, run_dir, [k], known_splits, log, name=f"group-{g}",
                people=known_names, data=data).run()
        predictor = Predictor.load(run_dir)
        trained = concat([s for j, s in enumerate(known_splits) if j != k])
        parts.append(case_scores(predictor, trained, known_splits[k],
                                 concat(unknown_splits), model_inputs=True))
        closed.append(float(parts[-1].correct.mean()))
    scores = _pooled(parts, far)
    chosen = max(scores, key=lambda n: (scores[n]["known_accuracy"], scores[n]["auroc"]))
    return {
        "groups": groups, "far": far, "scores": scores, "score": chosen,
        "verification": _verification(parts, far),
        "closed_set_accuracy": float(np.mean(closed)),
        "known_images": int(sum(len(p.correct) for p in parts)),
        "unknown_images": int(sum(len(p.unknown_labels) for p in parts)),
    }, parts


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
    if isinstance(family_of(config), Ensemble):
        raise ValueError("fit makes one network; fit each member, or use `facefold cv` to "
                         "measure an ensemble")
    data_dir, out = Path(data_dir), Path(out)
    family_of(config).check_available(config)
    data = runs.data_fingerprint(data_dir)
    labels = read_labels(data_dir)
    people_groups(len(labels), groups, config.train.seed)  # fail before any training
    source = SplitSource(data_dir, log)
    splits = source.get(config)
    started = time.perf_counter()
    trainer = Trainer(data_dir, config, out, [], source, log, name="fit", restart=restart,
                      data=data, hold_out=False)
    trainer.run()
    fit_seconds = time.perf_counter() - started
    calibration, _ = calibrate(data_dir, config, out, splits, labels, groups, far, data, log)
    _write_decision(out, splits, labels, calibration)
    chosen = calibration["scores"][calibration["score"]]
    card = _model_card(data_dir, data, config, calibration, fit_seconds,
                       time.perf_counter() - started)
    runs.write_model_card(out, card, format_model_card(card))
    log(f"[fit] {out}: {len(labels)} people; {calibration['score']} score, threshold "
        f"{chosen['threshold']:.4f}: {chosen['far']:.1%} of strangers accepted, "
        f"{chosen['known_accuracy']:.1%} of known faces accepted and named right")
    return FitResult(out, card)


def _write_decision(model_dir: Path, splits: list[Split], labels: list[str],
                    calibration: dict[str, Any]) -> None:
    """Every person's centroid (from all their training pictures) and ``threshold.json``."""
    predictor = Predictor.load(model_dir)
    everything = concat(splits)
    features = predictor.outputs_for_model_inputs(everything.images)["features"]
    runs.write_centroids(model_dir, class_centroids(features, everything.labels, len(labels)))
    chosen = calibration["scores"][calibration["score"]]
    runs.write_threshold(model_dir, {
        "score": calibration["score"], "threshold": chosen["threshold"],
        "far": calibration["far"],
        "naming": "centroid" if calibration["score"] == "cosine" else "classifier",
        "source": f"facefold fit: leave-people-out over {calibration['groups']} groups",
        "thresholds": {n: r["threshold"] for n, r in calibration["scores"].items()},
        "verify_threshold": calibration["verification"]["threshold"],
    })


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
    splits = SplitSource(data_dir, log).get(config)
    known_splits, other_splits = split_people(splits, new + strange, len(labels))
    known_names = [n for i, n in enumerate(labels) if i not in new + strange]
    Trainer(data_dir, config, out, [], known_splits, log, name="fit", people=known_names,
            data=data, hold_out=False).run()
    calibration, _ = calibrate(data_dir, config, out, known_splits, known_names, groups, far,
                               data, log)
    _write_decision(out, known_splits, known_names, calibration)
    (out / runs.GALLERY_FILE).unlink(missing_ok=True)  # a rerun enrolls afresh
    predictor = Predictor.load(out)
    others = concat(other_splits)
    features = predictor.outputs_for_model_inputs(others.images)["features"]
    rng = np.random.default_rng(config.train.seed + 2)
    tests = []
    for label in new:
        pictures = rng.permutation(np.flatnonzero(others.labels == label))
        predictor.enroll_features(labels[label], features[pictures[:shots]])
        tests += [(i, labels[label]) for i in pictures[shots:]]
    threshold = calibration["scores"]["cosine"]["threshold"]
    similarity = unit_rows(features) @ predictor.all_centroids().T
    best, value = similarity.argmax(axis=1), similarity.max(axis=1)
    people = predictor.people
    named = [people[best[i]] == name and value[i] >= threshold for i, name in tests]
    strangers_in = np.isin(others.labels, strange)
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
held out of this model.

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
