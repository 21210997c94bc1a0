"""``facefold fit``: a model to deploy, trained on every shard, calibrated, with its card."""

from __future__ import annotations

import argparse
from pathlib import Path

from facefold.choices import DEFAULT_FAR_BOUND, FAR_BOUNDS
from facefold.cli.options import (
    add_config_args,
    add_restart_arg,
    config_from_args,
)

# What `fit` trains when neither --preset nor --config names a preset: the model to deploy
# (README: the recommended path), minutes on a CPU where the 2016 `seed` CNN takes hours.
RECOMMENDED_PRESET = "dlib128"
# Presets that need no extra, offered when the recommended one cannot run here.
WITHOUT_EXTRAS = "--preset fast-nogap (a small CNN trained from scratch)"


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``fit``."""
    fit = commands.add_parser("fit", help="train on every shard and calibrate 'unknown': a "
                              "model to deploy, with its model card")
    fit.add_argument("data", type=Path, help="dataset folder (data-NN.tfrecords)")
    fit.add_argument("--out", type=Path, required=True, help="model folder (resumes if present)")
    fit.add_argument("--no-lite", dest="lite", action="store_false",
                     help="keep no TFLite export in the model folder (by default verify, "
                     "identify, predict and serve run it without TensorFlow: start in about "
                     "a second instead of several)")
    fit.add_argument("--groups", type=int, default=4,
                     help="leave-people-out groups for the calibration (each trains one more "
                     "model without its people, an ensemble one per member; default 4)")
    fit.add_argument("--far", type=float, default=0.01,
                     help="share of strangers the threshold accepts (default 0.01)")
    fit.add_argument("--far-bound", choices=FAR_BOUNDS, default=DEFAULT_FAR_BOUND,
                     help="how --far is held: 'pooled', by the share of all the calibration "
                     "strangers' photos together (default); 'upper', by the 95 %% upper bound "
                     "of the average stranger's share of photos accepted; 'worst', by every "
                     "calibration stranger's own share (strictest)")
    fit.add_argument("--strangers", type=Path, metavar="DIR",
                     help="photos of people the model must never name, joined to the "
                     "calibration's strangers: one sub-folder per person, or one photo per "
                     "person directly in DIR")
    fit.add_argument("--strangers-crops", action="store_true",
                     help="the --strangers pictures are face crops: take them whole, detect "
                     "nothing")
    fit.add_argument("--enrollment-test", type=int, default=0, metavar="N",
                     help="measure instead: leave N people out to enroll and N more as "
                     "strangers, fit on the rest, enroll each from --shots pictures and "
                     "report how many of their other pictures are named right")
    fit.add_argument("--shots", type=int, default=5, help="pictures per enrolled person in "
                     "--enrollment-test (default 5)")
    add_config_args(fit, default_preset=RECOMMENDED_PRESET)
    add_restart_arg(fit)
    fit.set_defaults(func=_cmd_fit)


def _cmd_fit(args: argparse.Namespace) -> None:
    import json

    from facefold.fitting import fit, measure_enrollment

    config = _config(args)
    if args.enrollment_test:
        result = measure_enrollment(args.data, config, args.out,
                                    args.enrollment_test, args.enrollment_test, args.shots,
                                    args.groups, args.far, far_bound=args.far_bound)
        print(json.dumps({k: v for k, v in result.items() if k != "calibration"}, indent=2))
        return
    result = fit(args.data, config, args.out, args.groups, args.far, restart=args.restart,
                 far_bound=args.far_bound, strangers=args.strangers,
                 strangers_detect=not args.strangers_crops, lite=args.lite)
    print(f"Model and its card: {result.model_dir}")


def _config(args: argparse.Namespace):
    """The config to fit; when the recommended preset was chosen for the user and cannot run
    here, ``ModuleNotFoundError`` spelling out the choice (install its extra, or name
    another preset), never a silent fallback to a model that trains for hours."""
    from facefold.models.families import family_of

    config = config_from_args(args)
    try:
        family_of(config).check_available(config)
    except ModuleNotFoundError as err:
        if args.preset or config.preset != RECOMMENDED_PRESET:
            raise
        raise ModuleNotFoundError(
            f"fit without --preset trains the recommended {RECOMMENDED_PRESET}: {err}; or name "
            f"a preset that needs no extra, e.g. {WITHOUT_EXTRAS} (`facefold presets` lists "
            "them)") from None
    return config
