"""The open-set cross-validation: people held out of training entirely, then scored.

``facefold cv --unknown-people K``: ``K`` people, chosen with ``train.seed``, are
held out of training; the others are relabelled 0..M-1 and each case trains on
them as usual. On the held-out shard of each case every image of a known and of
an unknown person is scored (:mod:`facefold.models.scores`,
:mod:`facefold.evaluate.openset`), and the default score's threshold is stored in
the case's run folder (``threshold.json``, with the class centroids), so
``facefold predict`` on that run answers "unknown".
The CV folder gets ``openset.json``: the held-out people, each case's report and
the mean over cases (the file names belong to :mod:`facefold.runs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facefold import runs
from facefold.config import Config
from facefold.data.pipeline import Split, concat, decode_shards
from facefold.data.records import read_labels
from facefold.evaluate.cv import parse_folds, prepare_cv_dir
from facefold.evaluate.openset import open_set_report, threshold_entry
from facefold.log import Log
from facefold.models.families import family_of
from facefold.models.scores import (
    CENTROID_SCORE,
    DEFAULT_FAR,
    DEFAULT_SCORE,
    SCORES,
    PersonPictures,
    best_two,
    class_centroids,
    nearest_similarity,
    open_set_scores,
    person_pictures,
    person_similarity,
    unit_rows,
)
from facefold.predict.predictor import Predictor
from facefold.train.plan import check_batch_size
from facefold.train.trainer import CommandPlan, Trainer


def choose_unknown_people(labels: Sequence[str], count: int, seed: int) -> list[int]:
    """``count`` label indices drawn with ``seed`` to hold out of training (sorted).

    At least two people must stay known; ``ValueError`` otherwise.
    """
    if not 1 <= count <= len(labels) - 2:
        raise ValueError(
            f"--unknown-people must be between 1 and {len(labels) - 2} (the dataset has "
            f"{len(labels)} people and at least 2 must stay known), got {count}"
        )
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(len(labels), size=count, replace=False))


def split_people(
    splits: list[Split], unknown: Sequence[int], num_classes: int
) -> tuple[list[Split], list[Split]]:
    """Split every shard into its known people (relabelled 0..M-1 in label order) and the rest.

    ``num_classes`` is the dataset's number of people. Returns ``(known,
    unknown)`` lists of splits, one per shard; the unknown splits keep their
    original labels.
    """
    is_unknown = np.isin(np.arange(num_classes), list(unknown))
    new_label = np.cumsum(~is_unknown) - 1  # old label -> index among the known people
    known_splits, unknown_splits = [], []
    for split in splits:
        mask = is_unknown[split.labels]
        known_splits.append(
            Split(split.images[~mask], new_label[split.labels[~mask]].astype(np.int32))
        )
        unknown_splits.append(Split(split.images[mask], split.labels[mask]))
    return known_splits, unknown_splits


# ---------------------------------------------------------------- the cross-validation


@dataclass(frozen=True)
class OpenSetResult:
    """What :func:`run_open_set_cv` measured: held-out people, per-case reports, their mean."""

    unknown_people: list[str]
    cases: list[int]
    reports: dict[int, dict[str, Any]]
    mean: dict[str, dict[str, float]]
    far: float

    def table(self) -> str:
        """The mean over cases as a small text table, one row per score."""
        lines = [
            f"Open set: {len(self.unknown_people)} people never trained on "
            f"({', '.join(self.unknown_people)}); cases {self.cases}",
            f"{'score':10s} {'AUROC':>7s} {'known acc':>10s} {'accepted':>9s} "
            f"{'FAR':>6s}   (threshold at {self.far:.0%} false accepts)",
        ]
        for name, row in self.mean.items():
            mark = "  <- default" if name == DEFAULT_SCORE else ""
            lines.append(
                f"{name:10s} {row['auroc']:7.4f} {row['known_accuracy']:10.4f} "
                f"{row['accepted']:9.4f} {row['far']:6.3f}{mark}"
            )
        closed = np.mean([r["closed_set_accuracy"] for r in self.reports.values()])
        lines.append(f"closed-set accuracy on the known people (no rejection): {closed:.4f}")
        return "\n".join(lines)


def run_open_set_cv(
    data_dir: str | Path,
    config: Config,
    out: str | Path,
    folds: str | Sequence[int] | None,
    unknown_people: int,
    far: float = DEFAULT_FAR,
    log: Log = print,
    restart: bool = False,
) -> OpenSetResult:
    """Cross-validate with ``unknown_people`` people held out of training; measure open-set scores.

    Case k trains on the known people of every shard but k (an ordinary,
    resumable run in ``OUT/case-k`` whose ``labels.txt`` lists the known
    people only) and is scored on all of shard k. Writes ``OUT/cv.json`` (so
    the usual accuracy table works), ``OUT/openset.json`` and, per case,
    ``openset.json``, ``threshold.json`` and ``centroids.npy``.
    """
    if not 0 <= far < 1:  # before any training
        raise ValueError(f"--far (false-accept rate) must be in [0, 1), got {far}")
    family_of(config).require_conv_layers(config, "--unknown-people")
    out, labels = Path(out), read_labels(data_dir)
    unknown = choose_unknown_people(labels, unknown_people, config.train.seed)
    splits = decode_shards(data_dir, config.model.channels)
    cases = parse_folds(folds, len(splits))
    known_splits, unknown_splits = split_people(splits, unknown, len(labels))
    known_names = [n for i, n in enumerate(labels) if i not in unknown]
    unknown_names = [labels[i] for i in unknown]
    total = sum(len(split) for split in known_splits)
    check_batch_size(config, {f"case {k}": total - len(known_splits[k]) for k in cases})
    data = runs.data_fingerprint(data_dir)
    plan = CommandPlan("trials", config.train.steps * len(cases), len(cases), log)
    trainers = [Trainer(data_dir, config, runs.case_dir(out, k), [k], known_splits, log,
                        people=known_names, restart=restart, data=data, plan=plan)
                for k in cases]
    prepare_cv_dir(data_dir, config, out, cases, restart, data, unknown_people=unknown_names)
    reports = {}
    for k, trainer in zip(cases, trainers, strict=True):
        log(f"=== Open-set case #{k}: {len(known_names)} known people, "
            f"{len(unknown_names)} unknown; evaluate on shard {k} ===")
        trainer.run()
        run_dir = runs.case_dir(out, k)
        reports[k] = evaluate_case(run_dir, known_splits, unknown_splits[k], k, far)
        reports[k]["unknown_people"] = unknown_names
        runs.write_openset_report(run_dir, reports[k])
    result = OpenSetResult(unknown_names, cases, reports, _mean_report(reports), far)
    runs.write_openset_report(out, {
        "unknown_people": unknown_names, "far": far, "default_score": DEFAULT_SCORE,
        "mean": result.mean, "cases": {str(k): r for k, r in reports.items()},
    })
    return result


@dataclass(frozen=True)
class CaseScores:
    """Every open-set score of one held-out shard: ``known`` and ``unknown`` map a score name
    to the scores (N,) and (U,); ``correct`` (N,) whether each known image was named right by
    the classifier, ``nearest_correct`` by its nearest centroid; ``centroids`` (C, D) the unit
    mean features of the training images; ``unknown_features`` (U, D) with ``unknown_labels``
    (U,) for verification pairs among people the model never saw; ``pictures`` the training
    images' features (the ``nearest`` score's) and ``pictures_correct`` whether each known
    image was named right by them. On the model's own gallery (:func:`gallery_scores`)
    ``unknown_best`` maps a score name to each stranger score's best match (a label) and
    ``unknown_runner_up`` to its best over everyone else: the score were that person gone
    (:func:`~facefold.models.identities.held_out_rates`)."""

    known: dict[str, np.ndarray]
    unknown: dict[str, np.ndarray]
    correct: np.ndarray
    nearest_correct: np.ndarray
    centroids: np.ndarray
    unknown_features: np.ndarray
    unknown_labels: np.ndarray
    pictures: PersonPictures | None = None
    pictures_correct: np.ndarray | None = None
    unknown_best: dict[str, np.ndarray] | None = None
    unknown_runner_up: dict[str, np.ndarray] | None = None

    def named_right(self, uses_centroids: bool, uses_pictures: bool) -> np.ndarray:
        """Whether each known image is named right by the naming of a score that uses
        centroids and/or pictures (:class:`facefold.models.scores.Score`)."""
        if uses_pictures:
            if self.pictures_correct is None:
                raise ValueError("these scores were computed without the pictures' features")
            return self.pictures_correct
        return self.nearest_correct if uses_centroids else self.correct


def case_scores(predictor: Predictor, trained: Split, known: Split, unknown: Split,
                model_inputs: bool = False) -> CaseScores:
    """Score a model trained on ``trained`` (its known people) on held-out ``known`` images and
    on ``unknown`` people's images it never saw. The splits hold pictures, or with
    ``model_inputs`` what the family's network takes (an embedding head: embeddings)."""
    outputs = predictor.outputs_for_model_inputs if model_inputs else (
        predictor.outputs_for_arrays)
    return scores_of_outputs(outputs(trained.images), trained.labels, outputs(known.images),
                             known.labels, outputs(unknown.images), unknown.labels,
                             len(predictor.labels))


def people_in_one_shard(labels: np.ndarray, shards: np.ndarray, classes: int) -> list[int]:
    """The people (of ``classes``) whose pictures, labelled ``labels`` and from shard
    ``shards``, lie in fewer than two shards: the gallery calibration
    (:func:`gallery_scores`) cannot test them as known faces against the other shards."""
    labels, shards = np.asarray(labels), np.asarray(shards)
    return [p for p in range(classes) if len(np.unique(shards[labels == p])) < 2]


# Rows of a gallery scored at once (memory: GALLERY_BLOCK x the gallery's pictures floats).
GALLERY_BLOCK = 1024


def gallery_scores(features: np.ndarray, labels: np.ndarray, shards: np.ndarray,
                   classes: int, strangers: np.ndarray | None = None,
                   stranger_labels: np.ndarray | None = None) -> CaseScores:
    """The scores that compare a face with the people's features (``cosine``, ``nearest``) of
    a model whose features do not depend on whom it was trained on
    (:meth:`~facefold.models.families.ModelFamily.features_are_fixed`), measured on the
    model's own gallery: ``features`` (N, D) of every training picture of its ``classes``
    people, labelled ``labels`` (N,), from shard ``shards`` (N,).

    - Strangers: each person's pictures against everybody else's, i.e. their best score
      over the other people of the whole gallery. A person's score depends only on that
      person's own pictures, so this is exactly what the model would score the person if it
      had never met them, against as many people and pictures as it has. (Models trained
      without a group of people are compared with fewer people and pictures, and accepted
      fewer strangers than the model then did: docs/deployment.md.)
      ``strangers`` (S, D), labelled ``stranger_labels``: more people (``fit --strangers``),
      against the whole gallery.
    - Known faces: each shard's pictures against the gallery of the other shards, every
      person in it; named right when their own person scores best.

    The classifier's scores are not here (the classifier is trained); ``correct`` holds the
    naming by centroids like ``nearest_correct``. Every person needs pictures in two shards.
    """
    labels, shards = np.asarray(labels), np.asarray(shards)
    names = [n for n, score in SCORES.items() if score.uses_centroids]

    def similarity_to(name: str, rows: np.ndarray, centroids: np.ndarray,
                      pictures: PersonPictures) -> np.ndarray:
        # In blocks of rows: `nearest` holds a (rows, pictures) matrix, every picture's
        # similarity to every other in the gallery at once.
        return np.concatenate([
            person_similarity(name, rows[i:i + GALLERY_BLOCK], centroids, pictures)
            for i in range(0, len(rows), GALLERY_BLOCK)]) if len(rows) else np.zeros(
                (0, classes))

    lonely = people_in_one_shard(labels, shards, classes)
    if lonely:
        where = shards[labels == lonely[0]]
        has = f"pictures in shard {where[0]} only" if len(where) else "no picture"
        raise ValueError(f"person {lonely[0]} has {has}: the gallery calibration needs every "
                         "person in two shards")
    known = {n: np.empty(len(labels)) for n in names}
    right = {n: np.zeros(len(labels), bool) for n in names}
    for shard in np.unique(shards):
        mine, rest = shards == shard, shards != shard
        centroids = class_centroids(features[rest], labels[rest], classes)
        pictures = person_pictures(features[rest], labels[rest], classes)
        for n in names:
            similarity = similarity_to(n, features[mine], centroids, pictures)
            known[n][mine] = similarity.max(axis=1)
            right[n][mine] = similarity.argmax(axis=1) == labels[mine]
    centroids = class_centroids(features, labels, classes)
    pictures = person_pictures(features, labels, classes)
    unknown, best, runner_up = {}, {}, {}
    for n in names:
        similarity = similarity_to(n, features, centroids, pictures)
        similarity[np.arange(len(labels)), labels] = -np.inf  # the person is not in it
        if strangers is not None:
            similarity = np.concatenate([similarity, similarity_to(
                n, strangers, centroids, pictures)])
        unknown[n], best[n], runner_up[n] = best_two(similarity)
    unknown_features, unknown_labels = features, labels
    if strangers is not None:
        unknown_features = np.concatenate([features, strangers])
        unknown_labels = np.concatenate([labels, stranger_labels])
    by_centroid = right[CENTROID_SCORE]
    by_pictures = right[next(n for n in names if SCORES[n].uses_pictures)]
    return CaseScores(known, unknown, by_centroid, by_centroid, centroids, unknown_features,
                      unknown_labels, pictures, by_pictures, best, runner_up)


def scores_of_outputs(
    trained: dict[str, np.ndarray], trained_labels: np.ndarray, known: dict[str, np.ndarray],
    known_labels: np.ndarray, unknown: dict[str, np.ndarray], unknown_labels: np.ndarray,
    classes: int,
) -> CaseScores:
    """:func:`case_scores` from a model's outputs (``{"logits", "features"}``) on the
    training pictures, the held-out pictures of its ``classes`` known people and the
    unknown people's pictures."""
    centroids = class_centroids(trained["features"], trained_labels, classes)
    pictures = person_pictures(trained["features"], trained_labels, classes)
    nearest = (unit_rows(known["features"]) @ centroids.T).argmax(axis=1)
    by_pictures = nearest_similarity(known["features"], pictures).argmax(axis=1)
    return CaseScores(
        open_set_scores(known["logits"], known["features"], centroids, pictures),
        open_set_scores(unknown["logits"], unknown["features"], centroids, pictures),
        known["logits"].argmax(axis=1) == known_labels, nearest == known_labels,
        centroids, unknown["features"], unknown_labels, pictures,
        by_pictures == known_labels)


def evaluate_case(
    run_dir: Path, known_splits: list[Split], unknown: Split, k: int, far: float
) -> dict[str, Any]:
    """Score shard ``k`` with the run's final model; write its centroids and threshold.

    Returns the report: ``scores`` (per score, see :func:`open_set_report`),
    ``closed_set_accuracy`` and the image counts.
    """
    trained = concat([s for j, s in enumerate(known_splits) if j != k])
    found = case_scores(Predictor.load(run_dir), trained, known_splits[k], unknown)
    runs.write_centroids(run_dir, found.centroids)
    runs.write_pictures(run_dir, found.pictures.features, found.pictures.owners)
    correct = found.correct
    scores = open_set_report(found.known, found.unknown, correct, far)
    write_threshold(run_dir, scores, far, f"open-set case {k}: {len(unknown)} unknown images")
    return {
        "scores": scores,
        "closed_set_accuracy": float(correct.mean()),
        "known_images": len(known_splits[k]),
        "unknown_images": len(unknown),
    }


def write_threshold(run_dir: Path, scores: dict[str, dict[str, float]], far: float,
                    source: str) -> None:
    """Write ``RUN/threshold.json``: the default score's threshold, and every score's."""
    runs.write_threshold(run_dir, threshold_entry(scores, far, source))


def _mean_report(reports: dict[int, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean of every number of every score over the cases."""
    first = next(iter(reports.values()))["scores"]
    return {
        name: {key: float(np.mean([r["scores"][name][key] for r in reports.values()]))
               for key in first[name]}
        for name in first
    }
