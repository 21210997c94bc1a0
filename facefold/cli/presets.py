"""``facefold presets``: the registered presets, one line each."""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``presets``."""
    presets = commands.add_parser("presets", help="list the registered presets")
    presets.set_defaults(func=_cmd_presets)


def _cmd_presets(args: argparse.Namespace) -> None:
    from facefold.models.presets import describe_preset, list_presets

    names = list_presets()
    width = max(len(name) for name in names)
    for name in names:
        print(f"{name:{width}s}  {describe_preset(name)}")
