"""``facefold experiment``: several presets cross-validated and compared with a baseline."""

from __future__ import annotations

import argparse
from pathlib import Path

from facefold.cli.options import (
    add_config_args,
    add_executor_args,
    add_folds,
    add_out,
    add_restart_arg,
    executor_from_args,
    train_overrides,
)
from facefold.cli.report import save_report


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``experiment``."""
    experiment = commands.add_parser(
        "experiment", help="cross-validate several presets and compare them with a baseline",
        allow_abbrev=False,  # `--preset` must not silently mean `--presets`
    )
    experiment.add_argument("data", type=Path)
    experiment.add_argument("--presets", required=True,
                            help="comma-separated presets, e.g. seed,reduced,grayscale,size64 "
                            "(the baseline is always added)")
    experiment.add_argument("--baseline", default="seed",
                            help="preset the others are tested against (default seed, the 2016 "
                            "model; e.g. fast to see what each of its ablations changes)")
    add_folds(experiment)
    add_out(experiment, "output folder: one CV folder per preset (resumes if present)")
    add_config_args(experiment, preset=False)
    add_executor_args(experiment)
    add_restart_arg(experiment)
    experiment.set_defaults(func=_cmd_experiment, locks_out=True)  # the report too


def _cmd_experiment(args: argparse.Namespace) -> None:
    from facefold.evaluate.experiment import run_experiment
    from facefold.report.comparison import save_comparison
    from facefold.report.errors import save_error_report

    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    result = run_experiment(args.data, presets, args.out, args.folds, train_overrides(args),
                            args.config, executor=executor_from_args(args),
                            baseline=args.baseline, restart=args.restart)
    print(save_comparison(result, args.out))
    for summary in result.summaries:  # per preset: per_person.csv, confusion.png, errors.png
        save_error_report(Path(args.out) / summary.preset)
    print(f"Error analysis of each preset in {Path(args.out)}/<preset>/ "
          "(per_person.csv, confusion.png, errors.png)")
    save_report([args.out], args.out)
