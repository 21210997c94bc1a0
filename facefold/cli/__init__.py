"""The ``facefold`` command: a thin shell over the Python API.

Each subcommand parses its arguments and calls one library function; errors
a user can act on are printed as one line and exit with status 1 (a command whose answer
is its exit status, like ``verify``, sets ``error_status`` to a status of its own); a full
disk is one line "disk full writing FILE: …" and status 2 (:data:`DISK_FULL_STATUS`), and so
is a folder another command is writing (:class:`facefold.locks.FolderBusyError`).

One module per command or command group (:mod:`facefold.cli.dataset`, ``train``, ``cv`` …),
each with its parser (``add_parser``) beside its handler; :mod:`facefold.cli.options` holds the
options several commands share and :mod:`facefold.cli.parser` puts the parser together.
Building the parser imports no TensorFlow: the oneDNN choice must come first.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
from collections.abc import Sequence
from typing import Any

from facefold.atomic import disk_full
from facefold.cli.parser import build_parser, iter_commands, parse_args
from facefold.locks import FolderBusyError, folder_lock
from facefold.machine import apply_onednn_choice, set_tf_threads

# Quiet TensorFlow's start-up chatter (see facefold.machine.start_tensorflow) unless the user
# asked for it with --verbose or their own TF_CPP_MIN_LOG_LEVEL.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["DEPLOY_COMMANDS", "TRAINING_COMMANDS", "build_parser", "iter_commands", "main",
           "parse_args"]

# The exit status when the disk is full: not the user's input (1), the machine's space.
DISK_FULL_STATUS = 2
# The exit status when another command is writing the output folder: try again later.
FOLDER_BUSY_STATUS = 2

# Commands that train: when this machine has no measured oneDNN choice yet, they time one.
TRAINING_COMMANDS = frozenset({"train", "cv", "experiment", "fit", "demo", "bench"})
# Commands that deploy a model: they start TensorFlow only if the model needs it (a model
# folder's TFLite export runs without it), so not here unless --threads asks. So do the
# commands whose parser sets starts_tensorflow=False (`faces crop`: MTCNN runs in NumPy).
DEPLOY_COMMANDS = frozenset({"verify", "identify", "enroll", "predict", "serve"})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``facefold`` command; returns the exit status."""
    args = parse_args(argv)
    _write_output_whole()
    if args.verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    # Before TensorFlow starts (set_tf_threads starts it): oneDNN on or off as measured here;
    # commands that train time it when this machine has no choice yet.
    apply_onednn_choice(measure=args.command in TRAINING_COMMANDS,
                        log=lambda line: print(f"facefold: {line}", file=sys.stderr))
    try:
        if args.threads or (args.command not in DEPLOY_COMMANDS
                             and getattr(args, "starts_tensorflow", True)):
            set_tf_threads(args.threads)
        # Commands that write OUT after their library function returns (reports) hold its
        # lock for the whole command; the library functions take it themselves as well.
        with (folder_lock(args.out) if getattr(args, "locks_out", False)
              else contextlib.nullcontext()):
            status = args.func(args)
        sys.stdout.flush()  # a full disk under a redirected output shows here, not at exit
    except FolderBusyError as err:  # another command is writing OUT: nothing was touched
        print(f"facefold: error: {err}", file=sys.stderr)
        return FOLDER_BUSY_STATUS
    except Exception as err:
        # A full disk first: its OSError or TensorFlow error may come wrapped in another.
        unnamed = "standard output" if _output_is_stuck() else "a file"
        if (full := disk_full(err, unnamed)) is not None:
            print(f"facefold: error: {full}", file=sys.stderr)
            return DISK_FULL_STATUS
        # ModuleNotFoundError: an optional extra is missing; its message says what to install.
        if not isinstance(err, (ValueError, FileNotFoundError, FileExistsError,
                                FloatingPointError, RuntimeError, ModuleNotFoundError)):
            raise
        print(f"facefold: error: {err}", file=sys.stderr)
        return getattr(args, "error_status", 1)
    except KeyboardInterrupt:
        print("facefold: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return status or 0


class _WholeWrites(io.RawIOBase):
    """A file descriptor written whole or not at all: after a short write (the disk filled
    up in the middle of it) the rest is written again, and that write fails with the reason.
    Python's own writer drops the rest of such a write silently (CPython 3.11, checked with
    ``ulimit -f``), so a redirected output would be cut short with exit status 0."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        while view:
            written = os.write(self.fd, view)
            if not written:  # no progress and no error: say so rather than loop
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view = view[written:]
        return len(data)


def _write_output_whole() -> None:
    """Standard output through :class:`_WholeWrites` when it is this process's own file
    descriptor (not a test's capture)."""
    if sys.stdout is not sys.__stdout__ or sys.stdout is None:
        return
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    stdout = sys.stdout
    stdout.flush()
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(_WholeWrites(fd)), encoding=stdout.encoding, errors=stdout.errors,
        line_buffering=stdout.line_buffering)


def _output_is_stuck() -> bool:
    """Whether standard output cannot be written (a redirect onto a full disk); it then
    points at /dev/null, as the interpreter would otherwise retry writing its buffer at exit
    and print a traceback there."""
    try:
        sys.stdout.flush()
        return False
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return True

