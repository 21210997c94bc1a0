"""``facefold demo``: a short cross-validation on SYNTHETIC faces."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``demo``."""
    demo = commands.add_parser("demo", help="short cross-validation on SYNTHETIC faces")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"))
    demo.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> None:
    from facefold.demo import run_demo

    run_demo(args.out)
