"""Building, reading back and inspecting a dataset, checked with numbers."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import noise_image, write_image, write_image_tree
from PIL import Image, ImageEnhance

from facefold.cli import main
from facefold.data import neardup, records
from facefold.data.build import build_dataset
from facefold.data.images import ImageError, encode_jpeg, file_sha256, load_rgb, square_crop
from facefold.data.inspect import DatasetError, format_report, inspect_dataset

PER_CLASS, SHARDS, SIZE = 13, 3, 32
KEPT = ["alice", "bob", "carol", "dave"]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 people x 14 pictures in five formats, plus every kind of file the builder must set aside.

    - erin: 5 pictures (fewer than per_class=13), frank: empty folder
    - alice/notes.jpg: text with an image suffix; bob/broken.jpg: truncated JPEG
    - carol/copy.png: same bytes as carol/01.png; dave/zz_alice.jpg: same bytes as alice/00.jpg
    - bob/no_suffix: a JPEG without suffix (must be used: decided by opening, not by name)
    - ignored: SOURCE.txt at the top, a hidden folder, a hidden file
    """
    src = tmp_path_factory.mktemp("src")
    tree = write_image_tree(src, {**dict.fromkeys(KEPT, 14), "erin": 5, "frank": 0})
    (src / "SOURCE.txt").write_text("where the pictures came from\n")
    write_image_tree(src / ".cache", {"ghost": 14}, seed=9)
    (src / "alice" / ".DS_Store").write_bytes(b"\0\1")
    (src / "alice" / "notes.jpg").write_text("not a picture")
    jpeg = encode_jpeg(noise_image(np.random.default_rng(7)))
    (src / "bob" / "broken.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    write_image(src / "bob" / "no_suffix", noise_image(np.random.default_rng(8)), "JPEG", "RGB")
    shutil.copy(tree["carol"][1], src / "carol" / "copy.png")
    shutil.copy(tree["alice"][0], src / "dave" / "zz_alice.jpg")
    return src


@pytest.fixture(scope="module")
def built(source: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[str]]:
    """The dataset built once from ``source``: (folder, manifest, log lines)."""
    out = tmp_path_factory.mktemp("built") / "ds"
    lines: list[str] = []
    manifest = build_dataset(
        source, out, shards=SHARDS, per_class=PER_CLASS, size=SIZE, seed=0, log=lines.append
    )
    return out, manifest, lines


@pytest.fixture
def dataset(built: tuple[Path, dict, list[str]], tmp_path: Path) -> Path:
    """A private copy of the built dataset that a test may damage."""
    return Path(shutil.copytree(built[0], tmp_path / "ds"))


def read_all(data_dir: Path) -> list[list[records.Record]]:
    """Every record of every shard, per shard."""
    return [list(records.read_shard(p)) for p in records.list_shards(data_dir)]


def count_table(shards: list[list[records.Record]], n_labels: int) -> np.ndarray:
    """(shards, labels) record counts."""
    return np.array([np.bincount([r.label for r in s], minlength=n_labels) for s in shards])


# ---------------------------------------------------------------- images.py


def test_load_rgb_converts_every_mode_to_rgb(tmp_path: Path) -> None:
    tree = write_image_tree(tmp_path, {"p": 5})
    for path in tree["p"]:
        img = load_rgb(path)
        assert (img.mode, img.size) == ("RGB", (40, 50)), path
    # 16-bit grayscale: full white must stay white, not clip, half must be mid-grey.
    wide = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))
    wide.save(tmp_path / "wide.png")
    assert np.asarray(load_rgb(tmp_path / "wide.png"))[0, :, 0].tolist() == [0, 128, 255]


def test_load_rgb_names_file_and_reason(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    with pytest.raises(ImageError, match=r"notes\.jpg: not an image"):
        load_rgb(text)
    jpeg = encode_jpeg(noise_image(np.random.default_rng(0)))
    (tmp_path / "cut.jpg").write_bytes(jpeg[:200])
    with pytest.raises(ImageError, match=r"cut\.jpg: corrupt or truncated"):
        load_rgb(tmp_path / "cut.jpg")
    with pytest.raises(ImageError, match="does not exist"):
        load_rgb(tmp_path / "missing.png")


def test_square_crop_keeps_the_centre() -> None:
    # 60x20 picture: a white 20x20 square in the middle of black sides.
    array = np.zeros((20, 60, 3), np.uint8)
    array[:, 20:40] = 255
    crop = square_crop(Image.fromarray(array), 10)
    assert crop.size == (10, 10)
    assert np.asarray(crop).min() > 200  # only the white centre survives
    assert square_crop(Image.fromarray(array), 64).size == (64, 64)


def test_file_sha256_matches_hashlib(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"facefold")
    assert file_sha256(tmp_path / "f") == hashlib.sha256(b"facefold").hexdigest()


# ---------------------------------------------------------------- build.py


def test_counts_match_hand_computation(built: tuple[Path, dict, list[str]]) -> None:
    out, manifest, _ = built
    table = count_table(read_all(out), len(KEPT))
    # 13 per person over 3 shards: 4 each plus one extra, rotated across people.
    for label in range(len(KEPT)):
        assert sorted(table[:, label]) == [4, 4, 5]
    assert sorted(table.sum(axis=1)) == [17, 17, 18]  # 52 crops, shard totals within 1
    assert table.tolist() == manifest["counts"]
    assert [p.name for p in records.list_shards(out)] == [
        "data-00.tfrecords",
        "data-01.tfrecords",
        "data-02.tfrecords",
    ]


def test_six_shards_balance_totals_too(source: Path, tmp_path: Path) -> None:
    # 13 = 6*2 + 1: each person has one shard with 3; the extras rotate so totals are 9 or 8.
    manifest = build_dataset(
        source, tmp_path / "ds", shards=6, per_class=13, size=16, log=lambda _: None
    )
    table = np.array(manifest["counts"])
    assert all(sorted(table[:, label]) == [2, 2, 2, 2, 2, 3] for label in range(4))
    assert sorted(table.sum(axis=1)) == [8, 8, 9, 9, 9, 9]


def test_plain_tf_parser_agrees_with_records(built: tuple[Path, dict, list[str]]) -> None:
    out, _, _ = built
    spec = {  # typed here on purpose: the 2016 readers' own spec, not records.py's
        "label": tf.io.FixedLenFeature([], tf.int64),
        "image_raw": tf.io.FixedLenFeature([], tf.string),
        "sha256": tf.io.FixedLenFeature([], tf.string),
    }
    for path, ours in zip(records.list_shards(out), read_all(out), strict=True):
        plain = [
            tf.io.parse_single_example(raw, spec) for raw in tf.data.TFRecordDataset(str(path))
        ]
        assert len(plain) == len(ours)
        for example, record in zip(plain, ours, strict=True):
            assert int(example["label"]) == record.label
            assert example["image_raw"].numpy() == record.image_raw
            assert example["sha256"].numpy().decode() == record.source_sha256
            assert tf.io.decode_jpeg(example["image_raw"]).shape == (SIZE, SIZE, 3)


def test_labels_point_at_the_right_person(
    built: tuple[Path, dict, list[str]], source: Path
) -> None:
    out, manifest, _ = built
    labels = records.read_labels(out)
    assert labels == manifest["people"]
    assert sorted(labels) == KEPT
    owner = {file_sha256(p): p.parent.name for p in source.glob("*/*") if p.is_file()}
    sources = [r.source_sha256 for shard in read_all(out) for r in shard]
    assert len(set(sources)) == len(sources) == PER_CLASS * len(KEPT)  # no picture twice
    for shard in read_all(out):
        for record in shard:
            assert owner[record.source_sha256] == labels[record.label]


def test_manifest_describes_the_files(built: tuple[Path, dict, list[str]], source: Path) -> None:
    out, manifest, _ = built
    assert json.loads((out / records.MANIFEST_FILE).read_text()) == manifest
    assert manifest["shard_sha256"] == {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in records.list_shards(out)
    }
    expected = {"seed": 0, "size": SIZE, "per_class": PER_CLASS, "shards": SHARDS}
    assert {k: manifest[k] for k in expected} == expected
    assert manifest["source"] == str(source.resolve())


def test_exclusions_are_named(built: tuple[Path, dict, list[str]]) -> None:
    _, manifest, lines = built
    skipped = {s["file"]: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == {"alice/notes.jpg", "bob/broken.jpg"}
    assert "not an image" in skipped["alice/notes.jpg"]
    assert "truncated" in skipped["bob/broken.jpg"]
    duplicates = {d["file"]: d["duplicate_of"] for d in manifest["duplicates"]}
    assert duplicates == {"carol/copy.png": "carol/01.png", "dave/zz_alice.jpg": "alice/00.jpg"}
    dropped = {d["name"]: (d["images"], d["reason"]) for d in manifest["dropped_people"]}
    assert dropped["frank"] == (0, "empty folder")
    assert dropped["erin"][0] == 5 and "per_class=13" in dropped["erin"][1]
    assert set(dropped) == {"erin", "frank"}  # .cache is hidden, SOURCE.txt is a loose file
    summary = "\n".join(lines)
    assert "4 people kept, 2 dropped" in summary
    assert "2 files skipped" in summary and "2 duplicates removed" in summary
    assert "data-00 18" in summary or "data-00 17" in summary


def test_same_seed_same_bytes_other_seed_differs(
    built: tuple[Path, dict, list[str]], source: Path, tmp_path: Path
) -> None:
    out, manifest, _ = built
    kwargs = {"shards": SHARDS, "per_class": PER_CLASS, "size": SIZE, "log": lambda _: None}
    again = build_dataset(source, tmp_path / "again", seed=0, **kwargs)
    assert again["shard_sha256"] == manifest["shard_sha256"]
    other = build_dataset(source, tmp_path / "other", seed=1, **kwargs)
    assert other["shard_sha256"] != manifest["shard_sha256"]
    picked = {r.source_sha256 for s in read_all(out) for r in s}
    picked_other = {r.source_sha256 for s in read_all(tmp_path / "other") for r in s}
    assert other["people"] != manifest["people"] or picked_other != picked


def test_spare_holds_the_pictures_no_shard_holds(
    built: tuple[Path, dict, list[str]], source: Path, tmp_path: Path
) -> None:
    out, manifest, _ = built
    lines: list[str] = []
    kwargs = {"shards": SHARDS, "per_class": PER_CLASS, "size": SIZE, "seed": 0}
    with_spare = build_dataset(source, tmp_path / "ds", spare=tmp_path / "spare",
                               log=lines.append, **kwargs)
    assert with_spare["shard_sha256"] == manifest["shard_sha256"]  # the same shards
    # Distinct readable pictures by hand: alice 14 (notes.jpg is text), bob 15 (no_suffix is a
    # JPEG, broken.jpg is not), carol 14 (copy.png is a duplicate), dave 14 (zz_alice.jpg too);
    # 13 of each are in the shards.
    assert with_spare["spare"]["pictures"] == {"alice": 1, "bob": 2, "carol": 1, "dave": 1}
    in_shards = {r.source_sha256[:8] for shard in read_all(out) for r in shard}
    spare_files = sorted((tmp_path / "spare").glob("*/*.jpg"))
    assert len(spare_files) == 5 and sorted(p.parent.name for p in spare_files) == [
        "alice", "bob", "bob", "carol", "dave"]
    for path in spare_files:
        stem, digest = path.stem.rsplit("-", 1)
        assert digest not in in_shards
        original = source / path.parent.name / next(
            f.name for f in (source / path.parent.name).iterdir() if f.stem == stem)
        assert file_sha256(original).startswith(digest)
        with Image.open(path) as image:
            assert image.size == (SIZE, SIZE)
    assert any("spare: 5 pictures no shard holds" in line for line in lines)
    # A spare folder that is not empty, or inside the source, is refused before any work.
    with pytest.raises(FileExistsError, match=r"spare folder .* not empty"):
        build_dataset(source, tmp_path / "ds2", spare=tmp_path / "spare", log=lambda _: None,
                      **kwargs)
    with pytest.raises(ValueError, match="inside the source folder"):
        build_dataset(source, tmp_path / "ds3", spare=source / "spare", log=lambda _: None,
                      **kwargs)
    assert not (tmp_path / "ds2").exists() and not (source / "spare").exists()


def test_overwrite_is_refused_then_replaces_stale_shards(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    quiet = {"per_class": 12, "size": 16, "log": lambda _: None}
    build_dataset(source, out, shards=6, **quiet)
    (out / "notes.md").write_text("mine")  # not part of the dataset: must survive
    with pytest.raises(FileExistsError, match="--overwrite"):
        build_dataset(source, out, shards=3, **quiet)
    assert len(records.list_shards(out)) == 6  # refusal touched nothing
    manifest = build_dataset(source, out, shards=3, overwrite=True, **quiet)
    assert [p.name for p in records.list_shards(out)] == list(manifest["shard_sha256"])
    assert len(manifest["shard_sha256"]) == 3  # data-03..05 are gone
    assert (out / "notes.md").read_text() == "mine"
    inspect_dataset(out)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shards": 1}, "shards must be at least 2"),
        ({"shards": 4, "per_class": 3}, "per_class must be at least shards=4"),
        ({"size": 8}, "size must be 16 to 4096 pixels, got 8"),
        ({"size": 2**31}, "size must be 16 to 4096 pixels"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
        ({"near_duplicates": -1}, r"near_duplicates must be in 0\.\.256 .*got -1"),
        ({"per_class": 15}, r"only 1 of 6 people .* bob 15, alice 14, carol 14"),
    ],
)
def test_bad_parameters_are_named(
    source: Path, tmp_path: Path, kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_dataset(source, tmp_path / "ds", log=lambda _: None, **{"per_class": 13, **kwargs})
    assert not (tmp_path / "ds").exists()


# ---------------------------------------------------------------- inspect.py


def test_inspect_passes_a_good_dataset(built: tuple[Path, dict, list[str]], tmp_path: Path) -> None:
    out, manifest, _ = built
    montage = tmp_path / "montage.png"
    report = inspect_dataset(out, montage=montage, per_person=3)
    assert report.counts == manifest["counts"]
    assert report.labels == manifest["people"]
    assert report.total == PER_CLASS * len(KEPT)
    assert report.shard_bytes == [p.stat().st_size for p in records.list_shards(out)]
    assert report.image_sizes == {f"{SIZE}x{SIZE}": 52}
    assert report.manifest_checked
    with Image.open(montage) as img:
        assert img.size[1] == 4 * 64 and img.size[0] > 3 * 64  # 4 rows, name column + 3 crops
    text = format_report(report)
    assert "data-02.tfrecords" in text and "0=" in text and "verified" in text


def test_inspect_without_manifest_still_checks(dataset: Path) -> None:
    (dataset / records.MANIFEST_FILE).unlink()
    report = inspect_dataset(dataset)
    assert not report.manifest_checked
    assert "no manifest.json" in format_report(report)


def problems_of(data_dir: Path) -> str:
    """The DatasetError message inspect_dataset raises on ``data_dir``."""
    with pytest.raises(DatasetError) as err:
        inspect_dataset(data_dir)
    return str(err.value)


def test_inspect_names_a_truncated_shard(dataset: Path) -> None:
    path = dataset / "data-02.tfrecords"
    path.write_bytes(path.read_bytes()[:-7])
    message = problems_of(dataset)
    assert "data-02.tfrecords: corrupt or truncated" in message
    assert "data-02.tfrecords: SHA-256 differs" in message
    assert "data-00" not in message and "data-01" not in message


def test_inspect_names_a_record_with_the_wrong_schema(dataset: Path) -> None:
    path = dataset / "data-01.tfrecords"
    feature = {  # the label stored as bytes instead of int64
        "label": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"3"])),
        "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"])),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(example.SerializeToString())
    message = problems_of(dataset)
    assert "data-01.tfrecords record 0: missing feature 'label' (int64)" in message
    assert "data-00" not in message and "data-02" not in message


def test_inspect_names_a_label_outside_the_list(dataset: Path) -> None:
    path = dataset / "data-02.tfrecords"
    shard = list(records.read_shard(path))
    shard[3] = records.Record(99, shard[3].image_raw, shard[3].source_sha256)
    records.write_shard(path, shard)
    message = problems_of(dataset)
    assert "data-02.tfrecords record 3: label out of range: 99 is not in 0..3" in message


def test_inspect_names_both_shards_of_a_leaked_image(dataset: Path) -> None:
    first = next(records.read_shard(dataset / "data-00.tfrecords"))
    path = dataset / "data-01.tfrecords"
    records.write_shard(path, [*records.read_shard(path), first])
    message = problems_of(dataset)
    assert "data-00.tfrecords and data-01.tfrecords share 1 image(s)" in message
    assert "data-00.tfrecords record 0" in message


def test_inspect_names_the_shard_missing_a_person(dataset: Path) -> None:
    labels = records.read_labels(dataset)
    path = dataset / "data-02.tfrecords"
    records.write_shard(path, [r for r in records.read_shard(path) if r.label != 1])
    message = problems_of(dataset)
    assert f"data-02.tfrecords holds no image of '{labels[1]}' (label 1)" in message


def test_inspect_names_an_unbalanced_person(dataset: Path) -> None:
    labels = records.read_labels(dataset)
    a, b = dataset / "data-00.tfrecords", dataset / "data-01.tfrecords"
    moved = [r for r in records.read_shard(b) if r.label == 2][:2]
    records.write_shard(a, [*records.read_shard(a), *moved])
    records.write_shard(b, [r for r in records.read_shard(b) if r not in moved])
    message = problems_of(dataset)
    assert f"'{labels[2]}' (label 2) is unbalanced across shards: data-00.tfrecords" in message
    assert "share" not in message  # moving is not copying
    for other in (0, 1, 3):
        assert f"(label {other}) is unbalanced" not in message


# ---------------------------------------------------------------- near-duplicates


def photo_like(rng: np.random.Generator, size: tuple[int, int] = (48, 48)) -> Image.Image:
    """A random RGB picture with detail at every scale, as photos have.

    Pixel noise would not do: re-compression changes it beyond recognition. Nor
    would a plain blur: its perceptual hash rests on near-zero frequencies.
    """
    layers = [
        np.asarray(
            Image.fromarray(rng.integers(0, 256, (n, n, 3), dtype=np.uint8)).resize(
                size, Image.Resampling.BICUBIC
            ),
            np.float64,
        )
        for n in (3, 6, 12, 24)
    ]
    return Image.fromarray(np.clip(sum(layers) / len(layers), 0, 255).astype(np.uint8))


def edited(img: Image.Image) -> bytes:
    """The picture brightened by 10 % and re-compressed as JPEG quality 80: a near-duplicate."""
    return encode_jpeg(ImageEnhance.Brightness(img).enhance(1.1), quality=80)


@pytest.fixture(scope="module")
def near_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alice, bob, carol x 6 photo-like PNGs, plus two edited copies:

    - alice/zz_copy.jpg: of alice/00.png (same person: the copy goes)
    - bob/zz_carol.jpg: of carol/03.png (two people: bob's copy is met first, carol/03.png goes)
    """
    src = tmp_path_factory.mktemp("near")
    rng = np.random.default_rng(5)
    for person in ("alice", "bob", "carol"):
        (src / person).mkdir()
        for i in range(6):
            photo_like(rng).save(src / person / f"{i:02d}.png")
    with Image.open(src / "alice" / "00.png") as img:
        (src / "alice" / "zz_copy.jpg").write_bytes(edited(img))
    with Image.open(src / "carol" / "03.png") as img:
        (src / "bob" / "zz_carol.jpg").write_bytes(edited(img))
    return src


def test_near_duplicates_are_dropped_and_listed(near_source: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    manifest = build_dataset(
        near_source, tmp_path / "ds", shards=2, per_class=5, size=SIZE, log=lines.append
    )
    assert manifest["near_dup_distance"] == neardup.DEFAULT_DISTANCE == 16
    near = manifest["near_duplicates"]
    assert [(n["file"], n["near"]) for n in near] == [
        ("alice/zz_copy.jpg", "alice/00.png"),
        ("carol/03.png", "bob/zz_carol.jpg"),
    ]
    assert all(0 <= n["distance"] <= 16 for n in near)
    gone = {file_sha256(near_source / n["file"]) for n in near}
    assert not gone & {r.source_sha256 for shard in read_all(tmp_path / "ds") for r in shard}
    summary = "\n".join(lines)
    assert "2 near-duplicates removed" in summary
    assert "1 of them across two people, check the labels: carol/03.png ~ bob/zz_carol.jpg" in (
        summary
    )
    report = inspect_dataset(tmp_path / "ds")
    assert report.near_dup_distance == 16
    assert "none within 16 of 256 bits" in format_report(report)


def test_near_dup_distance_zero_keeps_them(near_source: Path, tmp_path: Path) -> None:
    args = ["dataset", "build", str(near_source), "--shards", "2", "--per-class", "6",
            "--size", str(SIZE)]
    # carol keeps 5 distinct pictures with the check on, fewer than --per-class 6 ...
    assert main([*args[:3], str(tmp_path / "on"), *args[3:]]) == 0
    on = json.loads((tmp_path / "on" / records.MANIFEST_FILE).read_text())
    assert [d["name"] for d in on["dropped_people"]] == ["carol"]
    # ... and all 6 with it off: nothing is compared, nothing listed.
    assert main([*args[:3], str(tmp_path / "off"), *args[3:], "--near-dup-distance", "0"]) == 0
    off = json.loads((tmp_path / "off" / records.MANIFEST_FILE).read_text())
    assert off["near_dup_distance"] == 0 and off["near_duplicates"] == []
    assert off["people"] and not off["dropped_people"]
    # inspect follows the manifest: the builder was told not to look, so neither does it.
    assert inspect_dataset(tmp_path / "off").near_dup_distance == 0


def test_inspect_names_near_duplicates_in_two_shards(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    pictures = [photo_like(rng, (64, 64)) for _ in range(3)]
    jpegs = [encode_jpeg(p) for p in pictures]
    copy = edited(pictures[1])  # other bytes, same picture to the eye
    data = tmp_path / "ds"
    data.mkdir()
    records.write_shard(data / "data-00.tfrecords", [records.Record(0, jpegs[0]),
                                                     records.Record(1, jpegs[1])])
    records.write_shard(data / "data-01.tfrecords", [records.Record(0, jpegs[2]),
                                                     records.Record(1, copy)])
    records.write_labels(data, ["ann", "ben"])
    message = problems_of(data)
    assert "1 problem(s)" in message
    assert (
        "data-00.tfrecords record 1 ('ben') and data-01.tfrecords record 1 ('ben') are "
        "near-duplicates (perceptual hash distance"
    ) in message
    assert "share" not in message  # not byte-identical: only the near-duplicate check sees it
    assert inspect_dataset(data, near_dup_distance=0).total == 4  # 0 turns the check off


def test_near_pairs_match_a_brute_force_count(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, (300, 4), dtype=np.uint64) << np.uint64(1)
    hashes |= rng.integers(0, 2, (300, 4), dtype=np.uint64)  # all 64 bits random
    for _ in range(25):  # plant copies with 0..24 bits flipped
        i, j = rng.choice(300, 2, replace=False)
        bits = np.unpackbits(hashes[i].view(np.uint8))
        bits[rng.choice(256, rng.integers(0, 25), replace=False)] ^= 1
        hashes[j] = np.packbits(bits).view(np.uint64)
    monkeypatch.setattr(neardup, "_BLOCK_ELEMENTS", 1000)  # many small blocks
    found = [tuple(p) for p in neardup.near_pairs(hashes, 16).tolist()]
    brute = []
    for i in range(300):
        for j in range(i + 1, 300):
            words = zip(hashes[i], hashes[j], strict=True)
            distance = sum(int(a ^ b).bit_count() for a, b in words)
            if distance <= 16:
                brute.append((i, j, distance))
    assert found == sorted(brute, key=lambda p: (p[1], p[0]))
    assert len(found) >= 10


def test_first_of_each_group_keeps_the_earliest() -> None:
    def with_bits(*ranges: range) -> np.ndarray:
        bits = np.zeros(256, np.uint8)
        for r in ranges:
            bits[r] = 1
        return np.packbits(bits).view(np.uint64)

    # a~b and b~c (10 bits) but a, c 20 apart; d is 4 from c and 16 from b.
    a, b, c = with_bits(), with_bits(range(10)), with_bits(range(20))
    d = with_bits(range(20), range(100, 104))
    dropped = neardup.first_of_each_group(np.stack([a, b, c, d]), 16)
    assert dropped == {1: (0, 10), 3: (2, 4)}  # b goes; c stays (b is gone); d goes, nearest c


def test_near_means_at_most_the_distance_as_documented() -> None:
    # docs/data.md: a pair exactly 16 bits apart was more often a copy than two photos.
    base = np.zeros(256, np.uint8)
    flipped = [base.copy() for _ in range(3)]
    for hashed, start, bits in zip(flipped, (0, 50, 100), (15, 16, 17), strict=True):
        hashed[start:start + bits] = 1  # 15, 16 and 17 bits from base, >= 31 from each other
    hashes = np.stack([np.packbits(b).view(np.uint64) for b in (base, *flipped)])
    assert neardup.near_pairs(hashes, 16).tolist() == [[0, 1, 15], [0, 2, 16]]
    assert neardup.first_of_each_group(hashes, 16) == {1: (0, 15), 2: (0, 16)}


def test_near_pairs_of_10000_pictures_is_quick() -> None:
    hashes = np.random.default_rng(1).integers(0, 2**63, (10_000, 4), dtype=np.uint64)
    start = time.perf_counter()
    pairs = neardup.near_pairs(hashes, 16)
    seconds = time.perf_counter() - start
    print(f"near_pairs: 10,000 hashes (50M pairs) in {seconds:.2f} s")
    assert len(pairs) == 0 and seconds < 60


# ---------------------------------------------------------------- real data


def test_orl_builds_two_per_person_per_shard(shared_dataset, tmp_path: Path) -> None:
    orl = shared_dataset("orl")
    start = time.perf_counter()
    manifest = build_dataset(orl, tmp_path / "orl", per_class=10, shards=5, size=64, log=print)
    seconds = time.perf_counter() - start
    print(f"built ORL (400 images) in {seconds:.2f} s")
    assert len(manifest["people"]) == 40 and not manifest["dropped_people"]
    assert manifest["counts"] == [[2] * 40] * 5
    report = inspect_dataset(tmp_path / "orl")
    assert report.total == 400 and report.image_sizes == {"64x64": 400}
    assert seconds < 30
