"""``facefold analyze sparsity|activations|errors``: a look inside trained runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from facefold.cli.options import warn_deprecated


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``analyze`` and its three subcommands."""
    analyze = commands.add_parser("analyze", help="look inside trained runs")
    analyze_commands = analyze.add_subparsers(dest="analyze_command", required=True)
    sparsity = analyze_commands.add_parser(
        "sparsity", help="ReLU sparsity curves of runs; live units of the dense layers"
    )
    sparsity.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folder(s)")
    sparsity.add_argument("--out", type=Path,
                          help="folder for sparsity.png (default: the first RUN)")
    sparsity.set_defaults(func=_cmd_analyze_sparsity)
    activations = analyze_commands.add_parser(
        "activations", help="every conv channel's output on one image; dead channels"
    )
    activations.add_argument("run", type=Path, help="run folder (its newest checkpoint is used)")
    activations.add_argument("image", type=Path, help="a face picture (any format Pillow reads)")
    activations.add_argument(
        "--out", type=Path, help="output folder (default RUN/analysis/activations)"
    )
    activations.set_defaults(func=_cmd_analyze_activations)
    errors = analyze_commands.add_parser(
        "errors", help="per-person accuracy, confusion matrix and misclassified crops"
    )
    errors.add_argument("folder", type=Path, help="cv folder, experiment preset folder or run")
    errors.add_argument("--out", type=Path, help="output folder (default FOLDER)")
    errors.set_defaults(func=_cmd_analyze_errors)


def _cmd_analyze_sparsity(args: argparse.Namespace) -> None:
    from facefold.report.sparsity import analyze_sparsity

    out = args.out
    if out is not None and out.suffix.lower() == ".png":  # the old meaning: the file itself
        warn_deprecated("--out FILE.png", "--out DIR (writes DIR/sparsity.png)")
    elif out is not None:
        out = out / "sparsity.png"
    print(analyze_sparsity(args.runs, out))


def _cmd_analyze_errors(args: argparse.Namespace) -> None:
    from facefold.report.errors import save_error_report

    print(save_error_report(args.folder, args.out))


def _cmd_analyze_activations(args: argparse.Namespace) -> None:
    from facefold.report.activations import analyze_activations, format_activations

    print(format_activations(analyze_activations(args.run, args.image, args.out)))
