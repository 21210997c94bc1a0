"""The gallery store: sums by hand, idempotent by picture, refusals, migration, and concurrent
writers in real processes that lose no one."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from facefold import runs
from facefold.predict.gallery import Gallery, GalleryError, People, picture_key

DIM = 4


def _unit(*values: float) -> np.ndarray:
    row = np.array(values, np.float32)
    return row / np.linalg.norm(row)


def test_people_are_the_sums_of_their_pictures_in_enrollment_order(tmp_path: Path) -> None:
    gallery = Gallery(tmp_path, DIM)
    assert gallery.read().names == [] and gallery.read().sums.shape == (0, DIM)
    a1, a2, b1 = _unit(1, 0, 0, 0), _unit(0, 1, 0, 0), _unit(0, 0, 3, 4)
    assert gallery.add("bob", np.stack([b1]), ["b1"]) == (1, 1)
    assert gallery.add("alice", np.stack([a1, a2]), ["a1", "a2"]) == (2, 2)
    people = Gallery(tmp_path, DIM).read()  # another reader, from the file
    assert people.names == ["bob", "alice"] and people.counts.tolist() == [1, 2]
    expected = np.array([[0, 0, 0.6, 0.8], [1, 1, 0, 0]], np.float32)  # b1; a1 + a2
    np.testing.assert_array_equal(people.sums, expected)


def test_the_same_picture_again_changes_nothing(tmp_path: Path) -> None:
    gallery = Gallery(tmp_path, DIM)
    pixels = np.arange(27, dtype=np.uint8).reshape(3, 3, 3)
    key = picture_key(pixels)
    assert key == picture_key(pixels.copy()) != picture_key(pixels.T)  # content, not object
    assert gallery.add("alice", np.stack([_unit(1, 0, 0, 0)]), [key]) == (1, 1)
    assert gallery.add("alice", np.stack([_unit(1, 0, 0, 0), _unit(0, 1, 0, 0)]),
                       [key, "other"]) == (1, 2)
    assert gallery.add("alice", np.stack([_unit(1, 0, 0, 0)]), [key]) == (0, 2)
    assert gallery.read().counts.tolist() == [2]
    # Without keys, a feature is its own key.
    assert gallery.add("carol", np.stack([_unit(0, 0, 1, 0)] * 2)) == (1, 1)


def test_a_picture_of_someone_else_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    gallery = Gallery(tmp_path, DIM)
    gallery.add("alice", np.stack([_unit(1, 0, 0, 0)]), ["a"])
    with pytest.raises(ValueError, match="already enrolled as 'alice'"):
        gallery.add("mallory", np.stack([_unit(0, 1, 0, 0), _unit(1, 0, 0, 0)]), ["m", "a"])
    assert gallery.read().names == ["alice"]  # "m" came first and was rolled back too
    with pytest.raises(ValueError, match=r"features must be \(N, 4\)"):
        gallery.add("x", np.zeros((1, 3), np.float32))


def test_a_damaged_or_foreign_gallery_names_its_file(tmp_path: Path) -> None:
    (tmp_path / runs.GALLERY_FILE).write_bytes(b"not a database at all, just some bytes" * 50)
    with pytest.raises(GalleryError, match=r"gallery\.sqlite"):
        Gallery(tmp_path, DIM).read()
    with pytest.raises(GalleryError, match=r"gallery\.sqlite"):
        Gallery(tmp_path, DIM).add("a", np.stack([_unit(1, 0, 0, 0)]))
    other = tmp_path / "other"
    other.mkdir()
    Gallery(other, DIM).add("a", np.stack([_unit(1, 0, 0, 0)]))
    with pytest.raises(GalleryError, match="the model has 5"):
        Gallery(other, 5).add("b", np.stack([_unit(1, 0, 0, 0, 0)]))
    with pytest.raises(GalleryError, match="holds 4 values"):
        Gallery(other, 5).read()


def test_an_older_gallery_is_read_then_moved_in_by_the_first_write(tmp_path: Path) -> None:
    legacy = tmp_path / runs.LEGACY_GALLERY_FILE
    sums = np.array([[1, 1, 0, 0], [0, 0, 2, 0]], np.float32)
    np.savez(legacy, names=np.array(["ann", "ben"]), sums=sums, counts=np.array([2, 2]))
    read = Gallery(tmp_path, DIM).read()
    assert read.names == ["ann", "ben"] and read.counts.tolist() == [2, 2]
    Gallery(tmp_path, DIM).add("ann", np.stack([_unit(0, 0, 0, 1)]), ["new"])
    assert not legacy.exists()
    moved = Gallery(tmp_path, DIM).read()
    assert moved.names == ["ann", "ben"] and moved.counts.tolist() == [3, 2]
    np.testing.assert_array_equal(moved.sums, [[1, 1, 0, 1], [0, 0, 2, 0]])
    # A broken older gallery is named, not taken for empty.
    (tmp_path / "sub").mkdir()
    np.savez(tmp_path / "sub" / runs.LEGACY_GALLERY_FILE, names=np.array(["a"]), sums=sums,
             counts=np.array([2]))
    with pytest.raises(GalleryError, match="do not fit together"):
        Gallery(tmp_path / "sub", DIM).read()


def test_a_reader_sees_every_commit_even_within_one_clock_tick(tmp_path: Path) -> None:
    reader, writer = Gallery(tmp_path, DIM), Gallery(tmp_path, DIM)
    for i in range(20):
        writer.add(f"p{i}", np.stack([_unit(1, i, 0, 0)]))
        assert reader.read().names[-1] == f"p{i}"
    writer.clear()
    assert reader.read().names == [] and isinstance(reader.read(), People)


_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from facefold.predict.gallery import Gallery
    folder, worker = sys.argv[1], int(sys.argv[2])
    gallery = Gallery(folder, 4)
    for i in range(5):
        feature = np.eye(4, dtype=np.float32)[[i % 4]]
        gallery.add(f"w{worker}-p{i}", feature, [f"w{worker}-p{i}-picture"])
        gallery.read()
""")


def test_concurrent_writers_in_four_processes_keep_everyone(tmp_path: Path) -> None:
    """20 people enrolled by 4 processes at once, while this process enrolls and reads: all
    present, each once (the old gallery file kept whichever process wrote last)."""
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(w)],
                                stderr=subprocess.PIPE, text=True) for w in range(4)]
    here = Gallery(tmp_path, DIM)
    for i in range(5):
        here.add(f"main-p{i}", np.eye(4, dtype=np.float32)[[i % 4]], [f"main-p{i}-picture"])
        here.read()
    for writer in writers:
        _, errors = writer.communicate(timeout=120)
        assert writer.returncode == 0, errors
    people = Gallery(tmp_path, DIM).read()
    expected = {f"w{w}-p{i}" for w in range(4) for i in range(5)} | {
        f"main-p{i}" for i in range(5)}
    assert sorted(people.names) == sorted(expected)
    assert people.counts.tolist() == [1] * 25
