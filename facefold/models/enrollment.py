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

**On the model's own gallery.** When the model's features do not depend on its training
(``fit`` then stores every training picture's features: ``gallery_features``), the replay
needs no group model: for every person ``s`` and draw, up to ``E`` of the *other* people
are enrolled from ``shots`` of their pictures, and ``s``'s pictures score as a stranger's
against every trained person's centroid (from all their pictures) but ``s``'s and the ``E``
newcomers' (the ``--strangers`` people's against everybody): one face fewer than the model
has, plus one more per enrolled person, where a group model has a quarter fewer. The
newcomers stand in for new people while staying among the trained ones (there is nobody
else to draw them from), so they are near copies of faces already there, and the replay
understates what truly new people add. The newcomers' other pictures are named against the
trained people without them and the newcomers; known faces are each shard's pictures of the
other people against every centroid from the other shards and the newcomers. With nobody
enrolled the replay gives back ``fit``'s gallery calibration of the cosine score exactly.

As in ``fit``, every replayed stranger is also measured against a threshold set without
them (:func:`~facefold.models.identities.held_out_rates`; on the gallery a trained person
and their enrolled copy are one person to leave out): what people new to the model meet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from facefold.models.identities import held_out_rates, identity_interval, threshold_by_bound
from facefold.models.scores import best_two, unit_rows

SIMULATION_DRAWS = 10
SIMULATION_SEED = 0
# Bump when the replay's numbers change: a recalibration kept in a model folder by another
# version is replayed again (facefold.runs.read_enrolled_calibration).
REPLAY_VERSION = 2


@dataclass(frozen=True)
class _Tally:
    """What one simulation gathers: strangers' scores, identities, best matches and
    runner-up scores (:func:`~facefold.models.identities.held_out_rates`), and the decisions
    of newcomers' and known people's pictures as (best score, named right)."""

    stranger_scores: list[np.ndarray]
    stranger_ids: list[np.ndarray]
    # On the model's own gallery only (a group model met none of its strangers, so leaving
    # one out leaves out their own scores only): the person each score came from, and the
    # best score over everyone else.
    stranger_best: list[np.ndarray]
    stranger_runner_up: list[np.ndarray]
    newcomer: list[tuple[np.ndarray, np.ndarray]]
    known: list[tuple[np.ndarray, np.ndarray]]


def _centroid(features: np.ndarray) -> np.ndarray:
    return unit_rows(features.mean(axis=0, keepdims=True))[0]


def _decide(features: np.ndarray, centroids: np.ndarray, right: int | np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Best cosine of each row against ``centroids`` and whether it is the ``right`` one."""
    similarity = features.astype(np.float64) @ centroids.T.astype(np.float64)
    return similarity.max(axis=1), similarity.argmax(axis=1) == right


def _enroll(features: np.ndarray, ids: np.ndarray, others: np.ndarray, shots: Sequence[int],
            rng: np.random.Generator, first: int
            ) -> tuple[np.ndarray, list[tuple[np.ndarray, int]]]:
    """Enroll each of ``others`` from ``shots[j]`` of their pictures (``features`` rows with
    ``ids``), drawn with ``rng`` and at least one kept back: their centroids (E, D), and per
    newcomer ``(the rows of their other pictures, their index in the gallery)``, the gallery
    holding ``first`` people before them."""
    newcomers, tests = [], []
    for j, other in enumerate(others):
        pictures = rng.permutation(np.flatnonzero(ids == other))
        used = max(1, min(int(shots[j]), len(pictures) - 1))
        newcomers.append(_centroid(features[pictures[:used]]))
        tests.append((pictures[used:], first + j))
    return np.array(newcomers, np.float32).reshape(len(others), features.shape[1]), tests


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
            newcomers, tests = _enroll(features, ids, others, shots, rng, len(trained))
            centroids = np.concatenate([trained, newcomers])
            tally.stranger_scores.append(_decide(features[ids == s], centroids, -1)[0])
            tally.stranger_ids.append(ids[ids == s])
            for pictures, index in tests:
                tally.newcomer.append(_decide(features[pictures], centroids, index))
            tally.known.append(_decide(known_features, centroids, known_labels))
    return count


def _centroids_of(features: np.ndarray, labels: np.ndarray, people: np.ndarray
                  ) -> np.ndarray:
    """Each of ``people``'s centroid from their rows of ``features`` (P, D)."""
    return np.stack([_centroid(features[labels == p]) for p in people])


def _simulate_gallery(arrays: dict[str, np.ndarray], shots: Sequence[int], draws: int,
                      rng: np.random.Generator, tally: _Tally) -> int:
    """The replay on the model's own gallery (module docstring) into ``tally``; returns how
    many newcomers each stranger met."""
    features, labels = arrays["gallery_features"], arrays["gallery_labels"]
    shards = arrays["gallery_shards"]
    people = np.unique(labels[shards >= 0])
    count = min(len(shots), len(people) - 1)
    whole = _centroids_of(features, labels, people)  # row i: people[i]
    shard_ids = np.unique(shards[shards >= 0])
    without = {k: _centroids_of(features[shards != k], labels[shards != k], people)
               for k in shard_ids}
    for _ in range(draws):
        for s in np.unique(labels):
            others = rng.permutation(people[people != s])[:count]
            stay = np.flatnonzero(~np.isin(people, others))  # rows: the trained people
            enrolled, tests = _enroll(features, labels, others, shots, rng, len(stay))
            # The stranger meets every trained person but themself, and the newcomers: one
            # face more per enrolled person, as in the model (a newcomer stays among the
            # trained people here too; there is nobody else to stand in for them).
            met = np.concatenate([whole[people != s], enrolled])
            mine = labels == s
            # Each person met, at their best (trained or enrolled), for the held-out rates:
            # were the best gone, the runner-up would decide.
            similarity = features[mine].astype(np.float64) @ met.T.astype(np.float64)
            who = np.concatenate([people[people != s], others])
            per_person = np.full((int(mine.sum()), len(people)), -np.inf)
            for column, person in enumerate(np.searchsorted(people, who)):
                per_person[:, person] = np.maximum(per_person[:, person], similarity[:, column])
            top, best, runner_up = best_two(per_person)
            tally.stranger_scores.append(top)
            tally.stranger_ids.append(labels[mine])
            tally.stranger_best.append(people[best])
            tally.stranger_runner_up.append(runner_up)
            gallery = np.concatenate([whole[stay], enrolled])
            for pictures, index in tests:
                tally.newcomer.append(_decide(features[pictures], gallery, index))
            for k in shard_ids:  # known faces: one shard against the others' centroids
                known = (shards == k) & np.isin(labels, people[stay])
                tally.known.append(_decide(
                    features[known], np.concatenate([without[k], enrolled]),
                    np.searchsorted(people, labels[known])))
    return count


def recalibrate(arrays: dict[str, np.ndarray], shots: Sequence[int], far: float, bound: str,
                draws: int = SIMULATION_DRAWS, seed: int = SIMULATION_SEED) -> dict[str, Any]:
    """The cosine threshold for a gallery of ``len(shots)`` enrolled people (``shots[i]``
    pictures each) from fit's calibration features ``arrays`` (see the module docstring):
    ``threshold``, ``far`` (the strangers' pictures accepted), ``strangers`` (the interval
    over strangers, :func:`.identities.identity_interval`), ``known_accuracy`` and
    ``newcomers_named_right`` (None with no newcomer simulated), ``simulated`` (newcomers per
    group; on the gallery, one number: per stranger), ``enrolled``, ``far_bound``, and
    ``replay``: "gallery" or "groups"."""
    rng = np.random.default_rng(seed)
    tally = _Tally([], [], [], [], [], [])
    draws_made = draws if len(shots) else 1
    if "gallery_features" in arrays:
        simulated = [_simulate_gallery(arrays, list(shots), draws_made, rng, tally)]
    else:
        simulated = [_simulate_group(arrays, int(g), list(shots), draws_made, rng, tally)
                     for g in np.unique(arrays["unknown_group"])]
    scores = np.concatenate(tally.stranger_scores)
    names = np.asarray(arrays["names"])[np.concatenate(tally.stranger_ids)]
    threshold = threshold_by_bound(scores, names, far, bound)
    best = runner_up = None
    if tally.stranger_best:  # the gallery replay
        best = np.asarray(arrays["names"])[np.concatenate(tally.stranger_best)]
        runner_up = np.concatenate(tally.stranger_runner_up)
    held_out = held_out_rates(scores, names, far, bound, best, runner_up)

    def accuracy(decisions: list[tuple[np.ndarray, np.ndarray]]) -> float | None:
        if not decisions or not sum(len(s) for s, _ in decisions):
            return None
        best = np.concatenate([s for s, _ in decisions])
        right = np.concatenate([r for _, r in decisions])
        return float(((best >= threshold) & right).mean())

    return {
        "enrolled": len(shots), "threshold": threshold, "far_bound": bound, "far_target": far,
        "far": float(np.mean(scores >= threshold)),
        "strangers": identity_interval(scores, names, threshold, held_out=held_out),
        "known_accuracy": accuracy(tally.known),
        "newcomers_named_right": accuracy(tally.newcomer),
        "simulated": simulated, "draws": draws, "seed": seed,
        "replay": "gallery" if "gallery_features" in arrays else "groups",
    }
