"""Open-set scores: how sure a model is that a face is one of its people (higher = known).

A classifier always names one of its people. To say "unknown" it needs a *score* and a
*threshold*: a face whose score is below the threshold is unknown. This module holds the
scores (:data:`SCORES`, the one registry that ``--score``, ``facefold fit`` and the
predictor read) and the pure functions on them that deployment needs: the per-person
centroids, the AUROC of known-vs-unknown and the threshold at a false-accept rate.
:mod:`facefold.evaluate.openset` makes the open-set report of a cross-validation from them.

The scores, all "higher = known":

- ``msp``: the maximum softmax probability;
- ``max_logit``: the largest logit;
- ``energy``: ``logsumexp(logits)`` (the negative free energy);
- ``cosine``: the largest cosine similarity between the penultimate-layer features (the
  input of the logits layer) and the per-person mean features of the training images
  (:func:`class_centroids`). It is the score that names people enrolled without retraining
  (:data:`CENTROID_SCORE`).
- ``nearest``: per person, the mean cosine similarity of the face's features to the most
  similar of that person's own training pictures (:class:`PersonPictures`; the top
  :data:`NEAREST_SHARE` of them, at least :data:`NEAREST_AT_LEAST`), the largest over people.
  A person whose pictures spread widely has a centroid that none of their pictures lies
  close to, and a stranger between their looks can come as close to it as their own
  pictures do; close to several of their actual pictures he rarely is (measured:
  docs/deployment.md, "Strangers it never met").

``cosine`` and ``nearest`` :attr:`Score.uses_centroids`: a face they accept is named by the
nearest person (:func:`person_similarity`), not by the classifier.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# scipy is imported where it is used: scipy.stats alone takes a second to import.

# The share of a person's pictures the ``nearest`` score averages (the most similar ones),
# and the fewest it averages. A share, not a count, so that calibration models, trained on
# fewer shards than the model they calibrate, score strangers alike: the top 3 of more
# pictures lie closer to every stranger. At least 3, because the single nearest picture is
# a matter of chance with few: on ORL (8 pictures a person) one person never seen was
# accepted on 9 of 10 photos by the nearest one picture, at every bound; by the top 3 on 1
# (``pooled``) and none (``upper``). docs/deployment.md, "Strangers it never met".
NEAREST_SHARE = 0.02
NEAREST_AT_LEAST = 3


@dataclass(frozen=True)
class PersonPictures:
    """The unit-length ``features`` (M, D) of people's own pictures and their ``owners``
    (M,): the person index of each, in ``0..people-1``."""

    features: np.ndarray
    owners: np.ndarray
    people: int

    def __post_init__(self) -> None:
        if len(self.features) != len(self.owners):
            raise ValueError(f"{len(self.features)} pictures' features for "
                             f"{len(self.owners)} owners")
        counts = np.bincount(np.asarray(self.owners, np.int64), minlength=self.people)
        if len(counts) > self.people or not counts.all():
            missing = [int(i) for i in np.flatnonzero(counts[:self.people] == 0)]
            raise ValueError(f"every person needs a picture: person {missing or 'index'} "
                             f"out of {self.people} has none or does not exist")


def person_pictures(features: np.ndarray, labels: np.ndarray, people: int) -> PersonPictures:
    """The :class:`PersonPictures` of ``features`` (N, D) of pictures labelled ``labels``."""
    return PersonPictures(unit_rows(features), np.asarray(labels, np.int32), people)


def nearest_similarity(features: np.ndarray, pictures: PersonPictures,
                       share: float = NEAREST_SHARE) -> np.ndarray:
    """(N, people): per person, the mean cosine similarity of each row of ``features`` to the
    ``share`` of the person's pictures most similar to it: ``k = share × n`` of their ``n``
    pictures, at least :data:`NEAREST_AT_LEAST` (all of a person with fewer), the last
    counted by its fraction (``k = 3.5``: the three most similar, and half of the fourth)."""
    similarity = unit_rows(np.asarray(features)).astype(np.float64) @ np.asarray(
        pictures.features, np.float64).T  # (N, M)
    result = np.empty((len(similarity), pictures.people))
    for person in range(pictures.people):
        own = np.sort(similarity[:, pictures.owners == person], axis=1)[:, ::-1]
        k = max(float(NEAREST_AT_LEAST), share * own.shape[1])
        whole = min(int(k), own.shape[1])
        weights = np.zeros(own.shape[1])
        weights[:whole] = 1.0
        if whole < own.shape[1]:
            weights[whole] = k - whole
        result[:, person] = own @ weights / weights.sum()
    return result


def person_similarity(score: str, features: np.ndarray, centroids: np.ndarray | None,
                      pictures: PersonPictures | None) -> np.ndarray:
    """(N, people): how close each face is to each person by ``score``, one of the scores
    that :attr:`Score.uses_centroids` (its largest value per row is the score; its argmax
    names the face)."""
    if SCORES[score].uses_pictures:
        if pictures is None:
            raise ValueError(f"the {score} score needs the people's pictures' features")
        return nearest_similarity(features, pictures)
    if centroids is None:
        raise ValueError(f"the {score} score needs the people's centroids")
    unit = unit_rows(np.asarray(features)).astype(np.float64)
    return unit @ np.asarray(centroids, np.float64).T


# (logits (N, C) float64, features (N, D) or None, centroids (C, D) or None, pictures or None)
# -> (N,)
ScoreFunction = Callable[[np.ndarray, np.ndarray | None, np.ndarray | None,
                          PersonPictures | None], np.ndarray]


@dataclass(frozen=True)
class Score:
    """One open-set score. ``uses_centroids``: it compares a face's features with the
    people's (so it needs them, and names a face by the nearest person): by their centroids,
    or with ``uses_pictures`` by their pictures."""

    name: str
    compute: ScoreFunction
    uses_centroids: bool = False
    uses_pictures: bool = False


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to length 1 (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def _msp(logits: np.ndarray, *_: object) -> np.ndarray:
    from scipy.special import softmax

    return softmax(logits, axis=1).max(axis=1)


def _max_logit(logits: np.ndarray, *_: object) -> np.ndarray:
    return logits.max(axis=1)


def _energy(logits: np.ndarray, *_: object) -> np.ndarray:
    from scipy.special import logsumexp

    return logsumexp(logits, axis=1)


def _cosine(logits: np.ndarray, features: np.ndarray | None,
            centroids: np.ndarray | None, *_: PersonPictures | None) -> np.ndarray:
    # float64 like the others: thresholds are float64, and NumPy compares a float32 array
    # with a Python float in float32, which can round a threshold onto a score.
    return person_similarity("cosine", np.asarray(features), centroids, None).max(axis=1)


def _nearest(logits: np.ndarray, features: np.ndarray | None, centroids: np.ndarray | None,
             pictures: PersonPictures | None) -> np.ndarray:
    return person_similarity("nearest", np.asarray(features), centroids, pictures).max(axis=1)


# Keyed in the order of facefold.choices.SCORES, the names the CLI offers (a test checks both
# hold the same names).
SCORES: dict[str, Score] = {score.name: score for score in (
    Score("msp", _msp),
    Score("max_logit", _max_logit),
    Score("energy", _energy),
    Score("cosine", _cosine, uses_centroids=True),
    Score("nearest", _nearest, uses_centroids=True, uses_pictures=True),
)}
# The score people enrolled without retraining are named by: the one that uses centroids
# alone (the gallery keeps every enrolled picture, but the recalibration after an enroll,
# facefold.models.enrollment, simulates newcomers by their centroids).
[CENTROID_SCORE] = [name for name, score in SCORES.items()
                    if score.uses_centroids and not score.uses_pictures]
# Chosen by data: on celeb21's open-set runs energy separated strangers about as well as the
# best score and named the most known people right at the default false-accept rate
# (docs/results.md, "Unknown people on celeb21"). Every score's threshold is stored, so
# --score can switch.
DEFAULT_SCORE = "energy"
DEFAULT_FAR = 0.05


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
    logits: np.ndarray, features: np.ndarray | None = None, centroids: np.ndarray | None = None,
    pictures: PersonPictures | None = None,
) -> dict[str, np.ndarray]:
    """Every score of :data:`SCORES` for ``logits`` (N, C): ``{name: (N,)}``, higher = known.

    The scores that use centroids are included only when both ``features`` (N, D) and
    ``centroids`` (C, D) are given; the one that uses pictures only with ``pictures`` too.
    """
    logits = np.asarray(logits, np.float64)
    with_centroids = features is not None and centroids is not None

    def computable(score: Score) -> bool:
        if score.uses_pictures:
            return with_centroids and pictures is not None
        return with_centroids or not score.uses_centroids

    return {name: score.compute(logits, features, centroids, pictures)
            for name, score in SCORES.items() if computable(score)}


def auroc(known: Sequence[float], unknown: Sequence[float]) -> float:
    """Area under the ROC curve of known-vs-unknown: P(score of a known > score of an unknown).

    Ties count one half (the Mann-Whitney U statistic over n_known · n_unknown),
    computed with the rank formula. Raises ``ValueError`` when a side is empty.

    >>> auroc([0.9, 0.8, 0.4], [0.5, 0.1])
    0.8333333333333334
    """
    from scipy.stats import rankdata

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


def best_two(similarity: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's best value, its column and the second best value (``-inf`` with one
    column)."""
    best = similarity.argmax(axis=1)
    rows = np.arange(len(similarity))
    top = similarity[rows, best]
    rest = similarity.copy()
    rest[rows, best] = -np.inf
    return top, best, rest.max(axis=1) if rest.shape[1] else np.full(len(rows), -np.inf)
