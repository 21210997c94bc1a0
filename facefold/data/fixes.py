"""Label fixes written back to a source folder: the fixes CSV of ``facefold dataset audit`` and
``facefold dataset fix``, which moves files between person folders (this module owns both
files: the CSV and the journal of the moves).

The fixes CSV has one row per suspect crop: ``action`` (``keep``, ``move`` or ``drop``),
``file`` (the source picture), ``sha256`` (of that file when the audit ran), ``given`` (its
person folder), ``to`` (the person folder a ``move`` puts it in), then ``score``, ``kind`` and
``detail`` for the person deciding. The audit writes every action as ``keep``: nothing moves
until a person has changed a row.

``dataset fix`` checks every row before it moves anything (the file is still where the audit
saw it, with the same bytes; the target person folder exists; nothing is overwritten) and
refuses the whole file on the first problem, naming the row. A ``drop`` moves the picture into
``SOURCE/.facefold-dropped/<person>/`` (a folder that ``dataset build`` skips, as it skips
every folder starting with a dot), never deletes it. The moves are written to a journal beside
the CSV (``<fixes>.moves.jsonl``) before the first one is made; ``--undo`` moves them back.
A run killed half-way is finished by running it again (moves already made are recognised and
skipped), or undone.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from facefold.atomic import atomic_path, write_rows_atomic
from facefold.csvcells import plain_cell, safe_row
from facefold.data.images import file_sha256
from facefold.log import Log

FIX_COLUMNS = ("action", "file", "sha256", "given", "to", "score", "kind", "detail")
ACTIONS = ("keep", "move", "drop")
DROPPED_DIR = ".facefold-dropped"
JOURNAL_SUFFIX = ".moves.jsonl"


@dataclass(frozen=True)
class Move:
    """One file moved (or to move) by a fix: ``source`` -> ``target``; ``sha256`` of its bytes."""

    source: Path
    target: Path
    sha256: str
    action: str


def write_fixes(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write the fixes CSV atomically; each row maps :data:`FIX_COLUMNS` to values (``action``
    defaults to ``keep``). Cells go through :func:`facefold.csvcells.safe_row`."""
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, FIX_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(safe_row({"action": "keep", **{k: row.get(k, "") for k in
                                                          FIX_COLUMNS if k in row}}))


def journal_path(fixes: str | Path) -> Path:
    """Where ``dataset fix`` records the moves of the fixes CSV ``fixes``."""
    fixes = Path(fixes)
    return fixes.with_name(fixes.stem + JOURNAL_SUFFIX)


def read_fixes(path: str | Path) -> list[dict[str, str]]:
    """The rows of a fixes CSV, checked: ``ValueError`` naming the file and line of a row with
    an unknown action, a ``move`` without ``to``, or missing columns."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fixes file {path} does not exist")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("action", "file", "sha256", "to") if c not in (reader.fieldnames
                                                                               or [])]
        if missing:
            raise ValueError(f"{path} is not a fixes file of `dataset audit`: it has no "
                             f"column {', '.join(missing)}")
        rows = []
        for line, raw in enumerate(reader, start=2):
            row = {k: plain_cell((v or "").strip()) for k, v in raw.items() if k}
            action = row["action"].lower() or "keep"
            if action not in ACTIONS:
                raise ValueError(f"{path} line {line}: action {row['action']!r} is not one of "
                                 f"{', '.join(ACTIONS)}")
            if action == "move" and not row["to"]:
                raise ValueError(f"{path} line {line}: action move needs a person in column "
                                 "'to'")
            rows.append({**row, "action": action, "line": str(line)})
    return rows


def plan_fixes(path: str | Path) -> tuple[list[Move], list[Move]]:
    """``(to do, already done)``: the moves the fixes CSV ``path`` asks for, every row checked
    first. ``ValueError``/``FileExistsError`` naming the line of the first row that cannot be
    applied: its file is gone or changed, its target person folder does not exist, the target
    file exists, or two rows move to one place."""
    path = Path(path)
    todo: list[Move] = []
    done: list[Move] = []
    targets: dict[Path, str] = {}
    for row in read_fixes(path):
        if row["action"] == "keep":
            continue
        where = f"{path} line {row['line']}"
        source = Path(row["file"])
        root, person = source.parent.parent, source.parent.name
        if row["action"] == "move":
            if row["to"].startswith(".") or "/" in row["to"] or "\\" in row["to"]:
                raise ValueError(f"{where}: {row['to']!r} is not a person folder name (no path, no "
                                 "leading dot)")
            if not (root / row["to"]).is_dir():
                raise ValueError(f"{where}: there is no person folder {row['to']!r} in {root} "
                                 "(create it first, or correct the name)")
            target = root / row["to"] / source.name
        else:
            target = root / DROPPED_DIR / person / source.name
        if target == source:
            raise ValueError(f"{where}: {source} is already in the person folder "
                             f"{row['to']!r}; write keep, or another person")
        move = Move(source, target, row["sha256"], row["action"])
        if target in targets:
            raise ValueError(f"{where}: {target} is also the target of line {targets[target]}")
        targets[target] = row["line"]
        if not source.exists() and target.is_file() and file_sha256(target) == row["sha256"]:
            done.append(move)  # a run killed half-way made this one
            continue
        if not source.is_file():
            raise FileNotFoundError(f"{where}: {source} does not exist (moved or deleted "
                                    "since the audit); run the audit again")
        if file_sha256(source) != row["sha256"]:
            raise ValueError(f"{where}: {source} changed since the audit (its SHA-256 differs); "
                             "run the audit again")
        if target.exists() and not _linked(source, target):
            raise FileExistsError(f"{where}: {target} already exists; rename one of the two "
                                  "files first (nothing was moved)")
        todo.append(move)
    return todo, done


def apply_fixes(path: str | Path, *, dry_run: bool = False, log: Log = print) -> list[Move]:
    """Make the moves of the fixes CSV ``path`` (see the module docstring); return them.

    Every row is checked before the first move (:func:`plan_fixes`); the journal is written
    next; each move is printed. ``dry_run`` prints the moves and makes none.
    """
    todo, done = plan_fixes(path)
    for move in done:
        log(f"already {_verb(move)}: {move.source} -> {move.target}")
    if not todo:
        log("nothing to move" + (" (every row is keep)" if not done else ""))
        return []
    if dry_run:
        for move in todo:
            log(f"would {move.action}: {move.source} -> {move.target}")
        return todo
    journal = journal_path(path)
    # The journal lists every move before the first is made: an undo after a kill finds them.
    moves = dict.fromkeys([*_read_journal(journal, missing_ok=True), *done, *todo])
    write_rows_atomic(journal, [_row(m) for m in moves])
    for move in todo:
        move.target.parent.mkdir(parents=True, exist_ok=True)
        _rename_no_replace(move.source, move.target)
        log(f"{_verb(move)}: {move.source} -> {move.target}")
    log(f"{len(todo)} file(s) moved; undo with: facefold dataset fix {path} --undo "
        f"(journal {journal})")
    return todo


def undo_fixes(path: str | Path, *, log: Log = print) -> list[Move]:
    """Move back every file the journal of the fixes CSV ``path`` records, newest first; every
    move checked before the first is undone (``FileExistsError`` when a file is back at its
    old place and also at the new one). Returns the moves undone."""
    journal = journal_path(path)
    moves = _read_journal(journal)
    undo: list[Move] = []
    for move in reversed(moves):
        if move.source.exists() and not move.target.exists():
            continue  # never made, or undone already
        if move.source.exists() and not _linked(move.source, move.target):
            raise FileExistsError(f"cannot undo {move.target} -> {move.source}: both files "
                                  "exist (nothing was moved back)")
        if not move.target.is_file():
            raise FileNotFoundError(f"cannot undo: {move.target} is gone (nothing was moved "
                                    "back)")
        undo.append(move)
    for move in undo:
        _rename_no_replace(move.target, move.source)
        log(f"moved back: {move.target} -> {move.source}")
    log(f"{len(undo)} file(s) moved back")
    return undo


def _verb(move: Move) -> str:
    return "moved" if move.action == "move" else "dropped"


def _row(move: Move) -> dict[str, str]:
    return {k: str(v) for k, v in asdict(move).items()}


def _read_journal(journal: Path, missing_ok: bool = False) -> list[Move]:
    if not journal.is_file():
        if missing_ok:
            return []
        raise FileNotFoundError(f"{journal} does not exist: these fixes were never applied")
    moves = []
    for line in journal.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        moves.append(Move(Path(row["source"]), Path(row["target"]), row["sha256"],
                          row["action"]))
    return moves


def _linked(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file (a move killed between its link and unlink)."""
    return a.exists() and b.exists() and os.path.samefile(a, b)


def _rename_no_replace(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``, never over another file: a hard link (refused when
    ``target`` exists), then the old name removed."""
    if _linked(source, target):
        os.unlink(source)  # finishing a move killed half-way
        return
    try:
        os.link(source, target)  # fails with FileExistsError when target exists
    except FileExistsError:
        raise
    except OSError:  # no hard links on this file system: checked just before, then renamed
        if target.exists():
            raise FileExistsError(f"{target} already exists") from None
        os.rename(source, target)
        return
    os.unlink(source)


def fix_rows(suspects: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows of the fixes CSV for suspects (objects with ``source``, ``sha256``, ``given``,
    ``suggested``, ``score``, ``kind``, ``detail``), each ``keep``."""
    return [{"action": "keep", "file": s.source, "sha256": s.sha256, "given": s.given,
             "to": s.suggested, "score": f"{s.score:.4f}", "kind": s.kind,
             "detail": s.detail} for s in suspects if s.sha256]
