"""The "unknown" threshold after people are enrolled: the calibration played again with them.

Every person enrolled without retraining is one more centroid a stranger can come close to:
with more people to be mistaken for, more strangers are accepted at the same threshold
(``fit --enrollment-test`` measures it: docs/deployment.md). ``fit`` keeps what its
calibration models saw
(``calibration_features.npz``: each group model's features of the people it never met, of
its known people's held-out pictures, and its centroids); :func:`recalibrate` enrolls
simulated newcomers into each group model and sets the cosine threshold again:

- in group ``g``, for every stranger ``s`` and each of ``draws`` seeded draws, up to ``E``
  (the gallery's size) *other* people of the group, never seen by its model either, are
  enrolled from as many pictures as the real enrolled people have (their centroid: the unit
  mean of those pictures' unit features);
- ``s``'s pictures then score their best cosine over the group's trained people and the
  simulated newcomers; the threshold is set on those scores at ``far`` by the same bound as
  fit's (:data:`facefold.choices.FAR_BOUNDS`, per stranger: :mod:`.identities`);
- the newcomers' other pictures and the known people's held-out pictures give the share
  accepted and named right at that threshold.

A group of ``n`` people can simulate at most ``n - 1`` newcomers; more enrolled people than
that are simulated by all ``n - 1`` (the report says how many were), which understates the
effect of a large gallery: fewer, larger calibration groups (``fit --groups``) simulate more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from facefold.models.identities import identity_interval, threshold_by_bound
from facefold.models.scores import unit_rows

SIMULATION_DRAWS = 10
SIMULATION_SEED = 0


@dataclass(frozen=True)
class _Tally:
    """What one simulation gathers: strangers' scores and identities, and the decisions of
    newcomers' and known people's pictures as (best score, named right)."""

    stranger_scores: list[np.ndarray]
    stranger_ids: list[np.ndarray]
    newcomer: list[tuple[np.ndarray, np.ndarray]]
    known: list[tuple[np.ndarray, np.ndarray]]


def _centroid(features: np.ndarray) -> np.ndarray:
    return unit_rows(features.mean(axis=0, keepdims=True))[0]


def _decide(features: np.ndarray, centroids: np.ndarray, right: int | np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Best cosine of each row against ``centroids`` and whether it is the ``right`` one."""
    similarity = features.astype(np.float64) @ centroids.T.astype(np.float64)
    return similarity.max(axis=1), similarity.argmax(axis=1) == right


def _simulate_group(arrays: dict[str, np.ndarray], g: int, shots: Sequence[int],
                    draws: int, rng: np.random.Generator, tally: _Tally) -> int:
    """One group's simulation into ``tally``; returns how many newcomers it simulated."""
    mine = arrays["unknown_group"] == g
    features, ids = arrays["unknown_features"][mine], arrays["unknown_identity"][mine]
    trained = arrays["centroids"][arrays["centroid_group"] == g]
    known = arrays["known_group"] == g
    known_features, known_labels = arrays["known_features"][known], arrays["known_labels"][known]
    people = np.unique(ids)
    count = min(len(shots), len(people) - 1)
    for _ in range(draws):
        for s in people:
            others = rng.permutation(people[people != s])[:count]
            newcomers, tests = [], []
            for j, other in enumerate(others):
                pictures = rng.permutation(np.flatnonzero(ids == other))
                used = max(1, min(int(shots[j]), len(pictures) - 1))
                newcomers.append(_centroid(features[pictures[:used]]))
                tests.append((pictures[used:], len(trained) + j))
            centroids = np.concatenate([trained, *(c[None] for c in newcomers)]) if (
                newcomers) else trained
            tally.stranger_scores.append(_decide(features[ids == s], centroids, -1)[0])
            tally.stranger_ids.append(ids[ids == s])
            for pictures, index in tests:
                tally.newcomer.append(_decide(features[pictures], centroids, index))
            tally.known.append(_decide(known_features, centroids, known_labels))
    return count


def recalibrate(arrays: dict[str, np.ndarray], shots: Sequence[int], far: float, bound: str,
                draws: int = SIMULATION_DRAWS, seed: int = SIMULATION_SEED) -> dict[str, Any]:
    """The cosine threshold for a gallery of ``len(shots)`` enrolled people (``shots[i]``
    pictures each) from fit's calibration features ``arrays`` (see the module docstring):
    ``threshold``, ``far`` (the strangers' pictures accepted), ``strangers`` (the interval
    over strangers, :func:`.identities.identity_interval`), ``known_accuracy`` and
    ``newcomers_named_right`` (None with no newcomer simulated), ``simulated`` (newcomers per
    group), ``enrolled``, ``far_bound``."""
    rng = np.random.default_rng(seed)
    tally = _Tally([], [], [], [])
    groups = np.unique(arrays["unknown_group"])
    simulated = [_simulate_group(arrays, int(g), list(shots), draws if len(shots) else 1,
                                 rng, tally) for g in groups]
    scores = np.concatenate(tally.stranger_scores)
    names = np.asarray(arrays["names"])[np.concatenate(tally.stranger_ids)]
    threshold = threshold_by_bound(scores, names, far, bound)

    def accuracy(decisions: list[tuple[np.ndarray, np.ndarray]]) -> float | None:
        if not decisions or not sum(len(s) for s, _ in decisions):
            return None
        best = np.concatenate([s for s, _ in decisions])
        right = np.concatenate([r for _, r in decisions])
        return float(((best >= threshold) & right).mean())

    return {
        "enrolled": len(shots), "threshold": threshold, "far_bound": bound, "far_target": far,
        "far": float(np.mean(scores >= threshold)),
        "strangers": identity_interval(scores, names, threshold),
        "known_accuracy": accuracy(tally.known),
        "newcomers_named_right": accuracy(tally.newcomer),
        "simulated": simulated, "draws": draws, "seed": seed,
    }
