"""False accepts per stranger and the bootstrap over strangers (facefold.models.identities),
against hand computations and an independent, loop-by-loop implementation."""

from __future__ import annotations

import numpy as np
import pytest

from facefold.models.identities import (
    held_out_rates,
    identity_interval,
    identity_rates,
    prediction_interval,
    resample_indices,
    threshold_at_upper_bound,
    threshold_at_worst,
)
from facefold.models.scores import threshold_at_far

# Three strangers: A 1 of 4 pictures at or above 0.5, B 2 of 2, C 0 of 3.
SCORES = [0.9, 0.2, 0.1, 0.05, 0.6, 0.7, 0.3, 0.1, 0.2]
PEOPLE = ["A", "A", "A", "A", "B", "B", "C", "C", "C"]


def _percentile(values: list[float], q: float) -> float:
    """The q-th quantile by linear interpolation between order statistics, by hand."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def _interval_by_loops(rates: dict[str, float], resamples: int, seed: int
                       ) -> tuple[float, float]:
    """The 95 % percentile interval of the mean rate, one resample at a time."""
    names = sorted(rates)
    draws = np.random.default_rng(seed).integers(0, len(names), size=(resamples, len(names)))
    means = [sum(rates[names[int(i)]] for i in row) / len(row) for row in draws]
    return _percentile(means, 0.025), _percentile(means, 0.975)


def test_each_strangers_rate_mean_and_worst_by_hand() -> None:
    names, rates = identity_rates(SCORES, PEOPLE, 0.5)
    assert names == ["A", "B", "C"] and rates.tolist() == [0.25, 1.0, 0.0]
    found = identity_interval(SCORES, PEOPLE, 0.5)
    assert found["rates"] == {"A": 0.25, "B": 1.0, "C": 0.0}
    assert found["mean"] == pytest.approx(1.25 / 3)  # every person once, not 3/9 of pictures
    assert found["worst"] == {"identity": "B", "rate": 1.0}
    assert found["identities"] == 3 and found["resamples"] == 2000


def test_the_bootstrap_interval_matches_a_loop_by_loop_implementation() -> None:
    found = identity_interval(SCORES, PEOPLE, 0.5, resamples=500, seed=7)
    low, high = _interval_by_loops({"A": 0.25, "B": 1.0, "C": 0.0}, 500, 7)
    assert (found["low"], found["upper"]) == pytest.approx((low, high))
    assert found["low"] <= found["mean"] <= found["upper"]


def test_the_bootstrap_bounds_of_one_look_alike_among_four_by_hand() -> None:
    # Rates 0, 0, 0, 1: a resample's mean is k/4 with k ~ Binomial(4, 1/4). P(k = 0) = 0.316,
    # so the 2.5 % point is 0; P(k >= 3) = 0.051 > 2.5 % > P(k = 4) = 0.004, so the 97.5 %
    # point is 3/4: with one such person in four, the average may be three times the 25 %
    # measured.
    scores = [0.1, 0.2, 0.3, 0.9]
    found = identity_interval(scores, ["a", "b", "c", "d"], 0.5)
    assert (found["low"], found["mean"], found["upper"]) == (0.0, 0.25, 0.75)
    # The draws themselves: 2,000 rows of 4 people, seeded.
    draws = resample_indices(4)
    assert draws.shape == (2000, 4) and np.array_equal(draws, resample_indices(4))


def test_threshold_at_the_upper_bound_rejects_the_look_alike_the_pooled_one_accepts() -> None:
    # A's two pictures are the highest scores. At far 0.3 the pooled threshold accepts
    # floor(0.3 * 8) = 2 pictures, both A's: threshold 0.7 (between 0.6 and 0.8). Per person
    # that is rates 1, 0, 0, 0, whose upper bound is 3/4 (above); accepting only A's 0.9 gives
    # 1/2, 0, 0, 0 and an upper bound of 3/8 > 0.3; so nothing may be accepted.
    scores = [0.9, 0.8, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    people = ["A", "A", "B", "B", "C", "C", "D", "D"]
    assert threshold_at_far(scores, 0.3) == pytest.approx(0.7)
    assert threshold_at_upper_bound(scores, people, 0.3) == np.nextafter(0.9, 1)
    # At far 0.8: rates 1, 0, 0, 1/2 (A's two and D's 0.6 accepted, threshold 0.55) hold, their
    # 97.5 % point being 3/4 (a mean of 7/8 or more needs A three times and D once, or A four
    # times: 4/256 + 1/256 < 2.5 %; of 3/4 or more, A three times and B or C once, 8/256 alone
    # is above). Rates 1, 0, 0, 1 (D's 0.5 too) do not: a mean of 1 is two people of four
    # drawn four times, 1/16 > 2.5 %.
    assert threshold_at_upper_bound(scores, people, 0.8) == pytest.approx(0.55)


def test_threshold_at_upper_bound_is_the_lowest_that_holds_by_brute_force() -> None:
    rng = np.random.default_rng(3)
    people = np.repeat(np.arange(12), rng.integers(2, 9, size=12))
    scores = rng.normal(size=len(people)) + 0.4 * (people % 3)  # some people score higher
    found = threshold_at_upper_bound(scores, people, 0.1, resamples=300, seed=5)
    distinct = np.unique(scores)
    candidates = [distinct[0], *((distinct[:-1] + distinct[1:]) / 2),
                  np.nextafter(distinct[-1], np.inf)]

    def upper(threshold: float) -> float:
        rates = {p: float(np.mean(scores[people == p] >= threshold)) for p in set(people)}
        return _interval_by_loops(rates, 300, 5)[1]

    holding = [t for t in candidates if upper(t) <= 0.1]
    assert found == pytest.approx(min(holding))
    assert identity_interval(scores, people, found, 300, 5)["upper"] <= 0.1


def test_threshold_at_worst_keeps_every_stranger_at_or_under_far_by_hand() -> None:
    # At far 0.5, A (4 pictures) may keep 2 accepted: its 3rd highest, 0.1, must be rejected;
    # B (2) may keep 1: 0.6 rejected; C (3) may keep 1: its 2nd, 0.2, rejected. The threshold
    # lies above the highest of these, 0.6, halfway to the next score, 0.7.
    assert threshold_at_worst(SCORES, PEOPLE, 0.5) == pytest.approx(0.65)
    _, rates = identity_rates(SCORES, PEOPLE, 0.65)
    assert rates.max() <= 0.5 and rates.tolist() == [0.25, 0.5, 0.0]
    # At far 0 nobody may be accepted: just above the best score, 0.9.
    assert threshold_at_worst(SCORES, PEOPLE, 0.0) == np.nextafter(0.9, 1)
    # The pooled threshold at 25 % accepts floor(2.25) = 2 pictures, 0.9 and 0.7: B is then
    # accepted on 1 of 2 (50 %), twice the 25 %. By the worst stranger B may keep
    # floor(0.25 * 2) = 0 of its 2: the threshold lies above 0.7, halfway to 0.9.
    assert threshold_at_far(SCORES, 0.25) == pytest.approx(0.65)
    assert threshold_at_worst(SCORES, PEOPLE, 0.25) == pytest.approx(0.8)


def test_the_prediction_for_new_strangers_by_hand() -> None:
    # Rates 0, 0.1, 0.2, 0.3 and two new people: their mean is (a + b) / 2 over 16 equally
    # likely pairs; 0 and 0.3 each have a chance of 1/16 = 6.25 % > 2.5 %, so the interval is
    # the whole range, [0, 0.3].
    rates = [0.0, 0.1, 0.2, 0.3]
    assert prediction_interval(rates, group=2) == pytest.approx((0.0, 0.3))
    # One new person drawn from 0, 0, 0, 1: 1 has a chance of 25 %, so the 97.5 % point is 1,
    # while the interval of the *mean* of four stays below it (3/4, the test above).
    assert prediction_interval([0, 0, 0, 1]) == (0.0, 1.0)
    # A group as large as the strangers measured draws like the interval of the mean (the
    # same seeded draws), and a larger group narrows it.
    found = identity_interval(SCORES, PEOPLE, 0.5, resamples=500, seed=3)
    assert prediction_interval(list(found["rates"].values()), 3, 500, 3) == pytest.approx(
        (found["low"], found["upper"]))
    wide = prediction_interval(list(found["rates"].values()), 1)
    narrow = prediction_interval(list(found["rates"].values()), 30)
    assert wide == (0.0, 1.0) and 0 < narrow[0] < narrow[1] < 1
    assert found["new_person"] == {"low": 0.0, "upper": 1.0}
    with pytest.raises(ValueError, match="person drawn"):
        prediction_interval(rates, group=0)


def test_bad_input_is_refused_with_a_message() -> None:
    with pytest.raises(ValueError, match="one identity per score"):
        identity_rates([0.1, 0.2], ["a"], 0.5)
    with pytest.raises(ValueError, match="at least one stranger"):
        threshold_at_upper_bound([], [], 0.1)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        threshold_at_upper_bound([0.1], ["a"], 1.5)


def test_held_out_rates_by_hand() -> None:
    # A scores 0.9 and 0.1, B 0.8 and 0.2, C 0.3 and 0.4; far 0: the threshold lies just
    # above the highest score left. Without A: above B's 0.8, and A's 0.9 passes (1 of 2);
    # without B or C: above A's 0.9, and neither passes.
    scores = [0.9, 0.1, 0.8, 0.2, 0.3, 0.4]
    people = ["A", "A", "B", "B", "C", "C"]
    assert held_out_rates(scores, people, 0.0, "pooled") == {"A": 0.5, "B": 0.0, "C": 0.0}
    # On a gallery A's 0.9 was against B (else 0.25), B's 0.8 against A (else 0.05), the
    # rest against C. Without B, A's 0.9 falls to 0.25: the threshold lies above C's 0.4,
    # and B's 0.8 passes. Without A, B's 0.8 falls to 0.05: above 0.4, A's 0.9 passes.
    # Without C, nobody's best goes: above 0.9 again.
    best = ["B", "C", "A", "C", "A", "A"]
    runner_up = [0.25, 0.0, 0.05, 0.0, 0.0, 0.0]
    assert held_out_rates(scores, people, 0.0, "pooled", best, runner_up) == {
        "A": 0.5, "B": 0.5, "C": 0.0}
    # In the interval: everyone's rate at the whole threshold (0 for all), and the held-out.
    summary = identity_interval(scores, people, 0.95, held_out={"A": 0.5, "B": 0.5, "C": 0.0})
    assert summary["mean"] == 0.0
    assert summary["held_out"]["mean"] == pytest.approx(1 / 3)
    assert summary["held_out"]["worst"] == {"identity": "A", "rate": 0.5}
    with pytest.raises(ValueError, match="for some of the strangers"):
        identity_interval(scores, people, 0.95, held_out={"D": 0.5})
    # More strangers than `most`: a seeded sample of them is left out in turn, the same
    # rates as when all are.
    sample = held_out_rates(scores, people, 0.0, "pooled", best, runner_up, most=2)
    assert len(sample) == 2 and sample == {p: {"A": 0.5, "B": 0.5, "C": 0.0}[p] for p in sample}
    with pytest.raises(ValueError, match="go together"):
        held_out_rates(scores, people, 0.0, "pooled", best)
