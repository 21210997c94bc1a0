"""Atomic files and folders (facefold.atomic): the whole old or the whole new, never a mix."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from facefold import atomic


def _folder(path: Path, files: dict[str, str]) -> Path:
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def _contents(path: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in path.iterdir()}


def test_atomic_path_renames_only_on_success(tmp_path: Path) -> None:
    final = tmp_path / "deep" / "a.txt"
    atomic.write_text_atomic(final, "old")
    with pytest.raises(RuntimeError), atomic.atomic_path(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk gone")
    assert final.read_text() == "old"
    assert sorted(p.name for p in final.parent.iterdir()) == ["a.txt"]  # no .tmp left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(final.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


@pytest.mark.parametrize("exchange", ["renameat2", "two-renames"])
def test_swap_in_replaces_a_whole_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         exchange: str) -> None:
    if exchange == "two-renames":
        monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
    out = _folder(tmp_path / "out", {"old.txt": "old"})
    with atomic.staging_folder(out) as stage:
        assert atomic.is_temporary(stage.name, atomic.BUILDING, "out")
        (stage / "new.txt").write_text("new")
        atomic.swap_in(stage, out)
    assert _contents(out) == {"new.txt": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the old one is gone too


def test_a_failed_write_leaves_the_old_folder(tmp_path: Path) -> None:
    out = _folder(tmp_path / "out", {"old.txt": "old"})
    with pytest.raises(KeyboardInterrupt), atomic.staging_folder(out) as stage:
        (stage / "new.txt").write_text("new")
        raise KeyboardInterrupt
    assert _contents(out) == {"old.txt": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_swap_killed_between_renames_is_undone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    old = _folder(tmp_path / atomic.temporary_name(atomic.OLD, "out"), {"old.txt": "old"})
    building = _folder(tmp_path / atomic.temporary_name(atomic.BUILDING, "out"), {"n": "new"})
    atomic.remove_stale_temporaries(out)  # without OUT the old folder is the only copy: kept
    assert old.is_dir() and not building.exists()
    assert atomic.restore_interrupted_swap(out) == old
    assert _contents(out) == {"old.txt": "old"}
    assert atomic.restore_interrupted_swap(out) is None  # nothing left to restore


def test_temporary_names_are_told_apart(tmp_path: Path) -> None:
    name = atomic.temporary_name(atomic.BUILDING, "ds")
    assert atomic.is_temporary(name, atomic.BUILDING, "ds")
    assert not atomic.is_temporary(name, atomic.BUILDING, "d")  # another folder's
    assert not atomic.is_temporary(name, atomic.OLD, "ds")
    assert not atomic.is_temporary(".ds.building-notahex!", atomic.BUILDING, "ds")


# ------------------------------------------------------------------------------ a full disk


def test_a_full_disk_is_named_by_the_final_file(tmp_path: Path) -> None:
    import errno

    final = tmp_path / "data" / "labels.txt"
    with pytest.raises(OSError) as err, atomic.atomic_path(final):
        raise OSError(errno.ENOSPC, "No space left on device")  # a write names no file
    assert err.value.filename == str(final)
    assert atomic.disk_full(err.value) == (
        f"disk full writing {final}: No space left on device")
    assert not final.parent.exists() or list(final.parent.iterdir()) == []
    staged = tmp_path / ".out.building-0123abcd" / ".x.tfrecords.ab_c1234.tmp"
    wrapped = RuntimeError("could not write the shard")
    wrapped.__cause__ = OSError(errno.EFBIG, "File too large", str(staged))
    assert atomic.disk_full(wrapped) == f"disk full writing {tmp_path}/out/x.tfrecords: " \
                                        "File too large"
    inside = tmp_path / "out" / ".building-0123abcd" / "model.keras"
    assert atomic.published_name(inside) == str(tmp_path / "out" / "model.keras")
    assert atomic.disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"), "standard output") \
        == "disk full writing standard output: Disk quota exceeded"
    assert atomic.disk_full(OSError(errno.EACCES, "Permission denied", "x")) is None
    assert atomic.disk_full(ValueError("File too large")) is None


def test_tensorflows_disk_full_is_read_from_its_message() -> None:
    class OutOfRangeError(Exception):  # what tf.io.TFRecordWriter raised under `ulimit -f`
        __module__ = "tensorflow.python.framework.errors_impl"

        def __init__(self, message: str) -> None:
            super().__init__(message)
            self.message = message

    err = OutOfRangeError("/d/.data.building-9da535a1/.data-00.tfrecords.0om_7a7y.tmp; "
                          "File too large")
    assert atomic.disk_full(err) == "disk full writing /d/data/data-00.tfrecords: File too large"
    assert atomic.disk_full(OutOfRangeError("End of sequence")) is None
