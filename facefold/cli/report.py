"""``facefold report``: one Markdown and self-contained HTML report of cv and experiment folders."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``report``."""
    report = commands.add_parser(
        "report", help="one Markdown + self-contained HTML report of cv/experiment folders"
    )
    report.add_argument("dirs", type=Path, nargs="+", metavar="DIR",
                        help="`facefold cv` or `facefold experiment` output folder(s), one dataset")
    report.add_argument("--out", type=Path, help="where report.md, report.html and "
                        "report_assets/ go (default: the first DIR)")
    report.set_defaults(func=_cmd_report)


def save_report(dirs: list[Path], out: Path) -> None:
    from facefold.report.document import write_report

    markdown, html = write_report(dirs, out)
    print(f"Report: {markdown} and {html} (self-contained)")


def _cmd_report(args: argparse.Namespace) -> None:
    save_report(args.dirs, args.out or args.dirs[0])
