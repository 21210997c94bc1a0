"""Significance tests for comparing two models evaluated on the same folds and images, and
the confidence interval of one accuracy.

- :func:`wilson_interval` bounds an accuracy measured as ``k`` right out of
  ``n`` images: the Wilson score interval, which unlike the normal
  approximation stays inside [0, 1] and keeps its coverage near 0 and 1, where
  face identification accuracies live.
- :func:`paired_t_test` compares per-fold accuracies (the same folds for both
  models): the two-sided paired t-test of :func:`scipy.stats.ttest_rel`.
- :func:`mcnemar_test` compares per-example correctness on the same held-out
  images: the exact (binomial) McNemar test on the discordant pairs.

The tests take the baseline first, so positive ``t`` and ``b01 > b10`` mean the
second model does better.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

# Accuracies are k/N fractions; differences that agree to this many digits are equal.
_ZERO_SPREAD = 1e-12


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float] | None:
    """Two-sided paired t-test of ``b - a`` over folds: ``(t, p)``, or None for < 2 folds.

    ``a[i]`` and ``b[i]`` are the accuracies of two models on fold ``i``. Agrees
    with ``scipy.stats.ttest_rel(b, a)``, except where scipy has no answer:
    when the fold differences do not vary at all, ``t`` is 0 and ``p`` is 1.0
    if they are all zero (the models agree exactly), else ``t`` is ±inf and
    ``p`` is 0.0 (a constant non-zero difference).

    >>> t, p = paired_t_test([0.80, 0.90, 0.85], [0.82, 0.93, 0.86])
    >>> round(t, 4), round(p, 4)
    (3.4641, 0.0742)
    """
    a_arr, b_arr = np.asarray(a, float), np.asarray(b, float)
    if a_arr.shape != b_arr.shape or a_arr.ndim != 1:
        raise ValueError(
            f"paired_t_test needs two equally long lists, got {a_arr.shape} and {b_arr.shape}"
        )
    if len(a_arr) < 2:
        return None
    diff = b_arr - a_arr
    if np.ptp(diff) <= _ZERO_SPREAD:
        mean = float(diff.mean())
        if abs(mean) <= _ZERO_SPREAD:
            return 0.0, 1.0
        return float(np.copysign(np.inf, mean)), 0.0
    result = stats.ttest_rel(b_arr, a_arr)
    return float(result.statistic), float(result.pvalue)


def mcnemar_test(
    correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray
) -> tuple[int, int, float]:
    """Exact two-sided McNemar test: ``(b01, b10, p)``.

    ``correct_a[i]`` / ``correct_b[i]`` say whether models A and B classified
    image ``i`` correctly (the same images, in the same order). ``b01`` counts
    the images A got wrong and B right, ``b10`` those A got right and B wrong.
    Under the null hypothesis each discordant image is a fair coin, so ``p`` is
    ``scipy.stats.binomtest(b01, b01 + b10, 0.5)``'s two-sided p-value; with no
    discordant image at all ``p`` is 1.0.

    >>> mcnemar_test([0, 1, 1, 1, 1, 1, 1, 1, 0], [1, 0, 0, 0, 0, 0, 0, 0, 0])
    (1, 7, 0.0703125)
    """
    a = np.asarray(correct_a, bool)
    b = np.asarray(correct_b, bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"mcnemar_test needs two equally long lists, got {a.shape} and {b.shape}"
        )
    b01 = int(np.count_nonzero(~a & b))
    b10 = int(np.count_nonzero(a & ~b))
    if b01 + b10 == 0:
        return 0, 0, 1.0
    return b01, b10, float(stats.binomtest(b01, b01 + b10, 0.5).pvalue)


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval ``(low, high)`` of an accuracy of ``correct`` out of ``total``.

    With ``p = correct / total`` and ``z`` the two-sided normal quantile of ``confidence``
    (1.95996 for 95 %), the bounds are
    ``(p + z²/2n ± z·sqrt(p(1 - p)/n + z²/4n²)) / (1 + z²/n)``.

    >>> [round(b, 4) for b in wilson_interval(8, 10)]
    [0.4902, 0.9433]
    >>> [round(b, 4) for b in wilson_interval(10, 10)]
    [0.7225, 1.0]
    """
    if isinstance(correct, bool) or isinstance(total, bool) or total < 1 or not (
            0 <= correct <= total):
        raise ValueError(f"wilson_interval needs 0 <= correct <= total and total >= 1, got "
                         f"{correct} of {total}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p, n = correct / total, total
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At p = 0 the low bound is 0 and at p = 1 the high bound is 1 exactly (the formula gives
    # them up to rounding, 0.9999999999999999 for 10 of 10, which put an estimate of 1.0
    # "outside" its own interval); elsewhere clipped to [0, 1] for the same reason.
    low = 0.0 if correct == 0 else max(0.0, float(centre - half))
    high = 1.0 if correct == total else min(1.0, float(centre + half))
    return low, high
