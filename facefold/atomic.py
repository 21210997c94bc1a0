"""Atomic writes: a file or a whole folder is complete under its final name, or not there.

Files: :func:`atomic_path` gives a temporary sibling ``.NAME.XXXXXXXX.tmp`` that is renamed
onto the final name on success; :func:`write_text_atomic`, :func:`write_json_atomic` and
:func:`write_rows_atomic` use it.

Folders: :func:`staging_folder` gives a new hidden sibling ``.OUT.building-XXXXXXXX`` to write
in, and :func:`swap_in` makes it ``OUT`` in one step: renamed when there is no ``OUT``, else
exchanged with it (``renameat2(RENAME_EXCHANGE)``; where the system cannot, two renames through
``.OUT.old-XXXXXXXX``, which :func:`restore_interrupted_swap` undoes after a kill). The stage
then holds the old ``OUT`` and is removed with it. A killed writer leaves only such hidden
names, which :func:`remove_stale_temporaries` deletes.

A full disk: :func:`writing` names the file in the error of a write that found no room,
:func:`disk_full` turns such an error (or TensorFlow's) into one line naming the final file,
not the temporary one.

It imports no TensorFlow, so that :mod:`facefold.machine` can use it too.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)

# The kinds of temporary folder: a folder being written, and an old one during a two-rename swap.
BUILDING, OLD = "building", "old"
# A write that found no room: the disk (or the quota) is full, or the file reached the size
# limit (`ulimit -f`; Python ignores SIGXFSZ, so such a write fails with EFBIG).
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# atomic_path's temporary file: mkstemp's 8 random characters between the name and .tmp.
_TEMPORARY_FILE = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")


# ------------------------------------------------------------------------------------- files


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """A temporary path beside ``final`` that is renamed onto it only on success.

    A killed process or a full disk leaves at most a ``.tmp`` file, never a
    half-written file under the final name.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with writing(final):
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with writing(final):
            yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a text file atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def write_rows_atomic(path: str | Path, rows: Iterable[dict]) -> None:
    """Write one JSON object per line (a ``.jsonl`` log), atomically."""
    write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))


# ----------------------------------------------------------------------------------- folders


def temporary_name(kind: str, out_name: str = "") -> str:
    """``.OUT.building-XXXXXXXX`` (or ``.old-``) for a sibling of ``OUT``, ``.building-XXXXXXXX``
    inside it (``out_name`` empty); ``XXXXXXXX`` is random hex."""
    return f".{out_name + '.' if out_name else ''}{kind}-{secrets.token_hex(4)}"


def is_temporary(name: str, kind: str, out_name: str = "") -> bool:
    """Whether ``name`` is one of :func:`temporary_name`'s (exactly, so that another
    folder's temporary folder is never mistaken for this one's)."""
    prefix = f".{out_name + '.' if out_name else ''}{kind}-"
    tail = name.removeprefix(prefix)
    return name.startswith(prefix) and len(tail) == 8 and all(c in "0123456789abcdef" for c in tail)


def temporary_siblings(out: Path, kind: str) -> list[Path]:
    """The temporary folders of ``kind`` beside ``out``, oldest first."""
    if not out.parent.is_dir():
        return []
    found = [p for p in out.parent.iterdir() if is_temporary(p.name, kind, out.name)]
    return sorted((p for p in found if p.is_dir()), key=lambda p: p.stat().st_mtime)


def restore_interrupted_swap(out: Path) -> Path | None:
    """Put the old ``out`` back when a writer was killed between the two renames of a swap;
    returns the folder it came from, or None when there was nothing to restore.

    Only :func:`swap_by_renames` leaves ``out`` missing, and only for a
    moment; its ``.OUT.old-…`` folder then holds the complete old ``out``.
    """
    old = temporary_siblings(out, OLD)
    if out.exists() or not old:
        return None
    old[-1].rename(out)
    return old[-1]


def remove_stale_temporaries(out: Path) -> None:
    """Delete the temporary folders a killed earlier writer left beside ``out``.

    Safe because none holds the only copy of anything: a building folder holds
    an unfinished ``out`` (or, after an exchange, the old one), and an old
    folder beside an existing ``out`` is one that :func:`restore_interrupted_swap`
    did not need, left after ``out`` received the new folder. Without ``out``,
    an old folder is the only copy, and is kept.
    """
    for path in temporary_siblings(out, BUILDING):
        shutil.rmtree(path)
    if out.is_dir():
        for path in temporary_siblings(out, OLD):
            shutil.rmtree(path)


@contextmanager
def staging_folder(out: Path, inside: bool = False) -> Iterator[Path]:
    """A new empty folder to write ``out`` in, removed again with what it holds at the end.

    A hidden sibling of ``out`` (so that :func:`swap_in` can make it ``out``), or, with
    ``inside``, a hidden folder in ``out`` (for an ``out`` that cannot be swapped: a mount
    point, or a parent folder that may not be written). After a swap it holds the old
    ``out``, hence the removal.
    """
    parent, out_name = (out, "") if inside else (out.parent, out.name)
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        stage = parent / temporary_name(BUILDING, out_name)
        try:
            stage.mkdir()  # not mkdtemp: it would make the published folder private (0700)
            break
        except FileExistsError:
            continue
    try:
        yield stage
    finally:
        if stage.exists():
            shutil.rmtree(stage)


def swap_in(stage: Path, out: Path) -> None:
    """Make the complete folder ``stage`` (a sibling of ``out``) the folder ``out`` in one step.

    Renamed when there is no ``out``; else exchanged with it, so that ``out`` is at every
    moment the whole old or the whole new folder, and ``stage`` then holds the old one.
    """
    if not out.exists():
        os.rename(stage, out)
    elif not exchange(stage, out):
        swap_by_renames(stage, out)


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """The C library's ``renameat2``, or None where there is none (not Linux, glibc < 2.28)."""
    if sys.platform != "linux":
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_uint]
    return function


def exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (``renameat2(RENAME_EXCHANGE)``, Linux 3.15+).

    Returns False where the system or file system cannot, so the caller falls back.
    """
    at_fdcwd, rename_exchange = -100, 2  # from <fcntl.h> and <linux/fs.h>
    function = _renameat2()
    if function is None:
        return False
    if function(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def swap_by_renames(stage: Path, out: Path) -> None:
    """Swap with two renames where :func:`exchange` cannot: ``out`` to ``.OUT.old-…``, then
    ``stage`` to ``out``; the old folder is then removed. A kill between the two is undone
    by :func:`restore_interrupted_swap`."""
    old = out.parent / temporary_name(OLD, out.name)
    os.rename(out, old)
    try:
        os.rename(stage, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old)


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Hard-link ``src`` as ``dst``, or copy it with its metadata where linking fails."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


# -------------------------------------------------------------------------------- full disk


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Name ``path`` in a disk-full ``OSError`` raised inside that names no file (a
    ``write`` on an open file names none), for :func:`disk_full`."""
    try:
        yield
    except OSError as err:
        if err.errno in DISK_FULL and not err.filename:
            err.filename = str(path)
        raise


def disk_full(err: BaseException, unnamed: str = "a file") -> str | None:
    """``"disk full writing FILE: why"`` when ``err``, or an error it came from, is a write
    that found no room (see :data:`DISK_FULL`; TensorFlow's file errors too), else None.

    FILE is the file or folder being written, under its final name (a temporary sibling of
    :func:`atomic_path` or :func:`staging_folder` is named by what it was to become), or
    ``unnamed`` when the error names none.
    """
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in DISK_FULL:
            where = published_name(cause.filename) if cause.filename else unnamed
            return f"disk full writing {where}: {cause.strerror or os.strerror(cause.errno)}"
        # tensorflow.errors.OpError (TFRecordWriter, checkpoints, summaries): "PATH; why".
        if type(cause).__module__.startswith("tensorflow"):
            path, separator, why = str(getattr(cause, "message", "") or "").rpartition("; ")
            if why.strip() in {os.strerror(code) for code in DISK_FULL}:
                where = published_name(path) if separator else unnamed
                return f"disk full writing {where}: {why.strip()}"
        cause = cause.__cause__ or cause.__context__
    return None


def published_name(path: str | Path) -> str:
    """``path`` with every temporary name of this module replaced by its final one:
    ``.OUT.building-XXXXXXXX/.x.tfrecords.abcd1234.tmp`` -> ``OUT/x.tfrecords``."""
    parts = []
    for part in Path(path).parts:
        out_name = part[1:].rsplit(".", 1)[0]
        if any(is_temporary(part, kind) for kind in (BUILDING, OLD)):
            continue  # staging_folder(inside=True): the folder it is in is the final one
        if any(is_temporary(part, kind, out_name) for kind in (BUILDING, OLD)):
            part = out_name
        elif match := _TEMPORARY_FILE.fullmatch(part):
            part = match["name"]
        parts.append(part)
    return str(Path(*parts)) if parts else str(path)
