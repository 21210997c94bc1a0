"""False accepts counted per stranger, with an interval over strangers, not over pictures.

A threshold set where 1 % of the calibration strangers' *pictures* are accepted can hide one
look-alike accepted on a fifth of their photos while the others are never accepted: pooled
pictures let a few people decide the rate, and say nothing of how much it varies from one
stranger to the next. Here every stranger (an *identity*: one person, all their pictures)
counts once:

- :func:`identity_rates`: each stranger's false-accept rate at a threshold, the share of
  their pictures whose score is at least the threshold;
- :func:`identity_interval`: the mean of those rates, the worst stranger, and a bootstrap over
  the strangers (people resampled with replacement, not pictures; seeded) giving the 95 %
  interval of the mean rate; its upper end is the "95 % upper bound" a user can plan with;
- :func:`prediction_interval`: where the rate of *new* strangers is expected to fall, one new
  person or the mean of a group of them. The interval of the mean says where the average
  stranger lies; a few new people scatter much more widely around it (docs/deployment.md,
  "Strangers it never met"), so a user meeting a handful of strangers should plan with this
  one;
- :func:`held_out_rates`: each stranger's rate at a threshold set *without them*. The
  in-sample rates flatter the threshold, which was chosen on those very people, the more
  so the fewer they are; people new to the model are accepted more often, about as often
  as the rates measured each without them say (docs/deployment.md, "People it never
  met"). :func:`identity_interval` states both;
- :func:`threshold_at_upper_bound`: the lowest (most accepting) threshold whose upper bound
  is at most the target false-accept rate (``fit --far-bound upper``);
- :func:`threshold_at_worst`: the lowest threshold at which no stranger at all has more than
  the target rate of their pictures accepted (``fit --far-bound worst``). The interval above
  is about the *average* stranger; one new look-alike can lie far above it. Among ``n``
  calibration strangers and one new one, each is equally likely to be the most accepted, so a
  new stranger is worse than all ``n`` with a chance of about ``1 / (n + 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from facefold.choices import FAR_BOUNDS
from facefold.models.scores import threshold_at_far

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
# Each stranger left out costs a threshold over all the others: with more strangers than
# this, a seeded sample of them is left out in turn (their rates estimate everyone's).
HELD_OUT_PEOPLE = 100


def _arrays(scores: Sequence[float], identities: Sequence[Any]
            ) -> tuple[np.ndarray, np.ndarray]:
    scores, identities = np.asarray(scores, np.float64), np.asarray(identities)
    if scores.shape != identities.shape or scores.ndim != 1:
        raise ValueError(f"one identity per score needed, got {identities.shape} identities "
                         f"for {scores.shape} scores")
    return scores, identities


def identity_rates(scores: Sequence[float], identities: Sequence[Any], threshold: float
                   ) -> tuple[list[Any], np.ndarray]:
    """``(identities in sorted order, their false-accept rates (I,))``: for each identity the
    share of its ``scores`` (one per picture) that are at least ``threshold``."""
    scores, identities = _arrays(scores, identities)
    names, index = np.unique(identities, return_inverse=True)
    accepted = np.bincount(index, weights=scores >= threshold, minlength=len(names))
    return names.tolist(), accepted / np.bincount(index, minlength=len(names))


def resample_indices(identities: int, resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED, group: int | None = None) -> np.ndarray:
    """The bootstrap's draws (resamples, group): each row draws ``group`` people (all
    ``identities`` by default) with replacement, from ``numpy.random.default_rng(seed)``."""
    group = identities if group is None else group
    if identities < 1 or resamples < 1 or group < 1:
        raise ValueError(f"the bootstrap needs at least one identity, resample and person "
                         f"drawn, got {identities}, {resamples} and {group}")
    return np.random.default_rng(seed).integers(0, identities, size=(resamples, group))


def _bounds(rates: np.ndarray, draws: np.ndarray, confidence: float) -> tuple[float, float]:
    """The ``confidence`` percentile interval of the mean rate over the ``draws``."""
    means = rates[draws].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def prediction_interval(rates: Sequence[float], group: int = 1,
                        resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                        confidence: float = CONFIDENCE) -> tuple[float, float]:
    """``(low, upper)``: the ``confidence`` interval of the mean false-accept rate of ``group``
    *new* strangers, each drawn like one of the strangers whose ``rates`` were measured.

    Each of ``resamples`` draws picks ``group`` of the measured rates with replacement (the
    bootstrap's predictive distribution: a new person is as likely to be like any measured
    one); the interval is the draws' central ``confidence`` share. With ``group=1`` it is
    the spread of the measured rates themselves. A measured rate already holds its person's
    sampling noise over their pictures, so a new person with about as many pictures needs
    none added. It cannot reach above the most accepted measured stranger: with ``n``
    strangers a new one is above all of them with a chance of about ``1 / (n + 1)``."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rates = np.asarray(rates, np.float64)
    return _bounds(rates, resample_indices(len(rates), resamples, seed, group), confidence)


def identity_interval(scores: Sequence[float], identities: Sequence[Any], threshold: float,
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                      confidence: float = CONFIDENCE,
                      held_out: dict[str, float] | None = None) -> dict[str, Any]:
    """The strangers' false-accept rates at ``threshold``, one per identity: ``rates``
    ({identity: rate}, as strings), ``mean`` (every identity counts once), ``worst`` (its
    identity and rate), ``low``/``upper`` (the ``confidence`` percentile interval of the mean
    over ``resamples`` bootstrap resamples of the identities, ``seed``), ``new_person``
    (``low``/``upper``: where one new stranger's rate falls, :func:`prediction_interval`) and
    the counts. ``held_out`` ({identity: rate}, :func:`held_out_rates`; all the strangers or
    a sample of them) adds the same summary of the rates measured each without the person
    (``held_out``: what people new to the model can expect)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    names, rates = identity_rates(scores, identities, threshold)
    summary = {"identities": len(names),
               **_summary([str(n) for n in names], rates, resamples, seed, confidence),
               "confidence": confidence, "resamples": resamples, "seed": seed}
    if held_out is not None:
        strangers = set(summary["rates"])
        if not held_out or not set(held_out) <= strangers:
            raise ValueError(f"held-out rates are for some of the strangers, got "
                             f"{sorted(set(held_out) - strangers)[:3] or 'none'}")
        people = sorted(held_out)
        summary["held_out"] = _summary(people, np.array([held_out[n] for n in people]),
                                       resamples, seed, confidence)
    return summary


def _summary(names: list[str], rates: np.ndarray, resamples: int, seed: int,
             confidence: float) -> dict[str, Any]:
    """Mean, worst, interval of the mean and one new person's range of ``rates``."""
    low, high = _bounds(rates, resample_indices(len(names), resamples, seed), confidence)
    worst = int(np.argmax(rates))
    new_low, new_high = prediction_interval(rates, 1, resamples, seed, confidence)
    return {"mean": float(rates.mean()),
            "worst": {"identity": names[worst], "rate": float(rates[worst])},
            "low": low, "upper": high, "new_person": {"low": new_low, "upper": new_high},
            "rates": {n: float(r) for n, r in zip(names, rates, strict=True)}}


def held_out_rates(scores: Sequence[float], identities: Sequence[Any], far: float, bound: str,
                   best: Sequence[Any] | None = None,
                   runner_up: Sequence[float] | None = None,
                   most: int = HELD_OUT_PEOPLE, seed: int = BOOTSTRAP_SEED) -> dict[str, float]:
    """Each stranger's false-accept rate at the threshold ``bound`` sets at ``far``
    (:func:`threshold_by_bound`) on the *other* strangers' ``scores``: {identity: rate}.

    When a stranger is also someone the others are compared with (the model's own gallery:
    every person a stranger to the rest), leaving them out also takes them out of what the
    others meet: a score whose ``best`` match was that person falls to its ``runner_up``
    (the best over everyone else). Without ``best`` only the person's own scores are left
    out (a calibration group's model never met its strangers, so no stranger is in its
    gallery). With more than ``most`` strangers, ``most`` of them drawn with ``seed`` are
    left out in turn, and only they have a rate here.
    """
    scores, identities = _checked(scores, identities, far)
    if (best is None) != (runner_up is None):
        raise ValueError("best and runner_up go together")
    if best is not None:
        best, runner_up = np.asarray(best), np.asarray(runner_up, np.float64)
        if best.shape != scores.shape or runner_up.shape != scores.shape:
            raise ValueError(f"one best match and runner-up per score needed, got "
                             f"{best.shape} and {runner_up.shape} for {scores.shape}")
    people = np.unique(identities)
    if len(people) > most:
        people = np.sort(np.random.default_rng(seed).choice(people, most, replace=False))
    rates = {}
    for person in people:
        mine, others = identities == person, identities != person
        if not others.any():
            raise ValueError("held-out rates need at least two strangers")
        rest = scores[others] if best is None else np.where(
            best[others] == person, runner_up[others], scores[others])
        threshold = threshold_by_bound(rest, identities[others], far, bound)
        rates[str(person)] = float(np.mean(scores[mine] >= threshold))
    return rates


def _candidates(scores: np.ndarray) -> list[float]:
    """Every threshold that accepts a different set of ``scores``, lowest first: the lowest
    score, the points halfway between consecutive distinct scores (like
    :func:`facefold.models.scores.threshold_at_far`) and just above the highest."""
    distinct = np.unique(scores)
    middles = (distinct[:-1] + distinct[1:]) / 2
    # Scores a hair apart: a midpoint may round onto the lower score; take the higher then.
    middles = np.where(middles > distinct[:-1], middles, distinct[1:])
    return [float(distinct[0]), *middles.tolist(), float(np.nextafter(distinct[-1], np.inf))]


def threshold_at_upper_bound(scores: Sequence[float], identities: Sequence[Any], far: float,
                             resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                             confidence: float = CONFIDENCE) -> float:
    """The lowest threshold at which the upper end of the ``confidence`` interval of the mean
    per-identity false-accept rate (:func:`identity_interval`) is at most ``far``.

    Candidates are those of :func:`facefold.models.scores.threshold_at_far`, and just above
    the highest score, where no stranger is accepted and the bound is 0. Raising the
    threshold never raises a rate, so the bound falls as the threshold rises and a bisection
    finds the lowest one that holds.
    """
    scores, identities = _checked(scores, identities, far)
    candidates = _candidates(scores)
    names, index = np.unique(identities, return_inverse=True)
    counts = np.bincount(index, minlength=len(names))
    draws = resample_indices(len(names), resamples, seed)

    def upper(threshold: float) -> float:
        rates = np.bincount(index, weights=scores >= threshold, minlength=len(names)) / counts
        return _bounds(rates, draws, confidence)[1]

    lo, hi = 0, len(candidates) - 1  # upper(candidates[hi]) == 0 <= far always
    while lo < hi:
        mid = (lo + hi) // 2
        if upper(candidates[mid]) <= far:
            hi = mid
        else:
            lo = mid + 1
    return candidates[lo]


def threshold_at_worst(scores: Sequence[float], identities: Sequence[Any], far: float
                       ) -> float:
    """The lowest threshold at which no identity has more than ``far`` of its scores
    accepted: identity ``i`` with ``n`` scores may keep ``floor(far * n)`` at or above it, so
    the threshold must lie above its next one; it lies above the highest of those, halfway to
    the next higher score (the candidates of :func:`threshold_at_upper_bound`)."""
    scores, identities = _checked(scores, identities, far)
    highest_rejected = max(
        np.sort(scores[identities == name])[::-1][int(np.floor(far * n + 1e-9))]
        for name, n in zip(*np.unique(identities, return_counts=True), strict=True))
    return next(t for t in _candidates(scores) if t > highest_rejected)


def _checked(scores: Sequence[float], identities: Sequence[Any], far: float
             ) -> tuple[np.ndarray, np.ndarray]:
    if not 0 <= far < 1:
        raise ValueError(f"far (false-accept rate) must be in [0, 1), got {far}")
    scores, identities = _arrays(scores, identities)
    if not len(scores):
        raise ValueError("a threshold over strangers needs at least one stranger's score")
    return scores, identities


def threshold_by_bound(scores: Sequence[float], identities: Sequence[Any], far: float,
                       bound: str) -> float:
    """The threshold that holds ``far`` by ``bound`` (:data:`facefold.choices.FAR_BOUNDS`):
    "pooled" over every picture together (:func:`~facefold.models.scores.threshold_at_far`),
    "upper" (:func:`threshold_at_upper_bound`) or "worst" (:func:`threshold_at_worst`)."""
    if bound == "pooled":
        return threshold_at_far(scores, far)
    if bound == "upper":
        return threshold_at_upper_bound(scores, identities, far)
    if bound == "worst":
        return threshold_at_worst(scores, identities, far)
    raise ValueError(f"--far-bound must be one of {', '.join(FAR_BOUNDS)}, got {bound!r}")
