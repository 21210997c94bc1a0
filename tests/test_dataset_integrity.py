"""Hostile input to ``dataset build`` and ``labels.txt``: odd folder names, odd line ends,
and builds killed at every step of an overwrite."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_image_tree

from facefold import atomic
from facefold.cli import main
from facefold.data import build, records
from facefold.data.build import build_dataset
from facefold.data.inspect import inspect_dataset
from facefold.locks import lock_path

REPO = Path(__file__).resolve().parents[1]
PEOPLE = {"ann": 4, "ben": 4, "cy": 4}
# The old dataset (3 shards, seed 0) and the one that replaces it (2 shards, seed 1)
# differ in every file, so "unchanged" and "replaced" cannot be confused.
OLD = {"shards": 3, "per_class": 4, "size": 16, "seed": 0, "log": lambda _: None}
NEW = {**OLD, "shards": 2, "seed": 1}

# Every character str.splitlines() splits on, plus other invisible trouble:
# tab, a bidi override (U+202E), a byte-order mark, a zero-width space.
BAD_CHARS = ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029",
             "\t", "\x7f", "\u202e", "\ufeff", "\u200b"]
GOOD_NAMES = ["Zoë", "李", "Mary Ann", "O'Brien", "José-María", "J. R. R. Tolkien",
              "Mehr\u200cnaz", "👩\u200d🔬"]  # zero-width (non-)joiners are spelling


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three people with four noise pictures each."""
    src = tmp_path_factory.mktemp("src")
    write_image_tree(src, PEOPLE)
    return src


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (relative path -> SHA-256, link target or "dir")."""
    found: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[rel] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def temporaries(out: Path) -> list[str]:
    """Names of the build's temporary folders beside and inside ``out`` (not its lock file,
    which a killed build leaves unlocked: see tests/test_locks.py)."""
    beside = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")
              and p != lock_path(out)]
    inside = [p.name for p in out.iterdir() if p.name.startswith(".")] if out.is_dir() else []
    return sorted(beside + inside)


@pytest.fixture
def old_dataset(source: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A built dataset plus the user's files in it: (folder, snapshot of everything)."""
    out = tmp_path / "ds"
    build_dataset(source, out, **OLD)
    (out / "notes.md").write_text("mine")
    (out / "mine").mkdir()
    (out / "mine" / "plot.csv").write_text("a,b\n1,2\n")
    (out / "link-to-notes").symlink_to("notes.md")
    (out / build.MONTAGE_FILE).write_bytes(b"old montage")  # dataset-owned: replaced
    return out, snapshot(out)


def assert_is_old(out: Path, before: dict[str, str]) -> None:
    """``out`` is byte for byte the old dataset, and it still reads and checks."""
    assert snapshot(out) == before
    assert [p.name for p in records.list_shards(out)] == [records.shard_name(i) for i in range(3)]
    assert sum(len(list(records.read_shard(p))) for p in records.list_shards(out)) == 12
    assert sorted(records.read_labels(out)) == sorted(PEOPLE)
    inspect_dataset(out)  # checks the manifest's shard hashes among the rest


def assert_is_new(out: Path, before: dict[str, str]) -> None:
    """``out`` is the complete 2-shard dataset, with the user's files as they were."""
    manifest = json.loads((out / records.MANIFEST_FILE).read_text())
    assert manifest["shards"] == 2 and manifest["seed"] == 1
    assert [p.name for p in records.list_shards(out)] == ["data-00.tfrecords", "data-01.tfrecords"]
    now = snapshot(out)
    for name, sha in manifest["shard_sha256"].items():
        assert now[name] == sha
    assert records.read_labels(out) == manifest["people"]
    mine = {k: v for k, v in before.items() if k.startswith(("notes", "mine", "link"))}
    assert {k: now[k] for k in mine} == mine  # the user's files, unchanged
    assert build.MONTAGE_FILE not in now  # it showed the old crops
    inspect_dataset(out)


# ---------------------------------------------------------------- folder names


@pytest.mark.parametrize("char", BAD_CHARS, ids=[f"U+{ord(c):04X}" for c in BAD_CHARS])
def test_folder_with_a_bad_character_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, char: str
) -> None:
    src = tmp_path / "src"
    write_image_tree(src, {**PEOPLE, f"dee{char}return": 4})
    monkeypatch.setattr(build, "_scan", lambda *a, **k: pytest.fail("pictures were read"))
    with pytest.raises(ValueError) as caught:
        build_dataset(src, tmp_path / "ds", **OLD)
    message = str(caught.value)
    assert repr(f"dee{char}return") in message
    assert f"holds U+{ord(char):04X}" in message
    assert "1 person folder name in" in message and "\n" not in message
    assert not (tmp_path / "ds").exists() and temporaries(tmp_path / "ds") == []


@pytest.mark.parametrize(
    ("name", "problem"),
    [(" ann", "starts or ends with whitespace"), ("ann\u3000", "starts or ends with whitespace"),
     (os.fsdecode(b"ann\xfflee"), "U+DCFF")],  # not UTF-8: a lone surrogate in Python
)
def test_folder_with_surrounding_space_or_bad_bytes_is_refused(
    tmp_path: Path, name: str, problem: str
) -> None:
    src = tmp_path / "src"
    write_image_tree(src, PEOPLE)
    write_image_tree(src, {"x": 4}, seed=1)
    os.rename(os.fsencode(src / "x"), os.fsencode(src / name))
    with pytest.raises(ValueError, match=re.escape(f"{name!r} ") + ".*" + re.escape(problem)):
        build_dataset(src, tmp_path / "ds", **OLD)


def test_every_bad_folder_is_named_at_once_and_the_cli_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src = tmp_path / "src"
    write_image_tree(src, {**PEOPLE, "a\x85b": 4, "c\u2028d": 4})
    assert main(["dataset", "build", str(src), "--out", str(tmp_path / "ds"), "--per-class",
                 "4", "--shards", "2", "--size", "16"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("facefold: error: 2 person folder names in")
    assert "'a\\x85b' holds U+0085" in err and "'c\\u2028d' holds U+2028" in err
    assert err.count("\n") == 1  # one line, whatever the names hold


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_ordinary_names_are_labels(name: str) -> None:
    assert records.label_name_problem(name) is None


def test_non_ascii_people_build_and_read_back(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_image_tree(src, dict.fromkeys(["Zoë", "李", "Mary Ann"], 4))
    manifest = build_dataset(src, tmp_path / "ds", **OLD)
    assert sorted(records.read_labels(tmp_path / "ds")) == sorted(["Zoë", "李", "Mary Ann"])
    assert records.read_labels(tmp_path / "ds") == manifest["people"]


# ---------------------------------------------------------------- labels.txt


def write_raw(folder: Path, data: bytes) -> Path:
    """``folder/labels.txt`` holding exactly ``data``; returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labels.txt").write_bytes(data)
    return folder / "labels.txt"


@pytest.mark.parametrize("char", ["\x85", "\u2028", "\u2029", "\r", "\x0b", "\x0c", "\x1c",
                                  "\x1d", "\x1e", "\t", "\u202e"])
def test_a_separator_inside_a_line_is_an_error_naming_file_and_line(
    tmp_path: Path, char: str
) -> None:
    path = write_raw(tmp_path, f"ann\nben{char}return\ncy\n".encode())
    with pytest.raises(ValueError, match=re.escape(f"{path} line 2: name 'ben")) as caught:
        records.read_labels(tmp_path)
    assert f"U+{ord(char):04X}" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ann\n\nben\n", "line 2 is blank"),
        ("\nann\nben\n", "line 1 is blank"),
        ("ann\nben\nann\n", "line 3: name 'ann' repeats line 1"),
        ("ann\n ben\n", "line 2: name ' ben' starts or ends with whitespace"),
        ("ann\nben \r\n", "line 2: name 'ben ' starts or ends with whitespace"),
        ("ann\n  \nben\n", "line 2: name '  ' starts or ends with whitespace"),
    ],
)
def test_a_blank_repeated_or_padded_line_is_an_error(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write_raw(tmp_path, text.encode())
    with pytest.raises(ValueError, match=re.escape(f"{path} {message}")):
        records.read_labels(tmp_path)


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = write_raw(tmp_path, b"ann\nb\xe9n\n")  # Latin-1 "bén"
    with pytest.raises(ValueError, match=re.escape(f"{path} is not UTF-8 text (byte 5")):
        records.read_labels(tmp_path)


@pytest.mark.parametrize(
    "data",
    [
        b"ann\nZo\xc3\xab\ncy\n",  # as write_labels writes it
        b"ann\nZo\xc3\xab\ncy",  # no newline at the end
        b"ann\r\nZo\xc3\xab\r\ncy\r\n",  # saved on Windows
        b"ann\r\nZo\xc3\xab\ncy\r",  # mixed; a lone "\r" at the very end
        b"\xef\xbb\xbfann\nZo\xc3\xab\ncy\n",  # UTF-8 with a byte-order mark (Notepad)
        b"ann\nZo\xc3\xab\ncy\n\n\n",  # blank lines at the end shift no index
    ],
    ids=["unix", "no-final-newline", "crlf", "mixed", "bom", "trailing-blank"],
)
def test_valid_files_read_the_same(tmp_path: Path, data: bytes) -> None:
    write_raw(tmp_path, data)
    assert records.read_labels(tmp_path) == ["ann", "Zoë", "cy"]


def test_an_empty_file_has_no_labels(tmp_path: Path) -> None:
    write_raw(tmp_path, b"")
    assert records.read_labels(tmp_path) == []


def test_names_round_trip_byte_for_byte(tmp_path: Path) -> None:
    records.write_labels(tmp_path, GOOD_NAMES)
    assert records.read_labels(tmp_path) == GOOD_NAMES
    assert (tmp_path / "labels.txt").read_bytes() == "".join(
        f"{n}\n" for n in GOOD_NAMES).encode()


@pytest.mark.parametrize("name", [f"ben{c}return" for c in BAD_CHARS] + ["", " ben", "ben "])
def test_write_labels_refuses_a_name_it_could_not_read_back(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"label 1 {name!r} ")):
        records.write_labels(tmp_path, ["ann", name, "cy"])
    assert not (tmp_path / "labels.txt").exists()


def test_write_labels_refuses_a_repeat(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape("label 2 'ann' repeats an earlier label")):
        records.write_labels(tmp_path, ["ann", "ben", "ann"])


# ---------------------------------------------------------------- all-or-nothing builds


def _raise_after_first_shard(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """Make the shard writer write one shard, then raise ``error`` on the next."""
    real = records.write_shard
    written: list[Path] = []

    def write_shard(path, shard_records):
        if written:
            raise error
        written.append(Path(path))
        return real(path, shard_records)

    monkeypatch.setattr(records, "write_shard", write_shard)


def _raise_in(monkeypatch: pytest.MonkeyPatch, module, name: str, error: BaseException) -> None:
    """Replace ``module.name`` by a function that raises ``error``."""

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(module, name, fail)


@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("disk gone")],
                         ids=["ctrl-c", "error"])
@pytest.mark.parametrize("where", ["second-shard", "manifest", "carrying-user-files", "swap"])
def test_an_overwrite_that_fails_leaves_the_old_dataset_untouched(
    source: Path, old_dataset: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch,
    where: str, error: BaseException,
) -> None:
    out, before = old_dataset
    if where == "second-shard":
        _raise_after_first_shard(monkeypatch, error)
    elif where == "manifest":
        _raise_in(monkeypatch, atomic, "write_json_atomic", error)
    elif where == "carrying-user-files":
        _raise_in(monkeypatch, atomic, "link_or_copy", error)
    else:
        _raise_in(monkeypatch, atomic, "exchange", error)
    with pytest.raises(type(error)):
        build_dataset(source, out, overwrite=True, **NEW)
    monkeypatch.undo()
    assert_is_old(out, before)
    assert temporaries(out) == []  # an exception (unlike a kill) cleans up after itself


def test_a_first_build_that_fails_leaves_nothing(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _raise_after_first_shard(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        build_dataset(source, tmp_path / "ds", **NEW)
    assert not (tmp_path / "ds").exists()
    assert temporaries(tmp_path / "ds") == []


@pytest.mark.parametrize("exchange", ["renameat2", "two-renames"])
def test_overwrite_replaces_the_dataset_and_keeps_the_users_files(
    source: Path, old_dataset: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch,
    exchange: str,
) -> None:
    out, before = old_dataset
    (out / ".data-01.tfrecords.abc123.tmp").write_bytes(b"left by a 0.x build")
    if exchange == "two-renames":  # as on macOS, or a file system without RENAME_EXCHANGE
        monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
    else:
        assert atomic._renameat2() is not None  # this test machine runs Linux with glibc
    build_dataset(source, out, overwrite=True, **NEW)
    assert_is_new(out, before)
    assert temporaries(out) == []


def test_overwrite_in_place_where_out_cannot_be_swapped(
    source: Path, old_dataset: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, before = old_dataset

    def mount_point() -> None:  # e.g. a Docker volume: OUT cannot be renamed
        monkeypatch.setattr(os.path, "ismount", lambda path: Path(path) == out.resolve())

    mount_point()
    _raise_after_first_shard(monkeypatch, RuntimeError("disk gone"))
    with pytest.raises(RuntimeError):
        build_dataset(source, out, overwrite=True, **NEW)
    assert_is_old(out, before)  # built in OUT/.building-…, which is gone again
    monkeypatch.undo()
    mount_point()
    build_dataset(source, out, overwrite=True, **NEW)
    assert_is_new(out, before)
    assert temporaries(out) == []


def test_a_build_into_a_folder_of_user_files_keeps_them(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    (out / "README").write_text("the faces of the 2024 team")
    build_dataset(source, out, **OLD)
    assert (out / "README").read_text() == "the faces of the 2024 team"
    assert len(records.list_shards(out)) == 3


# A build killed by SIGKILL: no exception handler runs, so what is left on disk is
# exactly what a kill -9 or a power cut would leave.
_KILL_SCRIPT = """
import os, signal, sys
from facefold import atomic
from facefold.data import build, records

src, out, point = sys.argv[1:]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
if point == "after-first-shard":
    real_write = records.write_shard
    records.write_shard = lambda path, rows: (real_write(path, rows), die())
elif point == "after-exchange":
    real_exchange = atomic.exchange
    atomic.exchange = lambda a, b: (real_exchange(a, b), die())
else:  # between the two renames of the fallback swap
    atomic.exchange = lambda a, b: False
    real_rename = os.rename
    os.rename = lambda a, b: (real_rename(a, b), ".old-" in str(b) and die())
build.build_dataset(src, out, shards=2, per_class=4, size=16, seed=1, overwrite=True,
                    log=lambda _: None)
sys.exit("the build was not killed")
"""


@pytest.mark.parametrize("point", ["after-first-shard", "after-exchange", "between-renames"])
def test_a_killed_overwrite_leaves_one_complete_dataset(
    source: Path, old_dataset: tuple[Path, dict[str, str]], point: str
) -> None:
    out, before = old_dataset
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(source), str(out), point],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    if point == "after-first-shard":
        assert_is_old(out, before)
        (left,) = temporaries(out)
        assert re.fullmatch(r"\.ds\.building-[0-9a-f]{8}", left)  # clearly named
    elif point == "after-exchange":
        assert_is_new(out, before)
        (left,) = temporaries(out)  # the old dataset, swapped out
        assert re.fullmatch(r"\.ds\.building-[0-9a-f]{8}", left)
    else:
        assert not out.exists()  # the only moment without OUT: the next build undoes it
        assert any(re.fullmatch(r"\.ds\.old-[0-9a-f]{8}", n) for n in temporaries(out))
        lines: list[str] = []
        with pytest.raises(FileExistsError, match="--overwrite"):
            build_dataset(source, out, **{**NEW, "log": lines.append})
        assert lines and lines[0].startswith(f"restored {out} from .ds.old-")
        assert_is_old(out, before)
    build_dataset(source, out, overwrite=True, **NEW)  # the next build cleans up
    assert_is_new(out, before)
    assert temporaries(out) == []
