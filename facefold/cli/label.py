"""``facefold label``: the labeling workbench (the ``serve``, ``faces`` and ``dlib`` extras)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``label``."""
    label = commands.add_parser(
        "label", help="web page to name the faces of unsorted photos into person folders")
    label.add_argument("photos", type=Path, metavar="PHOTOS", help="folder of unsorted photos")
    label.add_argument("--out", type=Path, required=True, metavar="FACES",
                       help="folder of person folders (made, or added to); the decisions log "
                       "and the crops are kept in FACES/.facefold-label")
    label.add_argument("--model", type=Path, default=None, metavar="MODEL",
                       help="a model folder whose people are proposed too (above its "
                       "calibrated threshold)")
    label.add_argument("--size", type=int, default=112, help="side of the face crops (112)")
    label.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1: this machine only)")
    label.add_argument("--port", type=int, default=8000)
    label.set_defaults(func=_cmd_label)


def _cmd_label(args: argparse.Namespace) -> None:
    from facefold.label import label
    from facefold.serve import require_server_packages

    try:
        require_server_packages()
    except RuntimeError as err:
        raise SystemExit(f"facefold: error: {err}") from None
    label(args.photos, args.out, args.model, host=args.host, port=args.port, size=args.size)
