"""Does what fit and enroll state about strangers hold for people new to the model? Random draws.

    facefold dataset build ../shared/datasets/celeb21 --out /tmp/c21 --per-class 100
    python docs/examples/new_people.py /tmp/c21 --people 10 --draws 300
    python docs/examples/new_people.py /tmp/c21 --people 10 --newcomers 4 --draws 100

For a model whose features do not depend on its training (the ``dlib128`` preset: a softmax
on dlib's descriptor, here the mean of each picture's and its mirror's descriptor, as its
flip TTA averages them; cached by content), ``fit`` calibrates the ``cosine`` and ``nearest``
scores on the model's own gallery, and ``enroll`` replays that calibration with newcomers.
Neither needs a trained model, so each draw here does exactly what they do, from DATA's
people shuffled:

- ``--people`` people are the model's gallery (every picture of theirs), and the calibration
  of ``fit`` (:func:`~facefold.evaluate.openset_cv.gallery_scores`) sets the threshold at
  ``--far`` by each ``--far-bound``; with ``--newcomers``, that many more are enrolled from
  ``--shots`` pictures each and ``enroll``'s replay
  (:func:`~facefold.models.enrollment.recalibrate`) sets it;
- the calibration states, per stranger, the in-sample rates (at the threshold chosen on
  them) and the held-out ones (each at a threshold set without them,
  :func:`~facefold.models.identities.held_out_rates`): their mean, the 95 % interval of the
  mean and the range for one new stranger;
- every other person of DATA is a stranger the model never met; their pictures are scored
  against the gallery (and the newcomers) as the deployed model would, and each one's share
  accepted is what people new to the model met.

Prints, per bound, the mean over draws of the new people's mean rate, of the in-sample and
of the held-out statement, how often the new people's mean lay at or below each statement's
upper end, and how many new people lay inside each range for one new stranger; with
newcomers, the share of their other pictures named right against the replay's statement.
Seeded: ``--seed`` fixes the draws.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facefold.choices import FAR_BOUNDS
from facefold.data.records import read_labels
from facefold.embeddings.shards import embed_shards
from facefold.evaluate.openset_cv import gallery_scores
from facefold.models.enrollment import recalibrate
from facefold.models.identities import held_out_rates, identity_interval, threshold_by_bound
from facefold.models.scores import (
    CENTROID_SCORE,
    SCORES,
    class_centroids,
    person_pictures,
    person_similarity,
    unit_rows,
)


def features_of(data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every picture's unit feature (mean of its two views), label and shard."""
    splits = embed_shards(data, "dlib128", count=2, log=lambda _: None)
    features = unit_rows(np.concatenate([s.images.mean(axis=1) for s in splits]))
    labels = np.concatenate([s.labels for s in splits])
    shards = np.concatenate([np.full(len(s.labels), k) for k, s in enumerate(splits)])
    return features, labels, shards


def statements(interval: dict) -> dict:
    """The in-sample and held-out statements of an identity interval."""
    keep = ("mean", "upper", "new_person")
    return {"in_sample": {k: interval[k] for k in keep},
            "held_out": {k: interval["held_out"][k] for k in keep}}


def one_draw(features: np.ndarray, labels: np.ndarray, shards: np.ndarray, people: int,
             newcomers: int, shots: int, far: float, score: str,
             rng: np.random.Generator) -> dict[str, dict]:
    """One draw's statements and new people's rates, per bound."""
    order = rng.permutation(np.unique(labels))
    gallery, new = np.sort(order[:people]), order[people:people + newcomers]
    strangers = order[people + newcomers:]
    mine = np.isin(labels, gallery)
    own = np.searchsorted(gallery, labels[mine])  # labels 0..people-1
    names = np.array([f"person {p}" for p in gallery])
    centroids = class_centroids(features[mine], own, people)
    pictures = person_pictures(features[mine], own, people)
    results = {}
    if newcomers:
        enrolled, tests = [], []
        for person in new:
            chosen = rng.permutation(np.flatnonzero(labels == person))
            enrolled.append(unit_rows(features[chosen[:shots]].mean(axis=0, keepdims=True))[0])
            tests.append(chosen[shots:])
        met = np.concatenate([centroids, np.array(enrolled)])
        arrays = {"gallery_features": features[mine], "gallery_labels": own,
                  "gallery_shards": shards[mine], "names": names}
        for bound in FAR_BOUNDS:
            replay = recalibrate(arrays, [shots] * newcomers, far, bound)
            results[bound] = {"threshold": replay["threshold"],
                              "newcomers_stated": replay["newcomers_named_right"],
                              **statements(replay["strangers"])}
        similarity = person_similarity(CENTROID_SCORE, features, met, None)
        for result in results.values():  # each newcomer's other pictures, named right
            right = np.concatenate([
                (similarity[rows].argmax(axis=1) == people + j)
                & (similarity[rows].max(axis=1) >= result["threshold"])
                for j, rows in enumerate(tests)])
            result["newcomers_named_right"] = float(right.mean())
    else:
        part = gallery_scores(features[mine], own, shards[mine], people)
        scores, who = part.unknown[score], names[part.unknown_labels]
        best, runner_up = names[part.unknown_best[score]], part.unknown_runner_up[score]
        for bound in FAR_BOUNDS:
            threshold = threshold_by_bound(scores, who, far, bound)
            held = held_out_rates(scores, who, far, bound, best, runner_up)
            results[bound] = {"threshold": threshold, **statements(
                identity_interval(scores, who, threshold, held_out=held))}
        similarity = person_similarity(score, features, centroids, pictures)
    best_score = similarity.max(axis=1)
    for result in results.values():
        result["new_people"] = [float(np.mean(best_score[labels == s] >= result["threshold"]))
                                for s in strangers]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--people", type=int, default=10)
    parser.add_argument("--newcomers", type=int, default=0)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--far", type=float, default=0.01)
    parser.add_argument("--score", choices=[n for n, s in SCORES.items() if s.uses_centroids],
                        default=CENTROID_SCORE,
                        help="without newcomers (enrolled people are named by cosine)")
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    total = len(read_labels(args.data))
    if args.people + args.newcomers >= total:
        parser.error(f"{args.people} people and {args.newcomers} newcomers leave no stranger "
                     f"among the {total} people of {args.data}")
    features, labels, shards = features_of(args.data)
    rng = np.random.default_rng(args.seed)
    draws = [one_draw(features, labels, shards, args.people, args.newcomers, args.shots,
                      args.far, args.score, rng) for _ in range(args.draws)]
    score = CENTROID_SCORE if args.newcomers else args.score
    enrolled = (f" and {args.newcomers} newcomers from {args.shots} pictures"
                if args.newcomers else "")
    print(f"{args.draws} draws of {args.people} people{enrolled}"
          f", {total - args.people - args.newcomers} new people each, {score} score, "
          f"--far {args.far}")
    for bound in FAR_BOUNDS:
        rows = [d[bound] for d in draws]
        realized = np.array([np.mean(r["new_people"]) for r in rows])
        line = f"{bound}: new people's mean {realized.mean():.2%}"
        for kind in ("in_sample", "held_out"):
            stated = np.array([r[kind]["mean"] for r in rows])
            upper = np.array([r[kind]["upper"] for r in rows])
            inside = sum(r[kind]["new_person"]["low"] <= rate <= r[kind]["new_person"]["upper"]
                         for r in rows for rate in r["new_people"])
            line += (f" | {kind.replace('_', '-')} stated {stated.mean():.2%}, new people's "
                     f"mean at most its upper end in {int((realized <= upper).sum())} of "
                     f"{len(rows)}, new people inside the one-stranger range {inside} of "
                     f"{sum(len(r['new_people']) for r in rows)}")
        if args.newcomers:
            named = np.mean([r["newcomers_named_right"] for r in rows])
            line += (f" | newcomers named right {named:.1%} (stated "
                     f"{np.mean([r['newcomers_stated'] for r in rows]):.1%})")
        print(line)


if __name__ == "__main__":
    main()
