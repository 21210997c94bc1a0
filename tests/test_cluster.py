"""`facefold faces cluster`: scores, clustering and output folders, checked by their content.

The scores (adjusted Rand index, purity, completeness) are checked against hand computations.
The end-to-end runs use :class:`conftest.FakeEmbedder` in place of dlib and, where a photo
has several faces, a fake detector, so they need neither extra; people are pictures of four
coloured quadrants, one colouring per person. One test on ORL needs dlib, MTCNN and
../shared/datasets (skipped without them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeEmbedder, shared_dataset_path
from PIL import Image

from facefold.cli import main
from facefold.data import records
from facefold.data.build import build_dataset
from facefold.embeddings import dlib128
from facefold.faces import detect
from facefold.faces.cluster import (
    DEFAULT_THRESHOLDS,
    INDEX_FILE,
    REPORT_FILE,
    SHEET_FACES,
    SHEET_FILE,
    UNASSIGNED,
    adjusted_rand_index,
    cluster_embeddings,
    cluster_faces,
    group_faces,
    partition,
    score_grouping,
)

# Quadrant colours (top left, top right, bottom left, bottom right) of each person.
PEOPLE = {
    "alice": [(220, 40, 40), (40, 40, 220), (40, 220, 40), (220, 220, 40)],
    "bob": [(40, 220, 220), (220, 40, 220), (120, 120, 120), (20, 20, 20)],
    "carol": [(250, 250, 250), (20, 120, 20), (120, 20, 120), (200, 120, 40)],
    "dave": [(20, 20, 120), (240, 200, 200), (200, 240, 200), (90, 60, 30)],
}
# Through FakeEmbedder, two of these people (or a flat gray picture) are at least 0.15
# apart in cosine distance, two pictures of one person under 0.0001: the default
# thresholds (0.0625, 0.085) tell them apart as they do dlib's people.


def face_picture(person: str, rng: np.random.Generator, side: int = 64) -> Image.Image:
    """A ``side``-pixel square "face" of ``person``: its four quadrant colours, a little noise."""
    half = side // 2
    pixels = np.zeros((side, side, 3), np.int16)
    for k, colour in enumerate(PEOPLE[person]):
        row, col = divmod(k, 2)
        pixels[row * half : (row + 1) * half, col * half : (col + 1) * half] = colour
    noisy = pixels + rng.integers(-12, 13, pixels.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def write_people(root: Path, counts: dict[str, int], seed: int = 0) -> None:
    """``root/<person>/NN.png|jpg`` face pictures, ``counts[person]`` each."""
    rng = np.random.default_rng(seed)
    for person, count in counts.items():
        (root / person).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            suffix = ".jpg" if i % 2 else ".png"
            face_picture(person, rng).save(root / person / f"{i:02d}{suffix}", quality=95)


def member_files(group: dict) -> list[str]:
    return sorted(m["file"] for m in group["members"])


# --- the scores ---------------------------------------------------------------------------


def test_ari_is_one_for_the_same_partition_under_any_names() -> None:
    assert adjusted_rand_index([0, 0, 1, 1, 2], ["b", "b", "a", "a", "c"]) == 1.0
    assert adjusted_rand_index([0, 1, 2], [5, 6, 7]) == 1.0  # all alone, both
    assert adjusted_rand_index([1, 1, 1], [0, 0, 0]) == 1.0  # all together, both


def test_ari_matches_hand_computations() -> None:
    # truth 000111, clusters 001122. Pairs in one cell: C(2,2) + C(2,2) = 2; row pairs
    # 2·C(3,2) = 6; column pairs 3·C(2,2) = 3; all pairs C(6,2) = 15. Expected 6·3/15 = 1.2,
    # maximum (6 + 3)/2 = 4.5: ARI = (2 - 1.2) / (4.5 - 1.2) = 0.8 / 3.3.
    assert adjusted_rand_index([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(0.8 / 3.3)
    # truth 0011, clusters 0101: no pair together in both; rows 2, columns 2, all 6:
    # expected 4/6, maximum 2: ARI = (0 - 2/3) / (2 - 2/3) = -0.5, worse than chance.
    assert adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)
    # Symmetric in its two arguments.
    assert adjusted_rand_index([0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, 1]) == pytest.approx(0.8 / 3.3)
    with pytest.raises(ValueError, match="differ in length"):
        adjusted_rand_index([0, 1], [0])


def test_score_grouping_matches_hand_computations() -> None:
    truth = ["a", "a", "a", "b", "b", "c"]
    groups = [np.array([0, 1, 3])]  # two a and one b; faces 2, 4, 5 unassigned
    assert partition(groups, 6).tolist() == [0, 0, 2 + 1, 0, 4 + 1, 5 + 1]
    score = score_grouping(truth, groups, 6)
    # Cells: the group holds a:2, b:1 (1 pair together); rows a:3 b:2 c:1 -> 3 + 1 = 4 pairs;
    # columns 3 -> 3 pairs; of 15. Expected 4·3/15 = 0.8, maximum 3.5: (1 - 0.8) / 2.7.
    assert score["ari"] == pytest.approx(0.2 / 2.7, abs=1e-4)
    assert score["purity"] == pytest.approx(2 / 3, abs=1e-4)  # 2 of the 3 grouped are a
    assert score["completeness"] == pytest.approx(3 / 6)  # a: 2 in its group, b: 1, c: 0
    assert (score["people"], score["groups"], score["grouped"], score["unassigned"]) == (
        3, 1, 3, 3)


# --- clustering and groups ----------------------------------------------------------------


def blobs(centres: int = 3, per: int = 6, spread: float = 0.02, seed: int = 0):
    """``per`` points around each of ``centres`` random 128-d centres about 1.4 apart."""
    rng = np.random.default_rng(seed)
    middle = rng.normal(size=(centres, 128))
    middle /= np.linalg.norm(middle, axis=1, keepdims=True)
    truth = np.repeat(np.arange(centres), per)
    return middle[truth] + rng.normal(scale=spread, size=(len(truth), 128)), truth


@pytest.mark.parametrize("method", ["average", "chinese-whispers"])
def test_clustering_recovers_separated_people(method: str) -> None:
    if method == "chinese-whispers":
        pytest.importorskip("dlib", reason="Chinese whispers is dlib's")
    vectors, truth = blobs()  # cosine distance about 0.05 within a person, 1 between
    labels = cluster_embeddings(vectors, method, threshold=0.3)
    assert adjusted_rand_index(truth, labels) == 1.0
    # Lengths do not matter, only directions.
    scaled = vectors * np.random.default_rng(1).uniform(0.5, 2.0, (len(vectors), 1))
    assert adjusted_rand_index(truth, cluster_embeddings(scaled, method, 0.3)) == 1.0
    # At the largest cosine distance, everyone is one person; below the spread, no one.
    assert len(set(cluster_embeddings(vectors, method, threshold=2.0).tolist())) == 1
    assert len(set(cluster_embeddings(vectors, method, threshold=0.001).tolist())) == 18
    assert cluster_embeddings(vectors[:1], method, 0.3).tolist() == [0]


def test_groups_are_largest_first_most_typical_first_small_ones_unassigned() -> None:
    vectors = np.array([[0.0], [10.0], [10.2], [9.0], [10.1], [50.0]])
    labels = np.array([0, 1, 1, 1, 1, 2])
    groups, unassigned = group_faces(labels, vectors, min_size=2)
    # Group 1 (four faces, mean 9.825): 10.0 nearest, then 10.1, 10.2, 9.0. Groups 0 and 2
    # have one face each: unassigned.
    assert [g.tolist() for g in groups] == [[1, 4, 2, 3]]
    assert unassigned.tolist() == [0, 5]
    groups, unassigned = group_faces(labels, vectors, min_size=1)
    assert [g.tolist() for g in groups] == [[1, 4, 2, 3], [0], [5]] and unassigned.size == 0


# --- end to end ---------------------------------------------------------------------------


def fake_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand in for MTCNN: a 224×112 picture holds two faces (its left and right halves,
    exactly on the alignment template); no other picture holds any."""

    def detect_faces(image: Image.Image, min_score: float = 0.9) -> list[detect.Face]:
        if image.size != (224, 112):
            return []
        template = np.asarray(detect.ARCFACE_TEMPLATE_112)
        return [detect.Face((x, 0.0, 112.0, 112.0), template + np.array([x, 0.0]), 0.99)
                for x in (0.0, 112.0)]

    monkeypatch.setattr(detect, "load_detector", lambda: None)
    monkeypatch.setattr(detect, "detect_faces", detect_faces)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """alice ×5, bob ×5, carol ×4, dave ×1; a photo of alice (left) and bob (right); a
    wide picture without a face; a file that is no picture."""
    root = tmp_path / "photos"
    write_people(root, {"alice": 5, "bob": 5, "carol": 4, "dave": 1})
    rng = np.random.default_rng(1)
    (root / "party").mkdir()
    pair = np.concatenate([np.asarray(face_picture(p, rng, 112)) for p in ("alice", "bob")], 1)
    Image.fromarray(pair).save(root / "party" / "together.png")
    Image.new("RGB", (300, 100), (90, 90, 90)).save(root / "party" / "landscape.png")
    (root / "party" / "notes.jpg").write_bytes(b"not a picture at all")
    return root


def identity(member: dict) -> str:
    """Who a report member is: its folder, or for the party photo, left alice, right bob."""
    if member["file"] == "party/together.png":
        return {1: "alice", 2: "bob"}[member["face"]]
    return member["file"].split("/")[0]


@pytest.mark.parametrize("method", ["chinese-whispers", "average"])
def test_cluster_groups_by_identity_and_writes_every_output(
    method: str, photos: Path, tmp_path: Path, fake_embedder: FakeEmbedder,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    if method == "chinese-whispers":  # the default
        pytest.importorskip("dlib", reason="Chinese whispers is dlib's")
    fake_detector(monkeypatch)
    out = tmp_path / "groups"
    assert main(["faces", "cluster", str(photos), "--out", str(out), "--method", method]) == 0
    report = json.loads((out / REPORT_FILE).read_text())

    # Grouped by who they are: alice 5 + 1 from the party photo, bob 5 + 1, carol 4; dave's
    # one face is no group. Folder names and order: largest first.
    names = [g["name"] for g in report["groups"]]
    assert names == ["group-001", "group-002", "group-003"]
    people = [{identity(m) for m in g["members"]} for g in report["groups"]]
    assert sorted(map(sorted, people)) == [["alice"], ["bob"], ["carol"]]
    assert [g["faces"] for g in report["groups"]] == [6, 6, 4]
    assert [identity(m) for m in report["unassigned"]] == ["dave"]
    truth = [identity(m) for g in report["groups"] for m in g["members"]] + ["dave"]
    found = [g["name"] for g in report["groups"] for _ in g["members"]] + [UNASSIGNED]
    assert adjusted_rand_index(truth, found) == 1.0

    # The folders hold exactly the faces the report says, named after their source files.
    for group in [*report["groups"], {"name": UNASSIGNED, "members": report["unassigned"]}]:
        on_disk = sorted(p.relative_to(out).as_posix() for p in (out / group["name"]).iterdir())
        assert on_disk == sorted(m["written"] for m in group["members"])
    together = [m for g in report["groups"] for m in g["members"]
                if m["file"] == "party/together.png"]
    assert sorted(Path(m["written"]).name for m in together) == ["together_1.png",
                                                                 "together_2.png"]
    assert all(m["detected"]["box"][2] == 112 for m in together)
    with Image.open(out / together[0]["written"]) as crop:
        assert crop.size == (112, 112)
    # A whole picture is linked or copied as it is; a face cut from a photo is a crop.
    alice = next(m for g in report["groups"] for m in g["members"] if m["file"] == "alice/01.jpg")
    assert (out / alice["written"]).read_bytes() == (photos / "alice/01.jpg").read_bytes()
    assert alice["detected"] is None and alice["face"] == 0

    # What gave no face is listed, not fatal.
    assert report["skipped"]["no_face"] == ["party/landscape.png"]
    assert [u["file"] for u in report["skipped"]["unreadable"]] == ["party/notes.jpg"]
    assert report["faces"] == 17 and report["files"] == 18
    assert report["method"] == method and report["threshold"] == DEFAULT_THRESHOLDS[method]
    assert "ms_per_embedded_face" in report["timing"] and "cores" in report["timing"]["machine"]

    # The contact sheet: a legend row, one 64-pixel row per group and one for unassigned,
    # each showing the faces the report lists first (most typical first).
    with Image.open(out / SHEET_FILE) as sheet:
        assert sheet.height == 5 * 64
        tile = np.asarray(sheet.convert("RGB"))[64 * 3 : 64 * 4, -SHEET_FACES * 64 :][:, :64]
    third = report["groups"][2]["members"][0]
    with Image.open(out / third["written"]) as face:
        expected = np.asarray(face.convert("RGB").resize((64, 64), Image.Resampling.LANCZOS))
    assert np.abs(tile.astype(int) - expected).mean() < 2
    page = (out / INDEX_FILE).read_text()
    assert all(f'id="{name}"' in page for name in [*names, UNASSIGNED])
    assert f'src="{together[0]["written"]}"' in page
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_out_is_never_overwritten_by_accident(
    photos: Path, tmp_path: Path, fake_embedder: FakeEmbedder, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "groups"
    argv = ["faces", "cluster", str(photos), "--out", str(out), "--crops", "--method", "average"]
    assert main(argv) == 0
    embedded = fake_embedder.calls
    (out / "group-001" / "mine.txt").write_text("a note")
    assert main(argv) == 1
    assert "is not empty" in capsys.readouterr().err
    assert (out / "group-001" / "mine.txt").is_file()  # untouched

    assert main([*argv, "--overwrite"]) == 0  # an earlier output is replaced whole
    assert not (out / "group-001" / "mine.txt").exists()
    assert fake_embedder.calls == embedded  # every face came from the cache the second time

    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("not a cluster output")
    assert main(["faces", "cluster", str(photos), "--out", str(other), "--overwrite"]) == 1
    assert "not an earlier" in capsys.readouterr().err and (other / "keep.txt").is_file()
    assert main(["faces", "cluster", str(photos), "--out", str(photos.parent)]) == 1


def test_crops_mode_scores_against_folder_names_and_feeds_dataset_build(
    tmp_path: Path, fake_embedder: FakeEmbedder
) -> None:
    photos = tmp_path / "photos"
    write_people(photos, {"alice": 5, "bob": 5, "carol": 3, "dave": 1})
    out = tmp_path / "groups"
    report = cluster_faces(photos, out, method="average", min_size=3, crops=True,
                           labels_from_folders=True, log=lambda _: None)
    assert report["evaluation"] == {"ari": 1.0, "purity": 1.0, "completeness": pytest.approx(
        13 / 14, abs=1e-4), "people": 4, "groups": 3, "grouped": 13, "unassigned": 1}
    # Named by hand (the folder renamed), the groups are a dataset's source folder.
    for group in report["groups"][:2]:
        person = {m["file"].split("/")[0] for m in group["members"]}.pop()
        (out / group["name"]).rename(out / person)
    for group in report["groups"][2:]:
        for path in (out / group["name"]).iterdir():
            path.unlink()
        (out / group["name"]).rmdir()
    for path in (out / UNASSIGNED).iterdir():
        path.unlink()
    (out / UNASSIGNED).rmdir()
    build_dataset(out, tmp_path / "data", shards=2, per_class=4, near_duplicates=0,
                  log=lambda _: None)
    assert sorted(records.read_labels(tmp_path / "data")) == ["alice", "bob"]


def test_min_size_one_leaves_no_one_unassigned(photos: Path, tmp_path: Path,
                                           fake_embedder: FakeEmbedder) -> None:
    pytest.importorskip("dlib", reason="Chinese whispers is dlib's")
    report = cluster_faces(photos, tmp_path / "out", min_size=1, crops=True,
                           log=lambda _: None)
    sizes = sorted(g["faces"] for g in report["groups"])
    # Crops mode takes the party photo whole: a face of its own, like dave's.
    assert sizes[-3:] == [4, 5, 5] and report["unassigned"] == []


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "kmeans"}, "method must be one of chinese-whispers, average"),
    ({"threshold": 0}, r"threshold must be a cosine distance in \(0, 2\]"),
    ({"threshold": 2.5}, r"threshold must be a cosine distance in \(0, 2\]"),
    ({"min_size": 0}, "min_size must be at least 1"),
    ({"size": 8}, "size must be at least 16"),
    ({"min_score": 1.5}, r"min_score must be in \(0, 1\]"),
])
def test_bad_parameters_are_named(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cluster_faces(tmp_path, tmp_path / "out", **kwargs)


def test_missing_dlib_names_the_pip_command(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` fail
    monkeypatch.setattr(dlib128, "load", dlib128.Dlib128)  # not the cached model
    out = tmp_path / "out"
    assert main(["faces", "cluster", str(photos), "--out", str(out), "--crops"]) == 1
    assert "pip install 'facefold[dlib]'" in capsys.readouterr().err
    assert not out.exists()


def test_orl_people_are_told_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five ORL people, ten photos each, detected and embedded for real (about 15 s)."""
    pytest.importorskip("dlib", reason="needs the dlib extra (pip install 'facefold[dlib]')")
    pytest.importorskip("mtcnn", reason="needs the faces extra (pip install 'facefold[faces]')")
    orl = shared_dataset_path("orl")
    photos = tmp_path / "orl"
    for person in ("s1", "s2", "s3", "s4", "s5"):
        (photos / person).mkdir(parents=True)
        for path in sorted((orl / person).glob("*.pgm")):
            (photos / person / path.name).symlink_to(path)
    monkeypatch.setenv("FACEFOLD_CACHE", str(tmp_path / "cache"))
    report = cluster_faces(photos, tmp_path / "out", labels_from_folders=True,
                           log=lambda _: None)
    score = report["evaluation"]
    assert score["ari"] >= 0.9 and score["purity"] == 1.0, score
    assert report["whole_pictures"] == 0  # every ORL photo's face was detected
