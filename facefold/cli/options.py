"""Options that several commands share, and the checks and conversions that go with them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from facefold.choices import EXECUTORS, PRECISION_SETTINGS

THREADS_HELP = "TensorFlow intra-op threads (default 0 = one per core)"
VERBOSE_HELP = "show TensorFlow's own start-up lines and warnings (hidden by default)"


class DeprecatedAlias(argparse.Action):
    """A hidden old spelling of an option: prints a one-line notice, then stores into ``dest``."""

    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                         **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        warn_deprecated(option_string or self.dest, self.new)
        setattr(namespace, self.dest, values)


def warn_deprecated(old: str, new: str) -> None:
    print(f"facefold: warning: {old} is deprecated, use {new} (the old spelling will be "
          "removed in the next release)", file=sys.stderr)


def alias(parser: argparse.ArgumentParser, old: str, new: argparse.Action) -> None:
    """Keep ``old`` working as a hidden, deprecated spelling of the option ``new``."""
    parser.add_argument(old, dest=new.dest, type=new.type, action=DeprecatedAlias,
                        new=new.option_strings[0])


def add_out(parser: argparse.ArgumentParser, help: str, legacy_positional: bool = False) -> None:
    """``--out DIR``, the output folder, required. ``legacy_positional`` also accepts the old
    positional OUT (deprecated; :func:`parse_args` checks that one of the two is given)."""
    if not legacy_positional:
        parser.add_argument("--out", type=Path, required=True, help=help)
        return
    parser.add_argument("legacy_out", type=Path, nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=f"{help} (required)")
    parser.set_defaults(out_parser=parser)


def resolve_legacy_out(args: argparse.Namespace) -> None:
    """Accept the old positional OUT where ``--out`` replaced it; require one of the two."""
    parser = getattr(args, "out_parser", None)
    if parser is None:
        return
    if args.legacy_out is not None:
        if args.out is not None:
            parser.error("give the output folder once, as --out OUT")
        warn_deprecated("the positional OUT", "--out OUT")
        args.out = args.legacy_out
    elif args.out is None:
        parser.error("the following arguments are required: --out")


def add_folds(parser: argparse.ArgumentParser) -> None:
    """``--folds``: which shards are held out, one case each (cv and experiment)."""
    parser.add_argument("--folds", default="all",
                        help="held-out shards, one case each: 'all' (default) or e.g. 0 or 0,3 "
                        "(significance over folds needs at least 2)")


def add_config_args(parser: argparse.ArgumentParser, preset: bool = True,
                    default_preset: str = "seed") -> None:
    """Options shared by every command that trains: preset, TOML file, common overrides.

    ``preset=False`` leaves out ``--preset`` (for commands that take several presets);
    ``default_preset`` is the preset when neither ``--preset`` nor ``--config`` names one.
    """
    group = parser.add_argument_group("model and training (defaults < preset < --config < flags)")
    if preset:
        group.add_argument("--preset", help="registered preset (see `facefold presets`); "
                           f"default {default_preset}")
        parser.set_defaults(default_preset=default_preset)
    group.add_argument("--config", type=Path, help="TOML file with [model]/[augment]/[train]")
    group.add_argument("--steps", type=int, help="training steps (seed preset: 8000)")
    group.add_argument("--eval-every", type=int, help="evaluate and checkpoint every N steps")
    group.add_argument("--batch-size", type=int, help="training batch size (default 128)")
    group.add_argument("--learning-rate", type=float, help="(peak) learning rate (seed: 1e-3)")
    group.add_argument("--seed", type=int, help="fixes data order, augmentation and init")
    group.add_argument(
        "--precision", choices=PRECISION_SETTINGS,
        help="auto (default) = time both on this machine once and keep the faster (cached)",
    )


def train_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]] | None:
    """The ``[train]`` flags given on the command line, as config overrides (None if none)."""
    train: dict[str, Any] = {}
    for flag, key in (
        ("steps", "steps"), ("eval_every", "eval_every"), ("batch_size", "batch_size"),
        ("learning_rate", "learning_rate"), ("seed", "seed"), ("precision", "precision"),
    ):
        if getattr(args, flag) is not None:
            train[key] = getattr(args, flag)
    return {"train": train} if train else None


def config_from_args(args: argparse.Namespace):
    from facefold.models.presets import resolve_config

    return resolve_config(args.preset, args.config, train_overrides(args),
                          args.default_preset)


def add_restart_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--restart", action="store_true",
                        help="discard runs in --out made from other data or another config and "
                        "train them again (without it they are refused; runs of the same data "
                        "and config are resumed or reused either way)")


def add_executor_args(parser: argparse.ArgumentParser) -> None:
    """Where the trials of cv/experiment run: locally one by one, or as parallel Ray tasks."""
    group = parser.add_argument_group("execution")
    group.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="local: one trial after another; ray: one Ray task per trial")
    group.add_argument("--address", help="Ray address: none = embedded single-machine Ray, "
                       "'auto' or ray://host:10001 = a cluster started with `ray start`")
    group.add_argument("--cpus-per-trial", type=float, default=1)
    group.add_argument("--gpus-per-trial", type=float, default=0)


def executor_from_args(args: argparse.Namespace):
    from facefold.evaluate.executor import Executor

    return Executor(args.executor, args.address, args.cpus_per_trial, args.gpus_per_trial)
