"""``facefold cv``: K-fold cross-validation over the shards (with ``--unknown-people``, open set).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from facefold.cli.options import (
    add_config_args,
    add_executor_args,
    add_folds,
    add_out,
    add_restart_arg,
    config_from_args,
    executor_from_args,
)


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``cv``."""
    cv = commands.add_parser("cv", help="K-fold cross-validation over the shards")
    cv.add_argument("data", type=Path)
    add_folds(cv)
    add_out(cv, "output folder: one case-K run folder per fold (resumes if present)")
    add_config_args(cv)
    add_executor_args(cv)
    cv.add_argument("--unknown-people", type=int, default=0, metavar="K",
                    help="open set: hold K people (chosen with --seed) out of training and "
                    "measure how well the model answers 'unknown' for them")
    cv.add_argument("--far", type=float, default=0.05,
                    help="with --unknown-people: false-accept rate on unknowns for the threshold")
    add_restart_arg(cv)
    cv.set_defaults(func=_cmd_cv, locks_out=True)  # the report too, under the lock


def _cmd_cv(args: argparse.Namespace) -> None:
    if args.unknown_people:  # open-set evaluation: see facefold.evaluate.openset
        _cmd_cv_open_set(args)
        return
    from facefold.evaluate.cv import run_cv
    from facefold.report import report_cv

    result = run_cv(args.data, config_from_args(args), args.out, args.folds,
                    executor=executor_from_args(args), restart=args.restart)
    print(report_cv(result, args.out))


def _cmd_cv_open_set(args: argparse.Namespace) -> None:
    from facefold import runs
    from facefold.evaluate.cv import load_cv
    from facefold.evaluate.openset_cv import run_open_set_cv
    from facefold.report import save_cv_report

    if getattr(args, "executor", "local") != "local":
        raise ValueError("--unknown-people runs its cases locally: leave out --executor")
    result = run_open_set_cv(args.data, config_from_args(args), args.out, args.folds,
                             args.unknown_people, args.far, restart=args.restart)
    print(save_cv_report(load_cv(args.out), args.out))
    print(result.table())
    print(f"Wrote {Path(args.out) / runs.OPENSET_FILE}; each case's threshold is used by "
          "`facefold predict`")
