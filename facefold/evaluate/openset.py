"""Open-set recognition: answer "unknown" for people the model was never trained on.

A classifier always names one of its people. To say "unknown" it needs a
*score* (higher = more likely a known person) and a *threshold*. This module
holds the pure functions (scores, AUROC, the threshold at a false-accept rate,
the report) and the cross-validation that measures them
(``facefold cv --unknown-people K``):

- ``K`` people, chosen with ``train.seed``, are held out of training entirely;
  the other people are relabelled 0..M-1 and each case trains on them as usual.
- On the held-out shard of each case, every image of a known person and of an
  unknown person is scored, and for each score it reports the AUROC of
  known-vs-unknown and the accuracy on known people at the threshold where
  ``far`` (default 5 %) of the unknown images are accepted, counting a rejected
  known image as an error.
- The threshold of :data:`DEFAULT_SCORE` is stored in ``case-K/threshold.json``
  (with the class centroids in ``centroids.npy``), so ``facefold predict``
  on that run answers "unknown" out of the box.

Scores (:data:`SCORES`), all "higher = known":

- ``msp``: the maximum softmax probability;
- ``max_logit``: the largest logit;
- ``energy``: ``logsumexp(logits)`` (the negative free energy);
- ``cosine``: the largest cosine similarity between the penultimate-layer
  features (the input of the logits layer) and the per-person mean features
  of the training images.

CV folder layout (besides the usual ``cv.json`` and ``case-K/`` run folders)::

    OUT/openset.json          the held-out people, each case's report, the mean over cases
    OUT/case-K/openset.json   that case's report
    OUT/case-K/threshold.json the default score's threshold (and every score's)
    OUT/case-K/centroids.npy  (M, D) unit-length mean features per known person
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import logsumexp, softmax
from scipy.stats import rankdata

from facefold.config import Config
from facefold.data.pipeline import Split, concat, decode_shards
from facefold.data.records import read_labels, write_json_atomic
from facefold.train.trainer import Log, train

SCORES = ("msp", "max_logit", "energy", "cosine")
# Chosen by data (preset size48, one case each; AUROC msp / max_logit / energy / cosine):
#   celeb21, 4 of 18 people unknown, seed 0, shard 0: 0.793 / 0.818 / 0.817 / 0.799
#   celeb21, 4 of 18 people unknown, seed 1, shard 1: 0.802 / 0.827 / 0.828 / 0.781
#   ORL, 10 of 40 people unknown (20 unknown images): 0.872 / 0.793 / 0.791 / 0.875
# energy wins both celeb21 runs (120 unknown images each; also the best known-people accuracy
# at 5 % false accepts there) and the mean weighted by unknown images; on the small ORL run
# msp and cosine did better. Every score's threshold is stored, so --score can switch.
DEFAULT_SCORE = "energy"
DEFAULT_FAR = 0.05
THRESHOLD_FILE = "threshold.json"
CENTROIDS_FILE = "centroids.npy"
REPORT_FILE = "openset.json"


# ---------------------------------------------------------------- pure functions


def class_centroids(features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Unit-length mean of the unit-length ``features`` (N, D) of each class: (num_classes, D).

    Raises ``ValueError`` naming a class without any image.
    """
    unit = _unit(features)
    centroids = np.zeros((num_classes, features.shape[1]), np.float32)
    for c in range(num_classes):
        members = unit[labels == c]
        if not len(members):
            raise ValueError(f"class {c} has no training image: cannot compute its centroid")
        centroids[c] = members.mean(axis=0)
    return _unit(centroids)


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to length 1 (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def open_set_scores(
    logits: np.ndarray, features: np.ndarray | None = None, centroids: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Every score of :data:`SCORES` for ``logits`` (N, C): ``{name: (N,)}``, higher = known.

    ``cosine`` is included only when both ``features`` (N, D) and
    ``centroids`` (C, D) are given.
    """
    logits = np.asarray(logits, np.float64)
    scores = {
        "msp": softmax(logits, axis=1).max(axis=1),
        "max_logit": logits.max(axis=1),
        "energy": logsumexp(logits, axis=1),
    }
    if features is not None and centroids is not None:
        # float64 like the others: thresholds are float64, and NumPy compares a float32 array
        # with a Python float in float32, which can round a threshold onto a score.
        unit = _unit(np.asarray(features)).astype(np.float64)
        scores["cosine"] = (unit @ np.asarray(centroids, np.float64).T).max(axis=1)
    return scores


def auroc(known: Sequence[float], unknown: Sequence[float]) -> float:
    """Area under the ROC curve of known-vs-unknown: P(score of a known > score of an unknown).

    Ties count one half (the Mann-Whitney U statistic over n_known · n_unknown),
    computed with the rank formula. Raises ``ValueError`` when a side is empty.

    >>> auroc([0.9, 0.8, 0.4], [0.5, 0.1])
    0.8333333333333334
    """
    known, unknown = np.asarray(known, np.float64), np.asarray(unknown, np.float64)
    if not len(known) or not len(unknown):
        raise ValueError(
            f"AUROC needs known and unknown scores, got {len(known)} and {len(unknown)}"
        )
    ranks = rankdata(np.concatenate([known, unknown]))  # average ranks for ties
    u = ranks[: len(known)].sum() - len(known) * (len(known) + 1) / 2
    return float(u / (len(known) * len(unknown)))


def threshold_at_far(unknown: Sequence[float], far: float = DEFAULT_FAR) -> float:
    """The threshold at which at most ``far`` of the ``unknown`` scores are accepted.

    A score is *accepted* (called known) when ``score >= threshold``. The
    threshold lies halfway between the highest rejected unknown score and the
    next higher one, so exactly ``floor(far · N)`` unknowns are accepted
    (fewer when scores tie at the boundary).

    >>> round(threshold_at_far([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], far=0.2), 9)
    0.85
    """
    if not 0 <= far < 1:
        raise ValueError(f"far (false-accept rate) must be in [0, 1), got {far}")
    scores = np.sort(np.asarray(unknown, np.float64))[::-1]
    if not len(scores):
        raise ValueError("threshold_at_far needs at least one unknown score")
    accepted = int(np.floor(far * len(scores) + 1e-9))
    highest_rejected = scores[accepted]
    above = scores[scores > highest_rejected]
    if not len(above):  # nothing may be accepted: just above the best unknown
        return float(np.nextafter(highest_rejected, np.inf))
    middle = (above.min() + highest_rejected) / 2
    # Scores a hair apart: the midpoint may round onto the rejected score.
    return float(middle if middle > highest_rejected else above.min())


def open_set_report(
    known_scores: dict[str, np.ndarray],
    unknown_scores: dict[str, np.ndarray],
    correct: np.ndarray,
    far: float = DEFAULT_FAR,
) -> dict[str, dict[str, float]]:
    """Per score: AUROC, the threshold at ``far``, and what it does to the known people.

    ``known_scores``/``unknown_scores`` map a score name to the scores of the
    known (N,) and unknown (U,) images; ``correct`` (N,) says whether the
    classifier named each known image right. For each score the result has
    ``auroc``, ``threshold``, ``far`` (the false-accept rate actually reached),
    ``accepted`` (fraction of known images accepted) and ``known_accuracy``
    (accepted and named right, over all known images).
    """
    correct = np.asarray(correct, bool)
    report = {}
    for name, known in known_scores.items():
        known, unknown = np.asarray(known, np.float64), np.asarray(unknown_scores[name], np.float64)
        threshold = threshold_at_far(unknown, far)
        accepted = known >= threshold
        report[name] = {
            "auroc": auroc(known, unknown),
            "threshold": threshold,
            "far": float(np.mean(unknown >= threshold)),
            "accepted": float(accepted.mean()),
            "known_accuracy": float((accepted & correct).mean()),
        }
    return report


# ---------------------------------------------------------------- the data step


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
) -> OpenSetResult:
    """Cross-validate with ``unknown_people`` people held out of training; measure open-set scores.

    Case k trains on the known people of every shard but k (an ordinary,
    resumable run in ``OUT/case-k`` whose ``labels.txt`` lists the known
    people only) and is scored on all of shard k. Writes ``OUT/cv.json`` (so
    the usual accuracy table works), ``OUT/openset.json`` and, per case,
    ``openset.json``, ``threshold.json`` and ``centroids.npy``.
    """
    from facefold.evaluate.cv import CASE_DIR, parse_folds  # cv imports the executor; keep lazy

    if not 0 <= far < 1:  # before any training
        raise ValueError(f"--far (false-accept rate) must be in [0, 1), got {far}")
    config.require_cnn("--unknown-people")
    out, labels = Path(out), read_labels(data_dir)
    unknown = choose_unknown_people(labels, unknown_people, config.train.seed)
    splits = decode_shards(data_dir, config.model.channels)
    cases = parse_folds(folds, len(splits))
    known_splits, unknown_splits = split_people(splits, unknown, len(labels))
    known_names = [n for i, n in enumerate(labels) if i not in unknown]
    unknown_names = [labels[i] for i in unknown]
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "cv.json", {
        "data_dir": str(Path(data_dir).resolve()), "cases": cases, "config": config.to_dict(),
        "unknown_people": unknown_names,
    })
    reports = {}
    for k in cases:
        log(f"=== Open-set case #{k}: {len(known_names)} known people, "
            f"{len(unknown_names)} unknown; evaluate on shard {k} ===")
        run_dir = out / CASE_DIR.format(k)
        train(data_dir, config, run_dir, [k], splits=known_splits, log=log, people=known_names)
        reports[k] = evaluate_case(run_dir, known_splits, unknown_splits[k], k, far)
        reports[k]["unknown_people"] = unknown_names
        write_json_atomic(run_dir / REPORT_FILE, reports[k])
    result = OpenSetResult(unknown_names, cases, reports, _mean_report(reports), far)
    write_json_atomic(out / REPORT_FILE, {
        "unknown_people": unknown_names, "far": far, "default_score": DEFAULT_SCORE,
        "mean": result.mean, "cases": {str(k): r for k, r in reports.items()},
    })
    return result


def evaluate_case(
    run_dir: Path, known_splits: list[Split], unknown: Split, k: int, far: float
) -> dict[str, Any]:
    """Score shard ``k`` with the run's final model; write its centroids and threshold.

    Returns the report: ``scores`` (per score, see :func:`open_set_report`),
    ``closed_set_accuracy`` and the image counts.
    """
    from facefold.predict import Predictor  # predict builds on evaluate, not the reverse

    predictor = Predictor.load(run_dir)
    trained = concat([s for j, s in enumerate(known_splits) if j != k])
    train_features = predictor.outputs_for_arrays(trained.images)["features"]
    centroids = class_centroids(train_features, trained.labels, len(predictor.labels))
    np.save(run_dir / CENTROIDS_FILE, centroids)
    known = predictor.outputs_for_arrays(known_splits[k].images)
    other = predictor.outputs_for_arrays(unknown.images)
    correct = known["logits"].argmax(axis=1) == known_splits[k].labels
    scores = open_set_report(
        open_set_scores(known["logits"], known["features"], centroids),
        open_set_scores(other["logits"], other["features"], centroids),
        correct, far,
    )
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
    write_json_atomic(run_dir / THRESHOLD_FILE, {
        "score": DEFAULT_SCORE,
        "threshold": scores[DEFAULT_SCORE]["threshold"],
        "far": far,
        "source": source,
        "thresholds": {name: row["threshold"] for name, row in scores.items()},
    })


def _mean_report(reports: dict[int, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean of every number of every score over the cases."""
    first = next(iter(reports.values()))["scores"]
    return {
        name: {key: float(np.mean([r["scores"][name][key] for r in reports.values()]))
               for key in first[name]}
        for name in first
    }


def read_threshold(run_dir: str | Path) -> dict[str, Any] | None:
    """``RUN/threshold.json`` as a dict, or None when the run has none."""
    path = Path(run_dir) / THRESHOLD_FILE
    return json.loads(path.read_text()) if path.is_file() else None
