"""``facefold enroll``, ``identify`` and ``verify``: a fitted recognizer at work."""

from __future__ import annotations

import argparse
from pathlib import Path

# ``verify``'s exit status is its answer, so that a script can branch on it; an error must
# then be neither of the two answers.
VERIFY_SAME, VERIFY_DIFFERENT, VERIFY_ERROR = 0, 1, 2


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``enroll``, ``identify`` and ``verify``."""
    enroll = commands.add_parser("enroll", help="add people from a few photos, no retraining")
    enroll.add_argument("model", type=Path, metavar="MODEL", help="a `facefold fit` folder")
    enroll.add_argument("people", type=Path, nargs="+", metavar="PERSON_DIR",
                        help="one folder of photos per person, named after them")
    enroll.add_argument("--name", help="the person's name (default: the folder's name)")
    enroll.add_argument("--crops", action="store_true",
                        help="the pictures are face crops: take them whole, detect nothing")
    enroll.set_defaults(func=_cmd_enroll)

    identify = commands.add_parser("identify", help="name every face in photos (files or "
                                   "folders), one row per face")
    identify.add_argument("model", type=Path, metavar="MODEL")
    identify.add_argument("pictures", type=Path, nargs="+", metavar="PICTURE")
    identify.add_argument("--csv", type=Path, help="write the rows to this CSV file")
    identify.add_argument("--json", action="store_true", help="print JSON instead of CSV")
    identify.add_argument("--top-k", type=int, default=5, help="names per face (default 5)")
    identify.add_argument("--crops", action="store_true",
                          help="the pictures are face crops: take them whole, detect nothing")
    identify.set_defaults(func=_cmd_identify)

    verify = commands.add_parser(
        "verify", help="are two photos the same person? exit status 0 = same person, "
        "1 = different people, 2 = error")
    verify.add_argument("model", type=Path, metavar="MODEL")
    verify.add_argument("a", type=Path, metavar="A")
    verify.add_argument("b", type=Path, metavar="B")
    verify.add_argument("--threshold", type=float,
                        help="similarity threshold (default: the model's calibrated one)")
    verify.add_argument("--json", action="store_true", help="print JSON")
    verify.add_argument("--crops", action="store_true",
                        help="the pictures are face crops: take them whole, detect nothing")
    verify.set_defaults(func=_cmd_verify, error_status=VERIFY_ERROR)


def _cmd_enroll(args: argparse.Namespace) -> None:
    from facefold.models.scores import CENTROID_SCORE
    from facefold.recognizer import Recognizer, enrolled_rates_text, picture_files

    recognizer = Recognizer.load(args.model)
    for folder in args.people:
        count = recognizer.enroll(args.name or folder.name, picture_files([folder]),
                                  detect=not args.crops)
        print(f"enrolled {args.name or folder.name}: {count} picture(s)")
    predictor = recognizer.predictor
    if predictor.names_by_centroid:
        stored = predictor.info.threshold or {}
        score = stored.get("score", CENTROID_SCORE)
        before = stored.get("thresholds", {}).get(score)
        print(enrolled_rates_text(predictor.enrolled_calibration(), before, score))


def _cmd_identify(args: argparse.Namespace) -> None:
    import json

    from facefold.recognizer import Recognizer, identify_csv, write_identify_csv

    rows = Recognizer.load(args.model).identify(args.pictures, args.top_k, not args.crops)
    if args.csv:
        write_identify_csv(rows, args.csv)
        print(f"Wrote {len(rows)} row(s) to {args.csv}")
    else:
        print(json.dumps(rows, indent=2) if args.json else identify_csv(rows), end="")
    if any(row.get("error") for row in rows):
        raise SystemExit(1)


def _cmd_verify(args: argparse.Namespace) -> int:
    """Prints the verdict; returns :data:`VERIFY_SAME` or :data:`VERIFY_DIFFERENT`."""
    import json

    from facefold.recognizer import Recognizer

    result = Recognizer.load(args.model).verify(args.a, args.b, not args.crops, args.threshold)
    verdict = "same person" if result.same else "different people"
    print(json.dumps(result.to_dict()) if args.json else
          f"{verdict}: similarity {result.similarity:.4f} "
          f"{'>=' if result.same else '<'} threshold {result.threshold:.4f}")
    return VERIFY_SAME if result.same else VERIFY_DIFFERENT
