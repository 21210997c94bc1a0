"""Files checked against what recorded them: labels, shards, checkpoints, thresholds, galleries."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_dataset, tiny_config, write_image_tree

from facefold import runs
from facefold.data import records
from facefold.data.build import build_dataset
from facefold.predict import Predictor
from facefold.predict.gallery import Gallery, GalleryError, People, read_legacy
from facefold.train import train

QUIET = {"log": lambda _: None}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run (4 people, checkpoints at steps 0, 2, 4), trained once for the module."""
    root = tmp_path_factory.mktemp("trained")
    data = make_tiny_dataset(root / "data")
    train(data, tiny_config(steps=4, eval_every=2, sparsity_every=0), root / "run", [0],
          **QUIET)
    return root / "run"


@pytest.fixture
def run_dir(trained: Path, tmp_path: Path) -> Path:
    """A private copy of the trained run that a test may damage."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def test_swapped_labels_are_refused_naming_both_files(run_dir: Path) -> None:
    """Two lines of labels.txt swapped: run.json recorded the labels, so loading refuses
    (before: the names came back swapped, exit 0)."""
    labels = (run_dir / runs.LABELS_FILE).read_text().splitlines()
    labels[1], labels[2] = labels[2], labels[1]
    (run_dir / runs.LABELS_FILE).write_text("\n".join(labels) + "\n")
    with pytest.raises(ValueError, match="first difference at line 2") as err:
        Predictor.load(run_dir)
    assert str(run_dir / runs.LABELS_FILE) in str(err.value)
    assert str(run_dir / runs.RUN_FILE) in str(err.value)


def test_a_truncated_newest_checkpoint_is_refused_for_inference(run_dir: Path) -> None:
    """Never the weights of an earlier step (before: a warning, then step 2's weights)."""
    newest = run_dir / runs.CHECKPOINT_DIR / "step-000004.keras"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"step-000004.keras is not a whole checkpoint"):
        Predictor.load(run_dir)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("score", "centroid", "field 'score' must be one of msp, max_logit, energy, cosine"),
    ("thresholds", {"centroid": 0.5}, "field 'thresholds' must map score names"),
    ("naming", "nearest", "field 'naming' must be one of classifier, centroid"),
])
def test_a_threshold_naming_no_known_score_is_refused(run_dir: Path, field: str, value,
                                                      message: str) -> None:
    """threshold.json naming "centroid" (not a score) was read until the first upload (and
    gave an AttributeError there); now the file and field are named when it is loaded."""
    threshold = {"score": "energy", "threshold": 1.0, "thresholds": {"energy": 1.0},
                 field: value}
    (run_dir / runs.THRESHOLD_FILE).write_text(json.dumps(threshold))
    with pytest.raises(ValueError, match=message) as err:
        Predictor.load(run_dir)
    assert str(run_dir / runs.THRESHOLD_FILE) in str(err.value)


@pytest.mark.parametrize("size", [2**31, 4097])
def test_an_absurd_image_size_is_refused(run_dir: Path, size: int) -> None:
    """run.json's image_size 2**31 gave an OverflowError at the first picture."""
    info = runs.read_run_info(run_dir)
    (run_dir / runs.RUN_FILE).write_text(json.dumps({**info, "image_size": size}))
    with pytest.raises(ValueError, match="image_size must be an integer from the crop size 32 "
                                         f"to 4096, got {size}"):
        Predictor.load(run_dir)


def test_a_rewritten_shard_with_valid_crcs_is_refused(tmp_path: Path) -> None:
    """A shard rewritten with shifted labels is a valid TFRecord file (CRCs and all), but not
    the shard the manifest recorded: training refuses it, naming the shard and the manifest
    (before: it trained on the shifted labels)."""
    write_image_tree(tmp_path / "src", dict.fromkeys(["ann", "ben", "cal"], 4), size=(32, 32))
    data = tmp_path / "data"
    build_dataset(tmp_path / "src", data, shards=2, per_class=4, size=32, near_duplicates=0,
                  **QUIET)
    shard = data / records.shard_name(1)
    shifted = [dataclasses.replace(r, label=(r.label + 1) % 3)
               for r in records.read_shard(shard)]
    records.write_shard(shard, shifted)
    assert [r.label for r in records.read_shard(shard)] == [r.label for r in shifted]
    with pytest.raises(ValueError, match="SHA-256 differs from") as err:
        runs.data_fingerprint(data)
    assert str(shard) in str(err.value) and str(data / records.MANIFEST_FILE) in str(err.value)
    with pytest.raises(ValueError, match="SHA-256 differs from"):
        train(data, tiny_config(steps=2, eval_every=2, sparsity_every=0), tmp_path / "run",
              [0], **QUIET)


def test_a_shard_missing_from_the_manifest_or_the_folder_is_refused(tmp_path: Path) -> None:
    write_image_tree(tmp_path / "src", dict.fromkeys(["ann", "ben"], 4), size=(32, 32))
    data = tmp_path / "data"
    build_dataset(tmp_path / "src", data, shards=2, per_class=4, size=32, near_duplicates=0,
                  **QUIET)
    shutil.copy(data / records.shard_name(1), data / records.shard_name(2))
    with pytest.raises(ValueError, match=r"data-02.tfrecords is not listed in"):
        runs.data_fingerprint(data)
    (data / records.shard_name(2)).unlink()
    (data / records.shard_name(1)).unlink()
    with pytest.raises(ValueError, match=r"data-01.tfrecords is listed in .* but missing"):
        runs.data_fingerprint(data)


# ---------------------------------------------------------------- galleries

DIM = 4


def test_a_gallery_that_is_a_directory_names_the_file(tmp_path: Path) -> None:
    """Before: IsADirectoryError (a traceback, or serve unable to start)."""
    (tmp_path / "gallery.sqlite").mkdir()
    with pytest.raises(GalleryError, match=r"gallery.sqlite: cannot be read as a gallery"):
        Gallery(tmp_path, DIM).read()


def write_raw_gallery(path: Path, rows: list[tuple]) -> None:
    """A gallery database written by another program: no CHECK on the count."""
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                     "CREATE TABLE pictures (picture TEXT PRIMARY KEY, name TEXT NOT NULL, "
                     "feature BLOB NOT NULL, count INTEGER NOT NULL);")
    db.executemany("INSERT INTO meta VALUES (?, ?)", [("format", "1"), ("dim", str(DIM))])
    db.executemany("INSERT INTO pictures VALUES (?, ?, ?, ?)", rows)
    db.commit()
    db.close()


@pytest.mark.parametrize(("name", "count", "message"), [
    ("alice", -4, "count -4"),
    ("alice", 0, "count 0"),
    ("ali\nce", 1, "U\\+000A"),
    ("\u202eecila", 1, "U\\+202E"),
    ("unknown", 1, "the recognizer's answer for a stranger"),
])
def test_every_gallery_row_is_checked(tmp_path: Path, name: str, count: int,
                                      message: str) -> None:
    """Negative counts ("enrolled -4 picture(s)"), names with a line break or U+202E: refused
    with the file named."""
    feature = np.ones(DIM, np.float32).tobytes()
    write_raw_gallery(tmp_path / "gallery.sqlite", [("k1", name, feature, count)])
    with pytest.raises(GalleryError, match=message) as err:
        Gallery(tmp_path, DIM).read()
    assert str(tmp_path / "gallery.sqlite") in str(err.value)


def test_a_nan_or_truncated_gallery_names_the_file(tmp_path: Path) -> None:
    nan = np.full(DIM, np.nan, np.float32).tobytes()
    write_raw_gallery(tmp_path / "gallery.sqlite", [("k1", "alice", nan, 1)])
    with pytest.raises(GalleryError, match="non-finite"):
        Gallery(tmp_path, DIM).read()
    whole = tmp_path / "whole"
    whole.mkdir()
    Gallery(whole, DIM).add("bob", np.eye(DIM, dtype=np.float32)[:1])
    path = whole / "gallery.sqlite"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(GalleryError, match=str(path)):
        Gallery(whole, DIM).read()


def test_a_legacy_gallery_name_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "gallery.npz"
    np.savez(path, names=np.array(["a\nb"]), sums=np.ones((1, DIM), np.float32),
             counts=np.array([1]))
    with pytest.raises(GalleryError, match="U\\+000A"):
        read_legacy(path, DIM)
    np.savez(path, names=np.array(["ab"]), sums=np.ones((1, DIM), np.float32),
             counts=np.array([1]))
    assert read_legacy(path, DIM).names == People(["ab"], np.ones((1, DIM)), np.ones(1)).names
