"""How often each person a model never saw is taken for a known one, at the model's threshold.

``facefold fit`` calibrates its "unknown" threshold on people left out of training (groups
of them, one model per group) and reports the false-accept rate pooled over all of them. A
pooled 1 % can hide one look-alike accepted on a fifth of their photos; this script splits it
by person:

1. **left-out people of the calibration**: for every calibration group of a fit model
   folder, the group's model scores the held-out people's images (every shard), and each
   person's share of images at or above the model's threshold (the pooled one of the model
   card, of the score it chose) is printed; beside it, each group's known images accepted and
   named right at that threshold;
2. **strangers** (``--strangers FOLDER ...``, folders of face crops of people in no shard):
   the final model (trained on every person) names each picture, and each folder's share of
   pictures not answered "unknown" is printed.

Usage (the numbers in docs/results.md, "dlib128-ft: fine-tuning dlib's fc")::

    python docs/examples/per_person_false_accepts.py models/celeb21 data/celeb21 \\
        --strangers ../shared/datasets/celeb21/{Daniel_Radcliffe,Jennifer_Lopez,Victoria_Beckham}

Embedding heads only (their inputs come from the embedding cache). Prints a table; with
``--json FILE`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from facefold import runs
from facefold.config import Config
from facefold.data.pipeline import concat
from facefold.data.records import list_shards, read_labels
from facefold.evaluate.openset_cv import case_scores, split_people
from facefold.fitting import people_groups
from facefold.models.families import SplitSource
from facefold.predict import Predictor


def left_out_rates(model: Path, data: Path) -> tuple[dict, list[dict]]:
    """Per calibration group: its people's false-accept rates and its known images accepted
    and named right, at the model card's threshold."""
    card = json.loads((model / runs.MODEL_CARD_JSON).read_text())
    calibration = card["calibration"]
    score = calibration["score"]
    threshold = calibration["scores"][score]["threshold"]
    config = Config.from_dict(card["config"])
    labels = read_labels(data)
    shards = len(list_shards(data))
    splits = SplitSource(data, log=lambda _: None).get(config)
    groups = people_groups(len(labels), calibration["groups"], config.train.seed)
    people, known_rows = {}, []
    for g, group in enumerate(groups):
        k = g % shards
        known, unknown = split_people(splits, group, len(labels))
        found = case_scores(Predictor.load(runs.calibration_dir(model, g)),
                            concat([s for j, s in enumerate(known) if j != k]), known[k],
                            concat(unknown), model_inputs=True)
        accepted = found.unknown[score] >= threshold
        for person in group:
            mine = found.unknown_labels == person
            people[labels[person]] = {"group": g, "images": int(mine.sum()),
                                      "accepted": int(accepted[mine].sum())}
        right = (found.known[score] >= threshold) & found.correct
        known_rows.append({"group": g, "images": len(right), "right": int(right.sum())})
    return {"score": score, "threshold": threshold, "people": people}, known_rows


def stranger_rates(model: Path, folders: list[Path]) -> dict[str, dict[str, int]]:
    """Per folder of a stranger's face crops: pictures the final model did not call unknown."""
    predictor = Predictor.load(model)
    rates = {}
    for folder in folders:
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        faces = predictor.recognize([Image.open(p).convert("RGB") for p in files], top_k=1)
        rates[folder.name] = {"images": len(files),
                              "accepted": sum(f.name != "unknown" for f in faces)}
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a model folder written by `facefold fit`")
    parser.add_argument("data", type=Path, help="the dataset it was fit on")
    parser.add_argument("--strangers", type=Path, nargs="*", default=[],
                        help="folders of face crops of people in no shard")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    left_out, known = left_out_rates(args.model, args.data)
    print(f"threshold {left_out['threshold']:.4f} ({left_out['score']} score, model card)")
    print(f"{'left-out person':24s} group  accepted / images   rate")
    for name, row in sorted(left_out["people"].items(), key=lambda x: -x[1]["accepted"]):
        print(f"{name:24s} {row['group']:5d}  {row['accepted']:8d} / {row['images']:<6d}"
              f" {row['accepted'] / row['images']:6.1%}")
    for row in known:
        print(f"group {row['group']}: known images accepted and named right "
              f"{row['right']} / {row['images']} ({row['right'] / row['images']:.1%})")
    strangers = stranger_rates(args.model, args.strangers)
    for name, row in strangers.items():
        print(f"stranger {name:24s} {row['accepted']:4d} / {row['images']:<4d} "
              f"{row['accepted'] / max(row['images'], 1):6.1%}")
    worst = max(r["accepted"] / r["images"] for r in left_out["people"].values())
    print(f"worst left-out person: {worst:.1%}")
    if args.json:
        args.json.write_text(json.dumps({"left_out": left_out, "known": known,
                                         "strangers": strangers}, indent=1))


if __name__ == "__main__":
    main()
