"""The README and docs/: every `facefold …` command parses, every relative link resolves.

Commands are read from the fenced code blocks (shell continuations joined as
the shell would) and parsed with facefold's own parser, so renaming a flag
without updating the docs fails here; a deprecated spelling fails too.
"""

from __future__ import annotations

import io
import re
import shlex
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from facefold.cli import parse_args

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = ["data", "models", "evaluation", "results", "performance", "deployment", "cluster",
         "python-api", "development"]
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def _commands(path: Path) -> list[tuple[int, str]]:
    """``(line number, command)`` for every ``facefold …`` line of a shell code block."""
    found = []
    text = path.read_text(encoding="utf-8")
    for block in FENCE.finditer(text):
        if block.group(1).strip() not in SHELL_BLOCKS:
            continue
        first_line = text.count("\n", 0, block.start(2)) + 1
        lines = block.group(2).split("\n")
        i = 0
        while i < len(lines):
            start, command = i, lines[i]
            while command.endswith("\\") and i + 1 < len(lines):  # the shell drops "\\\n"
                i += 1
                command = command[:-1] + lines[i]
            i += 1
            command = command.strip().removeprefix("$ ")
            if command.startswith("facefold ") or command == "facefold":
                found.append((first_line + start, command))
    return found


COMMANDS = [(path, line, command) for path in DOCS for line, command in _commands(path)]


def test_the_docs_hold_enough_commands_to_check() -> None:
    assert len(COMMANDS) >= 40
    assert any(path == README for path, _, _ in COMMANDS)


@pytest.mark.parametrize(("path", "line", "command"), COMMANDS,
                         ids=[f"{p.relative_to(ROOT)}:{n}" for p, n, _ in COMMANDS])
def test_every_documented_command_parses(path: Path, line: int, command: str) -> None:
    argv = shlex.split(command, comments=True)[1:]
    err = io.StringIO()
    try:
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            parse_args(argv)
    except SystemExit as exit_info:
        if exit_info.code != 0:  # 0: --version or --help
            pytest.fail(f"{path.name}:{line}: `{command}` does not parse: {err.getvalue()}")
    assert not err.getvalue(), f"{path.name}:{line}: `{command}`: {err.getvalue()}"


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(h) for h in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8")))}


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_every_relative_link_resolves(path: Path) -> None:
    broken = []
    for target in LINK.findall(_prose(path.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):  # https:, mailto: …
            continue
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            broken.append(f"{target} (no {resolved.relative_to(ROOT.resolve())})")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target} (no heading #{anchor})")
    assert not broken, f"{path.name}: broken links: {broken}"


def test_readme_is_short_and_links_every_page() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    for page in PAGES:
        assert (ROOT / "docs" / f"{page}.md").is_file(), page
        assert f"](docs/{page}.md)" in text, f"README does not link docs/{page}.md"


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_pages_open_with_their_purpose_and_tell_no_history(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    title, _, rest = text.partition("\n\n")
    assert title.startswith("# ") and rest.strip()[:1].isalpha(), "a title, then what it is for"
    prose = _prose(text)
    assert not re.search(r"issue\s*#|\(issue\b", text, re.IGNORECASE), "issue references"
    hashes = re.findall(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b", text)
    assert not hashes, f"commit hashes: {hashes}"
    first_person = re.findall(r"\b(?:I|I've|I'm|we|We|our|Our|my|My)\b", prose)
    assert not first_person, f"first person: {first_person}"
