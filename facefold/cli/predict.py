"""``facefold predict``: the people in pictures, named by a run or export."""

from __future__ import annotations

import argparse
from pathlib import Path

from facefold.choices import SCORES


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``predict``."""
    predict = commands.add_parser("predict", help="name the people in pictures")
    predict.add_argument("model", type=Path, metavar="MODEL",
                         help="run folder (e.g. OUT/case-0) or `facefold export` folder")
    predict.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
    predict.add_argument("--top-k", type=int, default=5, help="names per face (default 5)")
    predict.add_argument("--detect", action="store_true",
                         help="find every face in each photo (else each picture is one crop)")
    predict.add_argument("--json", action="store_true", help="print JSON")
    predict.add_argument("--threshold", type=float,
                         help="answer 'unknown' below this score (default: the model's own "
                         "threshold.json, if any)")
    predict.add_argument("--score", choices=SCORES,
                         help="open-set score the threshold applies to (default: the one in "
                         "the model's threshold.json, else energy)")
    predict.set_defaults(func=_cmd_predict)


def _cmd_predict(args: argparse.Namespace) -> None:
    import json

    from facefold.predict import Predictor, format_results, predict_files

    predictor = Predictor.load(args.model)
    results = predict_files(predictor, args.images, args.top_k, args.detect, args.threshold,
                            args.score)
    print(json.dumps(results, indent=2) if args.json else format_results(results))
    if any(r["error"] for r in results):
        raise SystemExit(1)
