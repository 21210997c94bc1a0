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
    export.add_argument("--out", type=Path, help="new export folder (required without --lite)")
    export.add_argument("--lite", dest="keep_lite", action="store_true",
                        help="instead, keep a TFLite export inside the run folder (RUN/lite, "
                        "what `fit` writes), which verify, identify, predict and serve run "
                        "without TensorFlow")
    export.set_defaults(func=_cmd_export, export_parser=export)


def _cmd_export(args: argparse.Namespace) -> None:
    from facefold.export import export_run, keep_lite

    if args.keep_lite:
        if args.out is not None:
            args.export_parser.error("--lite writes into the run folder: leave out --out")
        print(f"Wrote {keep_lite(args.run)} (tflite, kept by the run)")
        return
    if args.out is None:
        args.export_parser.error("the following arguments are required: --out")
    print(f"Wrote {export_run(args.run, args.format, args.out)} ({args.format})")
