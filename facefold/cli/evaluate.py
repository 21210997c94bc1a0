"""``facefold evaluate``: a trained model measured again, with other options or on other pictures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``evaluate``."""
    evaluate = commands.add_parser(
        "evaluate", help="a finished run on its held-out shards with other inference options, "
        "or any model on a labeled folder it never saw; accuracy with a 95 %% interval")
    evaluate.add_argument("model", type=Path, metavar="MODEL",
                          help="run folder (e.g. OUT/case-0), `facefold fit` folder or export")
    evaluate.add_argument("data", type=Path, nargs="?", metavar="DATA",
                          help="labeled pictures it never saw: a dataset folder (shards) or "
                          "one sub-folder of face crops per person (default: the run's own "
                          "held-out shards)")
    tta = evaluate.add_mutually_exclusive_group()
    tta.add_argument("--tta", action="store_true",
                     help="flip test-time augmentation on (default: as the run was trained)")
    tta.add_argument("--no-tta", action="store_true", help="flip test-time augmentation off")
    evaluate.add_argument("--tta-crops", action="store_true",
                          help="a CNN averages 7 windows of each picture (centre crop, 4 "
                          "shifted by 4 px, centre squares 8 px larger and smaller) instead of "
                          "its centre crop alone (model.tta_crops); 7x the inference cost")
    evaluate.add_argument("--no-ema", action="store_true",
                          help="the raw weights of a run trained with a weight average "
                          "(train.ema_decay), not the average")
    evaluate.add_argument("--out", type=Path, help="also write the result to OUT/evaluation.json")
    evaluate.add_argument("--csv", type=Path, help="write one row per picture to this CSV file")
    evaluate.add_argument("--json", action="store_true", help="print JSON")
    evaluate.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    import json

    from facefold.evaluate.generalization import (
        evaluate_model,
        write_evaluation,
        write_rows_csv,
    )
    from facefold.evaluate.heldout import InferenceOptions

    tta = True if args.tta else False if args.no_tta else None

    def log(line: str) -> None:  # progress on stderr: stdout holds the result (or its JSON)
        print(line, file=sys.stderr)

    crops = True if args.tta_crops else None
    result = evaluate_model(args.model, args.data,
                            InferenceOptions(tta, not args.no_ema, crops), log)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.text())
    if args.out:
        log(f"Wrote {write_evaluation(result, args.out)}")
    if args.csv:
        log(f"Wrote {write_rows_csv(result, args.csv)} row(s) to {args.csv}")
