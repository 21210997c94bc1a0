"""Open-set evaluation: how well a model tells its people from people it never saw.

The scores themselves, the AUROC and the threshold at a false-accept rate are pure functions
of :mod:`facefold.models.scores` (deployment uses them too); this module makes the report
of them; :mod:`facefold.evaluate.openset_cv` holds the cross-validation that measures them
(``facefold cv --unknown-people K``):

- ``K`` people, chosen with ``train.seed``, are held out of training entirely;
  the other people are relabelled 0..M-1 and each case trains on them as usual.
- On the held-out shard of each case, every image of a known person and of an
  unknown person is scored, and for each score it reports the AUROC of
  known-vs-unknown and the accuracy on known people at the threshold where
  ``far`` (default 5 %) of the unknown images are accepted, counting a rejected
  known image as an error.
- The threshold of :data:`~facefold.models.scores.DEFAULT_SCORE` is stored in
  ``case-K/threshold.json`` (with the class centroids in ``centroids.npy``), so
  ``facefold predict`` on that run answers "unknown" out of the box.

CV folder layout (besides the usual ``cv.json`` and ``case-K/`` run folders)::

    OUT/openset.json          the held-out people, each case's report, the mean over cases
    OUT/case-K/openset.json   that case's report
    OUT/case-K/threshold.json the default score's threshold (and every score's)
    OUT/case-K/centroids.npy  (M, D) unit-length mean features per known person
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facefold.models.scores import DEFAULT_FAR, DEFAULT_SCORE, auroc, threshold_at_far


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
