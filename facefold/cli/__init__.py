"""The ``facefold`` command: a thin shell over the Python API.

Each subcommand parses its arguments and calls one library function; errors
a user can act on are printed as one line and exit with status 1 (a command whose answer
is its exit status, like ``verify``, sets ``error_status`` to a status of its own); a folder
another command is writing (:class:`facefold.locks.FolderBusyError`) exits with 2.

One module per command or command group (:mod:`facefold.cli.dataset`, ``train``, ``cv`` …),
each with its parser (``add_parser``) beside its handler; :mod:`facefold.cli.options` holds the
options several commands share and :mod:`facefold.cli.parser` puts the parser together.
Building the parser imports no TensorFlow: the oneDNN choice must come first.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

from facefold.cli.parser import build_parser, iter_commands, parse_args
from facefold.locks import FolderBusyError, folder_lock
from facefold.machine import apply_onednn_choice, set_tf_threads

# Quiet TensorFlow's start-up chatter (see facefold.machine.start_tensorflow) unless the user
# asked for it with --verbose or their own TF_CPP_MIN_LOG_LEVEL.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["TRAINING_COMMANDS", "build_parser", "iter_commands", "main", "parse_args"]

# Commands that train: when this machine has no measured oneDNN choice yet, they time one.
TRAINING_COMMANDS = frozenset({"train", "cv", "experiment", "fit", "demo", "bench"})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``facefold`` command; returns the exit status."""
    args = parse_args(argv)
    if args.verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    # Before TensorFlow starts (set_tf_threads starts it): oneDNN on or off as measured here;
    # commands that train time it when this machine has no choice yet.
    apply_onednn_choice(measure=args.command in TRAINING_COMMANDS,
                        log=lambda line: print(f"facefold: {line}", file=sys.stderr))
    try:
        set_tf_threads(args.threads)
        # Commands that write OUT after their library function returns (reports) hold its
        # lock for the whole command; the library functions take it themselves as well.
        with (folder_lock(args.out) if getattr(args, "locks_out", False)
              else contextlib.nullcontext()):
            status = args.func(args)
    except FolderBusyError as err:  # another command is writing OUT: nothing was touched
        print(f"facefold: error: {err}", file=sys.stderr)
        return 2
    # ModuleNotFoundError: an optional extra is missing; its message says what to install.
    except (ValueError, FileNotFoundError, FileExistsError, FloatingPointError,
            RuntimeError, ModuleNotFoundError) as err:
        print(f"facefold: error: {err}", file=sys.stderr)
        return getattr(args, "error_status", 1)
    except KeyboardInterrupt:
        print("facefold: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return status or 0

