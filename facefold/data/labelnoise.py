"""Confident learning on embeddings: which crops' labels look wrong, most suspect first.

The one implementation of the ranking that ``facefold dataset audit``
(:mod:`facefold.evaluate.audit`) and the labeling page's suspects panel
(:meth:`facefold.label.session.Session.suspects`) share. Out-of-fold probabilities come from a
multinomial logistic regression (scikit-learn) on the embeddings of the other folds;
``cleanlab`` (Northcutt et al. 2021) flags the crops whose given label is unlikely given
per-class thresholds estimated from the probabilities themselves (kind ``label``); a crop it
does not flag whose out-of-fold prediction is another person is listed too (kind
``ambiguous``). Both are ranked by ``1 - p(given label)`` (cleanlab's self-confidence label
quality). Here, in the data layer, because the labeling page must import no evaluation code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INSTALL_HINT = "pip install 'facefold[audit]'"
# The regression's L2 strength: C = 1 (scikit-learn's default) ranked the injected swaps best
# of 0.1, 1, 10 and 100 on celeb21 (docs/data.md, "Finding label errors").
REGULARIZATION = 1.0


def require(what: str) -> None:
    """``ModuleNotFoundError`` naming the pip command when cleanlab or scikit-learn (the
    ``audit`` extra) is missing; ``what`` names the feature that needs them."""
    try:
        import cleanlab  # noqa: F401
        import sklearn  # noqa: F401
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(f"{what} needs cleanlab and scikit-learn ({err}); "
                                  f"install them with: {INSTALL_HINT}") from None


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, folds: np.ndarray,
                              num_classes: int) -> np.ndarray:
    """(N, num_classes) probabilities of each crop from a multinomial logistic regression
    trained on the crops of the other folds (``features`` (N, D), ``folds`` (N,) int). A fold
    whose other folds hold fewer than two people keeps rows of NaN: no opinion."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    probabilities = np.full((len(labels), num_classes), np.nan)
    for fold in np.unique(folds):
        held = folds == fold
        if len(np.unique(labels[~held])) < 2:
            continue
        model = LogisticRegression(C=REGULARIZATION, max_iter=2000)
        # One BLAS thread: these small fits took 60x longer with a thread per core on a
        # shared 2-core machine (0.17 s against 9.8 s a fold on celeb21).
        with threadpool_limits(1):
            model.fit(features[~held], labels[~held])
        probabilities[np.ix_(held, model.classes_)] = model.predict_proba(features[held])
        missing = np.setdiff1d(np.arange(num_classes), model.classes_)
        probabilities[np.ix_(held, missing)] = 0.0  # a class absent from the training folds
    return probabilities


def label_kinds(labels: np.ndarray, probabilities: np.ndarray
                ) -> tuple[list[list[str]], np.ndarray, np.ndarray, list[list[str]]]:
    """Per crop: its kinds (``label``/``ambiguous``), the suggested class, the score and the
    detail, from out-of-fold ``probabilities`` (rows of NaN: no opinion)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    n = len(labels)
    kinds: list[list[str]] = [[] for _ in range(n)]
    detail: list[list[str]] = [[] for _ in range(n)]
    suggested = labels.copy()
    score = np.zeros(n)
    covered = np.flatnonzero(~np.isnan(probabilities[:, 0]))
    if not len(covered):
        return kinds, suggested, score, detail
    p, given = probabilities[covered], labels[covered]
    quality = get_label_quality_scores(given, p, method="self_confidence")  # = p(given)
    flagged = np.zeros(len(covered), bool)
    if len(np.unique(given)) == p.shape[1]:  # cleanlab needs every class among the labels
        flagged[find_label_issues(given, p)] = True
    predicted = p.argmax(axis=1)
    for row, i in enumerate(covered):
        score[i] = 1.0 - quality[row]
        suggested[i] = predicted[row] if predicted[row] != labels[i] else np.argsort(p[row])[-2]
        if flagged[row]:
            kinds[i].append("label")
        elif predicted[row] != labels[i]:
            kinds[i].append("ambiguous")
        if kinds[i]:
            detail[i].append(f"p(given) {p[row, labels[i]]:.3f}, p(suggested) "
                             f"{p[row, suggested[i]]:.3f}")
    return kinds, suggested, score, detail


@dataclass(frozen=True)
class LabelIssue:
    """Crop ``index`` (into the arrays ranked) seems to be ``suggested`` (a class) rather
    than its label; ``score`` 0..1, higher is more suspect; ``kind`` ``label`` or
    ``ambiguous``; ``detail`` the probabilities behind it."""

    index: int
    suggested: int
    score: float
    kind: str
    detail: str


def rank_label_issues(features: np.ndarray, labels: np.ndarray, folds: np.ndarray,
                      num_classes: int) -> list[LabelIssue]:
    """The crops whose label looks wrong, from their ``features`` (N, D), ``labels`` (N,)
    and ``folds`` (N,): most suspect first, ties in input order."""
    probabilities = out_of_fold_probabilities(features, labels, folds, num_classes)
    kinds, suggested, score, detail = label_kinds(labels, probabilities)
    listed = sorted((i for i in range(len(labels)) if kinds[i]), key=lambda i: -score[i])
    return [LabelIssue(i, int(suggested[i]), float(score[i]), "+".join(kinds[i]),
                       "; ".join(detail[i])) for i in listed]
