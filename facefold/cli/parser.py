"""The ``facefold`` argument parser, put together from each command's module.

Each module of :mod:`facefold.cli` adds its command(s) with ``add_parser(commands)``,
beside the handler that calls the library; :data:`COMMANDS` lists them in the order
``facefold --help`` shows them.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence

from facefold import __version__
from facefold.cli import (
    analyze,
    bench,
    cv,
    dataset,
    demo,
    evaluate,
    experiment,
    export,
    faces,
    fit,
    label,
    predict,
    presets,
    recognizer,
    report,
    serve,
    train,
)
from facefold.cli.options import THREADS_HELP, VERBOSE_HELP, resolve_legacy_out

COMMANDS = (dataset, train, cv, experiment, analyze, report, demo, presets, bench, predict,
            evaluate, export, serve, fit, recognizer, faces, label)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``facefold`` command."""
    parser = argparse.ArgumentParser(
        prog="facefold", description="Train and cross-validate face-identification CNNs."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    for _, command in iter_commands(parser):  # --threads before or after the subcommand
        command.add_argument("--threads", type=int, default=argparse.SUPPRESS, help=THREADS_HELP)
        command.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                             help=VERBOSE_HELP)
    return parser


def iter_commands(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every subcommand parser below ``parser`` with its words, e.g. ``("dataset", "build")``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                yield (*words, name), command
                yield from iter_commands(command, (*words, name))




def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a ``facefold`` command line (without the program name) as :func:`main` does."""
    args = build_parser().parse_args(argv)
    resolve_legacy_out(args)
    return args
