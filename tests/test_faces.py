"""Face detection, alignment and `facefold faces crop`, checked with numbers.

Alignment tests run everywhere (synthetic pictures). Detection tests need the
``faces`` extra (skipped without mtcnn) and real faces from ../shared/datasets/
celeb21 (skipped without it): aligned 112×112 crops are pasted, scaled and
rotated, into larger synthetic photos, and must come back out.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_dataset_path
from PIL import Image, ImageDraw

from facefold.cli import main
from facefold.faces import detect
from facefold.faces.crop import crop_faces
from facefold.faces.detect import (
    ARCFACE_TEMPLATE_112,
    Face,
    align_face,
    detect_faces,
    similarity_transform,
)

# Different people, so the pasted faces of one photo are not copies of each other.
CELEBS = ["Barack_Obama", "Tom_Hanks", "Halle_Berry", "Keanu_Reeves", "Tina_Fey", "Hugh_Laurie"]


def needs_mtcnn() -> None:
    """Skip the calling test when the ``faces`` extra is not installed."""
    pytest.importorskip("mtcnn", reason="the faces extra is not installed (pip install "
                        "'facefold[faces]')")


def celeb_face(index: int) -> Image.Image:
    """The first crop of ``CELEBS[index]`` (112×112 RGB), skipping the test without celeb21."""
    folder = shared_dataset_path("celeb21") / CELEBS[index]
    with Image.open(sorted(folder.glob("*.jpg"))[0]) as img:
        return img.convert("RGB")


def background(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A face-free synthetic photo: smooth colour fields, a few shapes, a little grain."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 220, (6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = rng.integers(0, size[0]), rng.integers(0, size[1])
        w, h = rng.integers(20, 120, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.rectangle((x, y, x + w, y + h), fill=colour)
    grain = rng.normal(0, 4, (size[1], size[0], 3))
    return Image.fromarray(np.clip(np.asarray(img) + grain, 0, 255).astype(np.uint8))


def placement(center: tuple[float, float], scale: float, angle_deg: float) -> np.ndarray:
    """2×3 matrix taking crop coordinates to photo coordinates: scale, rotate about the
    crop's centre, then put that centre at ``center`` (Pillow's continuous coordinates)."""
    a = math.radians(angle_deg)
    rotation = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return np.hstack([rotation, (np.asarray(center) - rotation @ [56.0, 56.0])[:, None]])


def paste(photo: Image.Image, face: Image.Image, matrix: np.ndarray) -> np.ndarray:
    """Draw ``face`` into ``photo`` (in place) through ``matrix``; returns where its
    template landmarks land in the photo, (5, 2) with pixel centres on whole numbers."""
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    warped = face.convert("RGBA").transform(
        photo.size, Image.Transform.AFFINE, tuple(inverse.ravel()),
        resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0, 0),
    )
    photo.paste(warped, (0, 0), warped)
    points = ARCFACE_TEMPLATE_112 + 0.5
    return points @ matrix[:, :2].T + matrix[:, 2] - 0.5


def difference(a: Image.Image, b: Image.Image, border: int = 8) -> tuple[float, float]:
    """(mean absolute difference in 0..255, correlation) of two equal-size crops, ignoring a
    ``border`` where a pasted face meets its background."""
    x = np.asarray(a, np.float64)[border:-border, border:-border]
    y = np.asarray(b, np.float64)[border:-border, border:-border]
    return float(np.abs(x - y).mean()), float(np.corrcoef(x.ravel(), y.ravel())[0, 1])


def smooth_face_stand_in(seed: int = 3) -> Image.Image:
    """A smooth 112×112 RGB picture with detail at every scale (no detector needed)."""
    rng = np.random.default_rng(seed)
    layers = [
        np.asarray(
            Image.fromarray(rng.integers(0, 256, (n, n, 3), dtype=np.uint8)).resize(
                (112, 112), Image.Resampling.BICUBIC
            ),
            np.float64,
        )
        for n in (4, 12, 28)
    ]
    return Image.fromarray(np.clip(sum(layers) / 3, 0, 255).astype(np.uint8))


# ------------------------------------------------------------- alignment (no detector)


def test_template_is_the_arcface_one_and_read_only() -> None:
    assert ARCFACE_TEMPLATE_112.shape == (5, 2)
    assert ARCFACE_TEMPLATE_112[0].tolist() == [38.2946, 51.6963]
    assert ARCFACE_TEMPLATE_112[4].tolist() == [70.7299, 92.2041]
    with pytest.raises(ValueError):
        ARCFACE_TEMPLATE_112[0, 0] = 0


def test_similarity_transform_recovers_a_known_one() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 500, (5, 2))
    truth = placement((300, 200), 2.7, -17)
    assert np.allclose(similarity_transform(src, src @ truth[:, :2].T + truth[:, 2]), truth)
    # A mirror image cannot be matched by rotation and scale: the fit stays a rotation.
    mirrored = src * [-1, 1]
    matrix = similarity_transform(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


@pytest.mark.parametrize(("scale", "angle"), [(0.8, 0.0), (2.5, 12.0), (3.6, -25.0)])
def test_align_face_undoes_a_known_placement(scale: float, angle: float) -> None:
    face = smooth_face_stand_in()
    photo = background((640, 480))
    landmarks = paste(photo, face, placement((330, 250), scale, angle))
    crop = align_face(photo, landmarks)
    mad, corr = difference(crop, face)
    print(f"scale {scale} angle {angle}: mean abs difference {mad:.2f}/255, correlation {corr:.4f}")
    assert crop.size == (112, 112) and crop.mode == "RGB"
    assert mad < 6 and corr > 0.97
    # The size parameter rescales the template: a 64 crop is the 112 crop, smaller.
    small = align_face(photo, landmarks, size=64)
    mad_small, _ = difference(small, face.resize((64, 64), Image.Resampling.LANCZOS), border=5)
    assert small.size == (64, 64) and mad_small < 8


def test_align_face_names_bad_input() -> None:
    photo = Image.new("RGB", (100, 100))
    with pytest.raises(ValueError, match=r"shape \(5, 2\), got \(4, 2\)"):
        align_face(photo, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="finite"):
        align_face(photo, np.full((5, 2), np.nan))
    with pytest.raises(ValueError, match="within one pixel"):
        align_face(photo, np.full((5, 2), 50.0))
    with pytest.raises(ValueError, match="size must be at least 16"):
        align_face(photo, ARCFACE_TEMPLATE_112, size=8)


def test_missing_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "mtcnn", None)  # makes `import mtcnn` fail
    # A fresh cache, so an already built detector does not hide the missing package.
    fresh = functools.cache(detect._build_detector.__wrapped__)
    monkeypatch.setattr(detect, "_build_detector", fresh)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'facefold\[faces\]'"):
        detect_faces(Image.new("RGB", (64, 64)))
    (tmp_path / "photos").mkdir()
    assert main(["faces", "crop", str(tmp_path / "photos"), str(tmp_path / "out")]) == 1
    assert "pip install 'facefold[faces]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # failed before writing anything


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 8}, "size must be at least 16"),
        ({"multiple": "first"}, "multiple must be one of largest, all, got 'first'"),
        ({"min_score": 0.0}, r"min_score must be in \(0, 1\]"),
    ],
)
def test_crop_faces_names_bad_parameters(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        crop_faces(tmp_path, tmp_path / "out", log=lambda _: None, **kwargs)
    with pytest.raises(FileNotFoundError, match="missing"):
        crop_faces(tmp_path / "missing", tmp_path / "out", log=lambda _: None)


# ------------------------------------------------------------- detection (mtcnn + celeb21)


def center_of(face: Face) -> np.ndarray:
    x, y, w, h = face.box
    return np.array([x + w / 2, y + h / 2])


@pytest.mark.parametrize("count", [2, 3])
def test_detects_every_pasted_face(count: int) -> None:
    needs_mtcnn()
    photo = background((640, 480), seed=count)
    spots = [((150, 150), 2.0, 5.0), ((460, 260), 1.6, -8.0), ((250, 370), 1.2, 0.0)][:count]
    eyes = []
    for k, (center, scale, angle) in enumerate(spots):
        eyes.append(paste(photo, celeb_face(k), placement(center, scale, angle))[:2].mean(axis=0))
    faces = detect_faces(photo)
    assert len(faces) == count
    # Largest first, and that is the order the faces were pasted in (scales 2.0 > 1.6 > 1.2).
    for face, (center, scale, _), eye in zip(faces, spots, eyes, strict=True):
        assert face.score >= 0.9
        side = 112 * scale
        assert np.linalg.norm(center_of(face) - np.asarray(center)) < 0.15 * side
        assert 0.5 * side < face.box[2] < 1.2 * side
        assert np.linalg.norm(face.landmarks[:2].mean(axis=0) - eye) < 0.06 * side
        assert face.landmarks[0, 0] < face.landmarks[1, 0]  # left eye = image left
    assert detect_faces(background((640, 480), seed=9)) == []  # no face, no false alarm


def test_large_photos_are_searched_smaller_but_answered_in_full_size() -> None:
    needs_mtcnn()
    photo = background((640, 480), seed=7)
    paste(photo, celeb_face(2), placement((300, 220), 2.0, 0.0))
    searched = photo.resize((1280, 960), Image.Resampling.BICUBIC)  # the size searched at
    big = photo.resize((2560, 1920), Image.Resampling.BICUBIC)  # shrunk to 1280x960 to search
    (face,) = detect_faces(big)
    (reference,) = detect_faces(searched)
    assert np.linalg.norm(center_of(face) / 4 - [300, 220]) < 0.15 * 224
    # Same search, answered in the big photo's pixels: exactly twice the reference, give or
    # take the two resamplings (pixel centres at +0.5 on both sides of the scaling).
    shift = np.linalg.norm((face.landmarks + 0.5) / 2 - 0.5 - reference.landmarks, axis=1)
    assert shift.max() < 1
    assert np.allclose(np.asarray(face.box) / 2, reference.box, atol=2)


def test_detect_then_align_gives_the_original_crop_back() -> None:
    """The crop cut from the photo matches the pasted one up to the detector's landmarks.

    Measured over 63 celeb21 faces pasted at ×2–3, ±10°: mean absolute
    difference 13/255 (5th–95th percentile 6–22, worst 39), correlation 0.92
    (worst 0.70); MTCNN's landmarks sit 3.2 crop pixels (worst 7) from the
    ones the crops were aligned with, and aligning with those exact landmarks
    gives 1.2/255. The thresholds below leave that much room.
    """
    needs_mtcnn()
    mad, corr, error, seconds = [], [], [], []
    spots = [(2.0, 0.0), (2.5, 8.0), (3.0, -6.0), (2.2, 12.0), (2.7, -10.0), (2.4, 4.0)]
    for k, (scale, angle) in enumerate(spots):
        face = celeb_face(k)
        photo = background((640, 480), seed=10 + k)
        truth = paste(photo, face, placement((320, 240), scale, angle))
        start = time.perf_counter()
        faces = detect_faces(photo)
        seconds.append(time.perf_counter() - start)
        assert len(faces) == 1
        error.append(np.linalg.norm(faces[0].landmarks - truth, axis=1).mean() / scale)
        face_mad, face_corr = difference(align_face(photo, faces[0].landmarks), face)
        mad.append(face_mad)
        corr.append(face_corr)
    print(f"round trip: mean abs difference {np.round(mad, 1)} /255, correlation "
          f"{np.round(corr, 3)}, landmark error {np.round(error, 1)} crop px; "
          f"detect on 640x480: {np.round(seconds, 2)} s")
    assert max(error) < 8 and np.mean(error) < 5
    assert max(mad) < 30 and np.mean(mad) < 18
    assert min(corr) > 0.75 and np.mean(corr) > 0.85


# ------------------------------------------------------------- `facefold faces crop`


def write_photo(path: Path, faces: list[tuple[int, tuple[int, int], float]], seed: int) -> None:
    """A 480×360 JPEG with celeb21 face ``index`` pasted at each ``(index, center, scale)``."""
    photo = background((480, 360), seed=seed)
    for index, center, scale in faces:
        paste(photo, celeb_face(index), placement(center, scale, 0.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    photo.save(path, quality=92)


@pytest.fixture(scope="module")
def photo_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alice: one face, two faces; bob: one face twice under one stem, none, a text file,
    one face one folder down; a hidden folder."""
    needs_mtcnn()
    root = tmp_path_factory.mktemp("photos")
    write_photo(root / "alice" / "solo.jpg", [(0, (240, 180), 2.0)], seed=1)
    write_photo(root / "alice" / "pair.jpg", [(1, (130, 170), 1.4), (0, (350, 190), 1.9)], seed=2)
    write_photo(root / "bob" / "solo.jpg", [(3, (240, 180), 2.2)], seed=3)
    write_photo(root / "bob" / "solo.png", [(3, (220, 170), 1.8)], seed=6)  # same stem
    background((480, 360), seed=4).save(root / "bob" / "empty.jpg")
    (root / "bob" / "notes.jpg").write_text("not a photo")
    write_photo(root / "bob" / "2019" / "beach.png", [(3, (200, 160), 1.7)], seed=5)
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.jpg").write_text("ignored")
    return root


def test_crop_command_keeps_the_layout_and_reports(
    photo_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "crops"
    assert main(["faces", "crop", str(photo_tree), str(out)]) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == [
        "alice/pair.png", "alice/solo.png", "bob/2019/beach.png", "bob/solo-2.png", "bob/solo.png"
    ]
    for name in written:
        with Image.open(out / name) as img:
            assert (img.size, img.mode) == ((112, 112), "RGB")
    report = json.loads((out / "crop_report.json").read_text())
    assert report["files"] == 7 and report["crops_written"] == 5
    solo = {c["file"]: c["written"] for c in report["crops"] if "solo" in c["file"]}
    assert solo["bob/solo.jpg"] == ["bob/solo.png"] and solo["bob/solo.png"] == ["bob/solo-2.png"]
    assert report["no_face"] == ["bob/empty.jpg"]
    assert [u["file"] for u in report["unreadable"]] == ["bob/notes.jpg"]
    assert "not an image" in report["unreadable"][0]["reason"]
    assert report["multiple_faces"] == [
        {"file": "alice/pair.jpg", "faces": 2, "kept": "largest", "written": ["alice/pair.png"]}
    ]
    # The largest face of pair.jpg is Obama's (scale 1.9, centred at x=350).
    pair = next(c for c in report["crops"] if c["file"] == "alice/pair.jpg")
    x, _, w, _ = pair["faces"][0]["box"]
    assert abs(x + w / 2 - 350) < 30
    log = capsys.readouterr().out
    assert "1 photos without a face" in log and "bob/empty.jpg" in log
    assert "1 unreadable files skipped: bob/notes.jpg" in log
    assert "alice/pair.jpg (2)" in log


def test_crop_command_all_faces_and_size(photo_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "crops"
    code = main(["faces", "crop", str(photo_tree), str(out), "--multiple", "all", "--size", "64"])
    assert code == 0
    assert sorted(p.name for p in (out / "alice").glob("*.png")) == [
        "pair_1.png", "pair_2.png", "solo.png"
    ]
    with Image.open(out / "alice" / "pair_2.png") as img:
        assert img.size == (64, 64)
    report = json.loads((out / "crop_report.json").read_text())
    assert report["multiple_faces"][0]["written"] == ["alice/pair_1.png", "alice/pair_2.png"]
    assert report["crops_written"] == 6
