"""The decisions log of ``facefold label``: one JSON object a line, appended and fsync'd.

The only module that knows the file. Each line is one decision::

    {"seq": 7, "action": "name", "faces": ["3f…-1", …], "name": "alice", "request": "…",
     "time": "2026-12-05T19:04:11+00:00"}

``action`` is one of :data:`ACTIONS`: ``accept`` and ``name`` file faces under a person
(``accept`` is a proposed name taken as it is), ``rename`` renames a person (``name`` → ``to``;
to an existing person: the two become one), ``merge`` puts ``faces`` in one group,
``split`` takes ``faces`` out of their group into a group of their own, ``reject`` leaves
``faces`` out of the output (``reason`` one of :data:`REJECT_REASONS`), ``confirm`` keeps named
``faces`` under their person after the suspects panel doubted them (they are not listed again
while they stay that person's), and ``undo`` takes back
decision ``undone`` (the latest one not yet undone). ``request`` is the client's id of the
request: a retried request whose id is already in the log is not appended again.

A decision is on disk (written, flushed and fsync'd) before the server answers. A process
killed mid-write leaves at most a partial last line without its newline: :func:`read_log`
ignores it and :class:`DecisionLog` cuts it off before appending, so nothing half-written is
ever replayed and nothing is doubled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LOG_FILE = "decisions.jsonl"
ACTIONS = ("accept", "name", "rename", "merge", "split", "reject", "confirm", "undo")
REJECT_REASONS = ("not-a-face", "someone-else", "unsure")


class LogError(ValueError):
    """A decisions log that cannot be read back (a line in the middle is not a decision)."""


def check_decision(decision: dict[str, Any]) -> None:
    """``ValueError`` naming what is wrong with the shape of ``decision`` (not its meaning
    for the faces at hand, which the session checks)."""
    action = decision.get("action")
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    faces = decision.get("faces", [])
    if not isinstance(faces, list) or not all(isinstance(f, str) for f in faces):
        raise ValueError("faces must be a list of face ids")
    if len(set(faces)) < len(faces):
        raise ValueError("faces must not repeat")
    if not isinstance(decision.get("request", ""), str):
        raise ValueError("request must be a string")
    if action in ("accept", "name", "merge", "split", "reject", "confirm") and not faces:
        raise ValueError(f"{action} needs at least one face")
    if action == "merge" and len(faces) < 2:
        raise ValueError("merge needs the faces of two groups")
    if action in ("accept", "name", "rename") and not isinstance(decision.get("name"), str):
        raise ValueError(f"{action} needs a person's name")
    if action == "rename" and not isinstance(decision.get("to"), str):
        raise ValueError("rename needs the new name (to)")
    if action == "undo" and not isinstance(decision.get("undone"), int):
        raise ValueError("undo needs the number of the decision it undoes (undone)")
    if action == "reject" and decision.get("reason") not in REJECT_REASONS:
        raise ValueError(f"reject needs a reason, one of {', '.join(REJECT_REASONS)}, "
                         f"got {decision.get('reason')!r}")


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The decisions in ``path`` (none when it does not exist), in order.

    A last line without its newline (a write cut short) is left out. ``LogError`` names the
    line of any other line that is not a decision.
    """
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")[:-1]  # the part after the last newline is unfinished
    decisions = []
    for number, line in enumerate(lines, start=1):
        try:
            decision = json.loads(line)
            check_decision(decision)
        except ValueError as err:
            raise LogError(f"{path}:{number}: not a decision ({err}); the log is written by "
                           "facefold label only") from None
        decisions.append(decision)
    return decisions


class DecisionLog:
    """The log at ``path``, opened for appending; :meth:`append` returns once on disk."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.decisions = read_log(self.path)
        self._cut_partial_line()
        self.requests = {d["request"] for d in self.decisions if d.get("request")}

    def _cut_partial_line(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(end)
                os.fsync(f.fileno())

    @property
    def next_seq(self) -> int:
        return self.decisions[-1]["seq"] + 1 if self.decisions else 1

    def append(self, decision: dict[str, Any]) -> dict[str, Any]:
        """Number, stamp and write ``decision`` (flushed and fsync'd); returns it as written."""
        check_decision(decision)
        entry = {"seq": self.next_seq, **decision,
                 "time": datetime.now(UTC).isoformat(timespec="seconds")}
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        new = not self.path.exists()
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        if new:  # the file's name in its folder must survive a power cut too
            _fsync_folder(self.path.parent)
        self.decisions.append(entry)
        if entry.get("request"):
            self.requests.add(entry["request"])
        return entry


def effective(decisions: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The decisions in force: every one but the undo entries and the ones they undid."""
    decisions = list(decisions)
    undone = {d["undone"] for d in decisions if d["action"] == "undo"}
    return [d for d in decisions if d["action"] != "undo" and d["seq"] not in undone]


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
