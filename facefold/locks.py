"""One writer per output folder: an OS lock that a command holds while it writes a folder.

:func:`folder_lock` takes an exclusive ``flock`` on a lock file beside the folder,
``.OUT.lock`` (inside it, ``OUT/.facefold.lock``, where the parent folder may not be written).
A second writer of the same folder, in any process, is refused at once with
:class:`FolderBusyError` naming the folder and the holder (pid, command, start time), which
the holder wrote into the lock file. Refusing rather than waiting: a second ``build`` or ``fit``
into the same folder is almost always a mistake, and one that waited would then redo or
overwrite the first one's work.

The kernel drops a ``flock`` when its process dies however it dies, so a killed writer never
leaves a stale lock: the next writer takes the lock, and whatever the killed one left (a
staging folder, a half-trained run) is cleaned up or resumed by the command itself, under the
lock. That is also why a live writer's staging folder is never deleted as stale: only the
lock holder removes temporaries.

The lock file is removed on release. A writer that opened it just before (and so locked a file
no longer at that path) sees that the path's inode is not its file's and tries again.

Within one process the lock is re-entrant (a command's function may call another that locks
the same folder). It imports nothing of facefold.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

LOCK_SUFFIX = ".lock"
INSIDE_NAME = ".facefold.lock"  # where the parent folder may not be written

# Folders this process holds: [lock file, its descriptor, how many times held (re-entrant)].
_HELD: dict[Path, list] = {}
_HELD_GUARD = threading.Lock()


class FolderBusyError(RuntimeError):
    """Another process is writing the folder; the message names it and the holder."""


def lock_path(out: str | Path) -> Path:
    """The lock file of the output folder ``out``: ``.OUT.lock`` beside it, or
    ``OUT/.facefold.lock`` when ``out`` is a folder whose parent may not be written."""
    out = Path(out).resolve()
    if out.is_dir() and not os.access(out.parent, os.W_OK):
        return out / INSIDE_NAME
    return out.parent / f".{out.name}{LOCK_SUFFIX}"


def _holder_text(path: Path) -> str:
    """Who holds the lock file ``path``, as it wrote itself there (or "unknown")."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return (f"pid {holder['pid']}, started {holder['started']}: "
                f"{holder['command']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not said who it is yet"


def _acquire(path: Path, out: Path) -> int:
    """An open file descriptor holding the exclusive lock on ``path``; FolderBusyError when
    another open file holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderBusyError(
                f"{out} is being written by another facefold command ({_holder_text(path)}); "
                "wait for it to finish, or write to another folder") from None
        except BaseException:
            os.close(fd)
            raise
        try:  # the holder before us may have removed the file we opened: retry on the new one
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _write_holder(fd: int) -> None:
    """Say who holds the lock, for the message of the writers it refuses."""
    holder = {"pid": os.getpid(), "command": " ".join(sys.argv)[:500],
              "started": datetime.now(UTC).isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)


@contextlib.contextmanager
def folder_lock(out: str | Path) -> Iterator[None]:
    """Hold the write lock of the output folder ``out`` for the ``with`` block.

    Raises :class:`FolderBusyError` (a ``RuntimeError``) at once when another process holds
    it. Re-entrant within this process.
    """
    out = Path(out).resolve()
    with _HELD_GUARD:
        if out in _HELD:
            _HELD[out][2] += 1
        else:
            path = lock_path(out)
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                fd = _acquire(path, out)
            except FolderBusyError:
                raise
            except OSError as err:  # a parent that may not be written: say where
                raise ValueError(f"cannot write the lock file {path} of {out}: "
                                 f"{err.strerror or err}") from None
            _write_holder(fd)
            _HELD[out] = [path, fd, 1]
    try:
        yield
    finally:
        with _HELD_GUARD:
            _HELD[out][2] -= 1
            if _HELD[out][2] == 0:
                path, fd, _ = _HELD.pop(out)
                try:  # removed while still held, so a waiting opener sees a new inode
                    path.unlink(missing_ok=True)
                finally:
                    os.close(fd)


def locks_folders(*params: str) -> Callable[[F], F]:
    """Decorate a function that writes the folders given as its arguments ``params`` (None
    skipped) so that it runs under their :func:`folder_lock`, taken in the order given."""
    def decorate(function: F) -> F:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def locked(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            with contextlib.ExitStack() as stack:
                for param in params:
                    if bound.arguments[param] is not None:
                        stack.enter_context(folder_lock(bound.arguments[param]))
                return function(*args, **kwargs)
        return locked  # type: ignore[return-value]
    return decorate
