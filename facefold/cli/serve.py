"""``facefold serve``: the web page and JSON API (the ``serve`` extra)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``serve``."""
    serve = commands.add_parser("serve", help="web page and JSON API to recognize faces")
    serve.add_argument("model", type=Path, metavar="MODEL", help="run folder or export folder")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-upload-mb", type=float, default=10,
                       help="largest accepted upload (default 10 MB; larger -> HTTP 413)")
    serve.add_argument("--per-client", type=int, default=4, metavar="N",
                       help="uploads one client address may have in progress (default 4; "
                       "more -> HTTP 429). Behind a reverse proxy every client has the "
                       "proxy's address: raise it there")
    serve.add_argument("--allow-enroll", action="store_true",
                       help="add an enroll form and POST /api/enroll?name=NAME, which add the "
                       "photo's face to the model folder's gallery (writes to MODEL)")
    serve.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> None:
    from facefold.serve import Limits, require_server_packages, serve

    try:
        require_server_packages()  # the `serve` extra: say what to install, not a traceback
    except RuntimeError as err:
        raise SystemExit(f"facefold: error: {err}") from None
    serve(args.model, args.host, args.port, args.max_upload_mb,
          limits=Limits(per_client=args.per_client), allow_enroll=args.allow_enroll)
