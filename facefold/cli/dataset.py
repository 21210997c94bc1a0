"""``facefold dataset build``, ``inspect``, ``audit`` and ``fix``: face folders to shards, their
checks, suspected label errors and their fixes written back to the face folders."""

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
    _add_audit_parsers(dataset_commands)


def _add_audit_parsers(dataset_commands: argparse._SubParsersAction) -> None:
    """``dataset audit`` and ``dataset fix``."""
    audit = dataset_commands.add_parser(
        "audit", help="crops whose label is likely wrong or ambiguous, most suspect first")
    audit.add_argument("source", type=Path, metavar="DATA_OR_CV",
                       help="a dataset folder (out-of-fold probabilities from dlib128 "
                       "embeddings, k-fold over its shards) or a `facefold cv` folder (its "
                       "cases' held-out predictions)")
    audit.add_argument("--top", type=int, metavar="N",
                       help="print (and write) only the N most suspect crops (default: all)")
    audit.add_argument("--csv", type=Path, help="also write the suspects to this CSV file")
    audit.add_argument("--sheet", type=Path, metavar="PNG",
                       help="write a contact sheet of the first 48 suspects' crops "
                       "(given -> suggested label) to this PNG")
    audit.add_argument("--fixes", type=Path, metavar="CSV",
                       help="write an editable fixes file: one row per suspect with action "
                       "keep; change it to move (to the person in column 'to') or drop, then "
                       "run `facefold dataset fix CSV`")
    audit.add_argument("--near-dup-distance", type=int, default=16, metavar="BITS",
                       help="crops of two people whose 256-bit perceptual hashes are within "
                       "BITS are suspects (default 16, as `dataset build`); 0 = off")
    audit.set_defaults(func=_cmd_dataset_audit)
    fix = dataset_commands.add_parser(
        "fix", help="apply the fixes file of `dataset audit`: move or drop source pictures")
    fix.add_argument("fixes", type=Path, metavar="CSV", help="the fixes file, edited")
    fix.add_argument("--dry-run", action="store_true", help="print the moves, make none")
    fix.add_argument("--undo", action="store_true",
                     help="move back the files an earlier `dataset fix CSV` moved")
    fix.set_defaults(func=_cmd_dataset_fix)


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


def _cmd_dataset_audit(args: argparse.Namespace) -> None:
    import sys

    from facefold.data.fixes import fix_rows, write_fixes
    from facefold.evaluate.audit import audit, format_suspects, write_suspects_csv

    if args.top is not None and args.top < 1:
        raise ValueError(f"--top must be at least 1, got {args.top}")
    suspects = audit(args.source, near_dup_distance=args.near_dup_distance,
                     log=lambda line: print(line, file=sys.stderr))
    shown = suspects[: args.top] if args.top else suspects
    if shown:
        print(format_suspects(shown))
    print(f"{len(suspects)} suspects" + (f", the first {len(shown)} shown" if args.top and
                                          len(shown) < len(suspects) else ""), file=sys.stderr)
    if args.csv:
        write_suspects_csv(args.csv, shown)
        print(f"wrote {args.csv}", file=sys.stderr)
    if args.sheet:
        from facefold.report.errors import plot_audit_sheet

        count = plot_audit_sheet(shown, args.sheet)
        print(f"wrote {args.sheet} ({count} crops)", file=sys.stderr)
    if args.fixes:
        rows = fix_rows(shown)
        write_fixes(args.fixes, rows)
        print(f"wrote {args.fixes} ({len(rows)} rows, every action keep: edit it, then run "
              f"facefold dataset fix {args.fixes})", file=sys.stderr)


def _cmd_dataset_fix(args: argparse.Namespace) -> None:
    from facefold.data.fixes import apply_fixes, undo_fixes

    if args.undo:
        if args.dry_run:
            raise ValueError("--undo and --dry-run cannot be combined")
        undo_fixes(args.fixes)
    else:
        apply_fixes(args.fixes, dry_run=args.dry_run)
