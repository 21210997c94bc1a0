"""``facefold dataset build`` and ``dataset inspect``: face folders to shards, and their checks."""

from __future__ import annotations

import argparse
from pathlib import Path

from facefold.cli.options import add_out


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``dataset build`` and ``dataset inspect``."""
    dataset = commands.add_parser("dataset", help="build or check TFRecord shards")
    dataset_commands = dataset.add_subparsers(dest="dataset_command", required=True)
    build = dataset_commands.add_parser("build", help="face folders -> balanced shards")
    build.add_argument("src", type=Path, help="folder with one sub-folder of images per person")
    add_out(build, "output folder for data-NN.tfrecords, labels.txt, manifest.json",
             legacy_positional=True)
    build.add_argument("--shards", type=int, default=6,
                       help="number of shards, which is the number of folds of `cv` (default 6)")
    build.add_argument("--per-class", type=int, default=180,
                       help="images kept per person: people with fewer are left out, people "
                       "with more are sampled down to it (default 180)")
    build.add_argument("--size", type=int, default=112,
                       help="side of the square crops in pixels (default 112)")
    build.add_argument("--seed", type=int, default=0,
                       help="fixes which images are kept and the shard of each (default 0)")
    build.add_argument("--overwrite", action="store_true", help="replace existing shards in OUT")
    build.add_argument("--near-dup-distance", type=int, default=16, metavar="BITS",
                       help="drop pictures whose 256-bit perceptual hash is within BITS of an "
                       "earlier kept one (default 16; measured on face crops: edited copies "
                       "mostly <= 16, other photos >= 20); 0 = off")
    build.add_argument("--spare", type=Path, metavar="DIR",
                       help="also write the kept people's pictures that --per-class sampling "
                       "left out to DIR (new or empty), one sub-folder per person: pictures no "
                       "shard holds, for `facefold evaluate MODEL DIR`")
    build.set_defaults(func=_cmd_dataset_build)
    inspect = dataset_commands.add_parser("inspect", help="check shards, print counts, montage")
    inspect.add_argument("data", type=Path)
    inspect.add_argument("--montage", type=Path, help="PNG path (default DATA/montage.png)")
    inspect.set_defaults(func=_cmd_dataset_inspect)


def _cmd_dataset_build(args: argparse.Namespace) -> None:
    from facefold.data.build import build_dataset

    build_dataset(
        args.src, args.out, shards=args.shards, per_class=args.per_class, size=args.size,
        seed=args.seed, overwrite=args.overwrite, near_duplicates=args.near_dup_distance,
        spare=args.spare,
    )


def _cmd_dataset_inspect(args: argparse.Namespace) -> None:
    from facefold.data.inspect import format_report, inspect_dataset

    montage = args.montage or Path(args.data) / "montage.png"
    report = inspect_dataset(args.data, montage=montage)
    print(format_report(report))
    print(f"All checks passed. Montage: {montage}")
