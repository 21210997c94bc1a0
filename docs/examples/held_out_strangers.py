"""Does fit's promise about strangers hold for people it never met? Leave-people-out repeats.

    python docs/examples/held_out_strangers.py /tmp/shared-data/celeb21 --out /tmp/strangers

The people of DATA (a ``dataset build`` folder) are shuffled with ``--seed`` and cut into
``--repeats`` groups of ``--held-out`` people. Repeat ``r`` fits the model (``--preset``,
calibrated like ``facefold fit``) on everyone else, on every shard but shard ``r % shards``:
the held-out people are never in its training nor in its calibration, and shard ``r % shards``
holds pictures of its known people it never saw. Then, for every ``--far-bound`` (one fit
serves them all: the calibration records each bound's threshold), at the threshold and score
fit would have chosen (``--score``: that score instead), it prints:

- the interval over strangers the model card states for people new to the model (the mean
  of the rates each calibration stranger had at a threshold set without them, its 95 %
  interval; the card's in-sample mean beside it, in the JSON and the summary);
- each held-out person's share of pictures accepted as someone, and all of theirs together
  ("realized"), and whether that lies inside the stated interval of the mean, and inside the
  prediction interval for a group of that many new strangers
  (:func:`facefold.models.identities.prediction_interval` on the card's per-stranger rates);
- the share of the test shard's pictures of known people accepted and named right;
- how many held-out people lie inside the card's interval for one new stranger.

Each repeat's model lives in ``OUT/repeat-R`` (an interrupted run resumes; embeddings come
from the user cache). The table is printed in Markdown and written to ``OUT/held_out.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from facefold.choices import FAR_BOUNDS
from facefold.data.pipeline import concat
from facefold.data.records import read_labels, shard_labels
from facefold.fitting import choose_score, fit_without_people, model_outputs, network_outputs
from facefold.models.identities import prediction_interval
from facefold.models.presets import resolve_config
from facefold.models.scores import SCORES, PersonPictures, open_set_scores, person_similarity
from facefold.runs import read_centroids, read_pictures


def one_repeat(data: Path, out: Path, held_out: list[int], test_shard: int, preset: str,
               far: float, groups: int, score: str | None = None) -> dict:
    """Fit without ``held_out`` and shard ``test_shard``; the numbers of both bounds."""
    labels = read_labels(data)
    fitted = fit_without_people(data, resolve_config(preset), out, held_out, groups, far,
                                log=lambda _: None, test_shard=test_shard)
    known_out, known_labels = network_outputs(
        fitted.found, lambda n: fitted.split(n)[0][test_shard])
    strange_out, strange_labels = network_outputs(
        fitted.found, lambda n: concat(fitted.split(n)[1]))
    known = model_outputs(known_out, fitted.weights)
    strange = model_outputs(strange_out, fitted.weights)
    people = len(fitted.known_names)
    centroids = read_centroids(out, people)
    pictures = PersonPictures(*read_pictures(out, people), people)
    known_scores = open_set_scores(known["logits"], known["features"], centroids, pictures)
    strange_scores = open_set_scores(strange["logits"], strange["features"], centroids,
                                     pictures)
    by_class = known["logits"].argmax(axis=1) == known_labels
    result = {"held_out": [labels[i] for i in held_out], "test_shard": test_shard}
    scores = fitted.calibration["scores"]
    for bound in FAR_BOUNDS:
        name = score or choose_score(scores, bound)
        stated = scores[name]["by_bound"][bound]
        threshold = stated["threshold"]
        right = (person_similarity(name, known["features"], centroids, pictures).argmax(axis=1)
                 == known_labels) if SCORES[name].uses_centroids else by_class
        accepted = strange_scores[name] >= threshold
        people = {labels[i]: float(accepted[strange_labels == i].mean()) for i in held_out}
        realized = float(accepted.mean())
        in_sample = stated["identities"]
        interval = in_sample.get("held_out", in_sample)  # an older facefold: in-sample only
        new_low, new_upper = prediction_interval(list(interval["rates"].values()),
                                                 len(held_out))
        result[bound] = {
            "score": name, "threshold": threshold,
            "stated": {"mean": interval["mean"], "low": interval["low"],
                       "upper": interval["upper"], "worst": interval["worst"],
                       "pictures": stated["far"], "known_accuracy": stated["known_accuracy"],
                       "new_group": {"low": new_low, "upper": new_upper},
                       "new_person": interval["new_person"],
                       "in_sample": {k: in_sample[k] for k in ("mean", "low", "upper")}},
            "people": people, "realized": realized,
            "inside": interval["low"] <= realized <= interval["upper"],
            "at_most_upper": realized <= interval["upper"],
            "inside_new_group": new_low <= realized <= new_upper,
            "known_accepted_and_right": float(
                ((known_scores[name] >= threshold) & right).mean()),
        }
    return result


def _inside_new_person(row: dict) -> int:
    """How many of the repeat's held-out people lie inside the card's interval for one new
    stranger."""
    new = row["stated"]["new_person"]
    return sum(new["low"] <= rate <= new["upper"] for rate in row["people"].values())


def table(results: list[dict]) -> str:
    """The Markdown table: one row per repeat and bound."""
    lines = ["| repeat | bound | score | held-out people: photos accepted | all three | stated: "
             "mean [95 % interval], worst calibration stranger | inside | known accepted and "
             "named right (stated) | prediction for the group | inside it |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r, result in enumerate(results):
        for bound in FAR_BOUNDS:
            row = result[bound]
            people = ", ".join(f"{n} {v:.1%}" for n, v in row["people"].items())
            stated = row["stated"]
            inside = "yes" if row["inside"] else (
                "below" if row["at_most_upper"] else "**above**")
            lines.append(
                f"| {r} | {bound} | {row['score']} | {people} | {row['realized']:.1%} | "
                f"{stated['mean']:.1%} "
                f"[{stated['low']:.1%}, {stated['upper']:.1%}], "
                f"{stated['worst']['identity']} {stated['worst']['rate']:.1%} | {inside} | "
                f"{row['known_accepted_and_right']:.1%} ({stated['known_accuracy']:.1%}) | "
                f"[{stated['new_group']['low']:.1%}, {stated['new_group']['upper']:.1%}] | "
                f"{'yes' if row['inside_new_group'] else '**no**'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--preset", default="dlib128")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--held-out", type=int, default=3)
    parser.add_argument("--far", type=float, default=0.01)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--score", choices=list(SCORES),
                        help="this score at every bound (default: the one fit chooses)")
    args = parser.parse_args()
    people = len(read_labels(args.data))
    if args.repeats * args.held_out > people:
        parser.error(f"{args.repeats} repeats of {args.held_out} people need "
                     f"{args.repeats * args.held_out} people; {args.data} has {people}")
    shards = len(shard_labels(args.data))
    order = np.random.default_rng(args.seed).permutation(people)
    results = []
    for r in range(args.repeats):
        held_out = sorted(int(i) for i in order[r * args.held_out:(r + 1) * args.held_out])
        results.append(one_repeat(args.data, args.out / f"repeat-{r}", held_out, r % shards,
                                  args.preset, args.far, args.groups, args.score))
        print(f"repeat {r} done: {results[-1]['held_out']}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "held_out.json").write_text(json.dumps(results, indent=2))
    print(table(results))
    for bound in FAR_BOUNDS:
        rows = [r[bound] for r in results]
        rates = [v for row in rows for v in row["people"].values()]
        print(f"{bound}: held-out people's mean {np.mean(rates):.2%}; stated for new people "
              f"{np.mean([r['stated']['mean'] for r in rows]):.2%}, in-sample "
              f"{np.mean([r['stated']['in_sample']['mean'] for r in rows]):.2%} (means over "
              "the repeats)")
        print(f"{bound}: inside the stated interval in {sum(r['inside'] for r in rows)} of "
              f"{len(rows)} repeats, at most its upper end in "
              f"{sum(r['at_most_upper'] for r in rows)}, inside the prediction for the group "
              f"in {sum(r['inside_new_group'] for r in rows)}; held-out people inside the "
              f"card's interval for one new stranger: {sum(_inside_new_person(r) for r in rows)}"
              f" of {len(rates)}; held-out people above 5 %: "
              f"{sum(v > 0.05 for v in rates)} of {len(rates)} (worst {max(rates):.1%}); "
              f"known accepted and named right "
              f"{np.mean([r['known_accepted_and_right'] for r in rows]):.1%} on average")

if __name__ == "__main__":
    main()
