"""``facefold train``: one run on some shards, evaluated on the others."""

from __future__ import annotations

import argparse
from pathlib import Path

from facefold.cli.options import (
    add_config_args,
    add_out,
    add_restart_arg,
    alias,
    config_from_args,
)


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``train``."""
    train = commands.add_parser("train", help="train on some shards, evaluate on others")
    train.add_argument("data", type=Path, help="dataset folder (data-NN.tfrecords)")
    folds = train.add_argument("--folds", default="0",
                               help="shard(s) held out of this one run and evaluated on, e.g. 0 "
                               "(default) or 0,1")
    alias(train, "--eval-shards", folds)
    add_out(train, "run folder (resumes if present)")
    add_config_args(train)
    add_restart_arg(train)
    train.set_defaults(func=_cmd_train, locks_out=True)


def _cmd_train(args: argparse.Namespace) -> None:
    from facefold.train import train

    eval_shards = [int(k) for k in args.folds.split(",")]
    rows = train(args.data, config_from_args(args), args.out, eval_shards,
                 restart=args.restart)
    print(f"final held-out accuracy at step {rows[-1]['step']}: {rows[-1]['eval_accuracy']:.4f}")
