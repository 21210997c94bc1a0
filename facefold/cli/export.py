"""``facefold export``: a run bundled as a self-contained model."""

from __future__ import annotations

import argparse
from pathlib import Path

from facefold.choices import EXPORT_FORMATS


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``export``."""
    export = commands.add_parser("export", help="bundle a run as a self-contained model")
    export.add_argument("run", type=Path, metavar="RUN", help="run folder")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="keras")
    export.add_argument("--out", type=Path, required=True, help="new export folder")
    export.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> None:
    from facefold.export import export_run

    print(f"Wrote {export_run(args.run, args.format, args.out)} ({args.format})")
