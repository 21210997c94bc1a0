"""Open-set recognition: answer "unknown" for people the model was never trained on.

A classifier always names one of its people. To say "unknown" it needs a
*score* (higher = more likely a known person) and a *threshold*. This module
holds the pure functions (scores, AUROC, the threshold at a false-accept rate,
the report); :mod:`facefold.evaluate.openset_cv` holds the cross-validation
that measures them (``facefold cv --unknown-people K``):

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

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import logsumexp, softmax
from scipy.stats import rankdata

from facefold.models.inference import unit_rows

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


# ---------------------------------------------------------------- pure functions


def class_centroids(features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Unit-length mean of the unit-length ``features`` (N, D) of each class: (num_classes, D).

    Raises ``ValueError`` naming a class without any image.
    """
    unit = unit_rows(features)
    centroids = np.zeros((num_classes, features.shape[1]), np.float32)
    for c in range(num_classes):
        members = unit[labels == c]
        if not len(members):
            raise ValueError(f"class {c} has no training image: cannot compute its centroid")
        centroids[c] = members.mean(axis=0)
    return unit_rows(centroids)


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
        unit = unit_rows(np.asarray(features)).astype(np.float64)
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


def threshold_entry(scores: dict[str, dict[str, float]], far: float, source: str
                    ) -> dict[str, Any]:
    """The content of a ``threshold.json``: the default score's threshold, and every score's."""
    return {
        "score": DEFAULT_SCORE,
        "threshold": scores[DEFAULT_SCORE]["threshold"],
        "far": far,
        "source": source,
        "thresholds": {name: row["threshold"] for name, row in scores.items()},
    }
