"""The ``facefold`` command: a thin shell over the Python API.

Each subcommand parses its arguments and calls one library function; errors
a user can act on are printed as one line and exit with status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Quiet TensorFlow's C++ start-up chatter unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that trains: preset, TOML file, common overrides."""
    group = parser.add_argument_group("model and training (defaults < preset < --config < flags)")
    group.add_argument("--preset", help="registered preset (see `facefold presets`); default seed")
    group.add_argument("--config", type=Path, help="TOML file with [model]/[augment]/[train]")
    group.add_argument("--steps", type=int, help="training steps (seed preset: 8000)")
    group.add_argument("--eval-every", type=int, help="evaluate and checkpoint every N steps")
    group.add_argument("--batch-size", type=int, help="training batch size (default 128)")
    group.add_argument("--learning-rate", type=float, help="Adam learning rate (default 1e-3)")
    group.add_argument("--seed", type=int, help="fixes data order, augmentation and init")
    group.add_argument(
        "--precision", choices=["auto", "float32", "bfloat16"],
        help="auto = bfloat16 where the CPU/GPU computes it natively, else float32",
    )


def _config_from_args(args: argparse.Namespace):
    from facefold.config import resolve_config

    train: dict[str, Any] = {}
    for flag, key in (
        ("steps", "steps"), ("eval_every", "eval_every"), ("batch_size", "batch_size"),
        ("learning_rate", "learning_rate"), ("seed", "seed"), ("precision", "precision"),
    ):
        if getattr(args, flag) is not None:
            train[key] = getattr(args, flag)
    return resolve_config(args.preset, args.config, {"train": train} if train else None)


def _cmd_dataset_build(args: argparse.Namespace) -> None:
    from facefold.data.build import build_dataset

    build_dataset(
        args.src, args.out, shards=args.shards, per_class=args.per_class, size=args.size,
        seed=args.seed, overwrite=args.overwrite,
    )


def _cmd_dataset_inspect(args: argparse.Namespace) -> None:
    from facefold.data.inspect import format_report, inspect_dataset

    montage = args.montage or Path(args.data) / "montage.png"
    report = inspect_dataset(args.data, montage=montage)
    print(format_report(report))
    print(f"All checks passed. Montage: {montage}")


def _cmd_train(args: argparse.Namespace) -> None:
    from facefold.train.trainer import train

    eval_shards = [int(k) for k in args.eval_shards.split(",")]
    rows = train(args.data, _config_from_args(args), args.out, eval_shards)
    print(f"final held-out accuracy at step {rows[-1]['step']}: {rows[-1]['eval_accuracy']:.4f}")


def _cmd_cv(args: argparse.Namespace) -> None:
    from facefold.evaluate.cv import run_cv
    from facefold.report import save_cv_report

    result = run_cv(args.data, _config_from_args(args), args.out, args.folds)
    print(save_cv_report(result, args.out))
    print(f"Wrote {Path(args.out) / 'accuracy.csv'} and {Path(args.out) / 'accuracy.png'}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from facefold.demo import run_demo

    run_demo(args.out)


def _cmd_presets(args: argparse.Namespace) -> None:
    from facefold.models.presets import describe_preset, list_presets

    for name in list_presets():
        print(f"{name:10s} {describe_preset(name)}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``facefold`` command."""
    parser = argparse.ArgumentParser(
        prog="facefold", description="Train and cross-validate face-identification CNNs."
    )
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra-op threads (0 = one per core)")
    commands = parser.add_subparsers(dest="command", required=True)

    dataset = commands.add_parser("dataset", help="build or check TFRecord shards")
    dataset_commands = dataset.add_subparsers(dest="dataset_command", required=True)
    build = dataset_commands.add_parser("build", help="face folders -> balanced shards")
    build.add_argument("src", type=Path, help="folder with one sub-folder of images per person")
    build.add_argument("out", type=Path, help="output folder for data-NN.tfrecords")
    build.add_argument("--shards", type=int, default=6)
    build.add_argument("--per-class", type=int, default=180, help="images kept per person")
    build.add_argument("--size", type=int, default=112, help="crop side in pixels")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--overwrite", action="store_true", help="replace existing shards in OUT")
    build.set_defaults(func=_cmd_dataset_build)
    inspect = dataset_commands.add_parser("inspect", help="check shards, print counts, montage")
    inspect.add_argument("data", type=Path)
    inspect.add_argument("--montage", type=Path, help="PNG path (default DATA/montage.png)")
    inspect.set_defaults(func=_cmd_dataset_inspect)

    train = commands.add_parser("train", help="train on some shards, evaluate on others")
    train.add_argument("data", type=Path, help="dataset folder (data-NN.tfrecords)")
    train.add_argument("--eval-shards", default="0", help="held-out shard(s), e.g. 0 or 0,1")
    train.add_argument("--out", type=Path, required=True, help="run folder (resumes if present)")
    _add_config_args(train)
    train.set_defaults(func=_cmd_train)

    cv = commands.add_parser("cv", help="K-fold cross-validation over the shards")
    cv.add_argument("data", type=Path)
    cv.add_argument("--folds", default="all", help="'all' or held-out shards, e.g. 0,3")
    cv.add_argument("--out", type=Path, required=True, help="output folder (resumes if present)")
    _add_config_args(cv)
    cv.set_defaults(func=_cmd_cv)

    demo = commands.add_parser("demo", help="short cross-validation on SYNTHETIC faces")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"))
    demo.set_defaults(func=_cmd_demo)

    presets = commands.add_parser("presets", help="list the registered presets")
    presets.set_defaults(func=_cmd_presets)
    return parser


def _set_threads(threads: int) -> None:
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``facefold`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    _set_threads(args.threads)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, FloatingPointError) as err:
        print(f"facefold: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("facefold: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
