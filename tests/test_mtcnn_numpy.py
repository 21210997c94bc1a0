"""MTCNN in NumPy (facefold.faces.mtcnn): its pieces against hand computations, and the
whole cascade against the ``mtcnn`` package on TensorFlow (the reference it follows).

The reference comparison needs the ``faces`` extra and TensorFlow (skipped otherwise); its
real pictures come from ../shared/datasets (celeb21 crops, ORL photos; skipped without them),
beside synthetic faces and pictures that are no face."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_dataset_path
from PIL import Image

from facefold.data.synthetic import render_face, sample_identity
from facefold.faces import mtcnn
from facefold.faces.plausible import with_margin

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ pieces, by hand


def test_conv_and_prelu_match_a_loop() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    bias = rng.normal(size=4).astype(np.float32)
    alpha = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    expected = np.zeros((2, 3, 4, 4))
    for n in range(2):
        for i in range(3):
            for j in range(4):
                for o in range(4):
                    value = bias[o] + sum(
                        float(x[n, i + dy, j + dx, c]) * float(kernel[dy, dx, c, o])
                        for dy in range(3) for dx in range(3) for c in range(3)
                    )
                    expected[n, i, j, o] = value if value > 0 else alpha[o] * value
    got = mtcnn.prelu(mtcnn.conv2d(x, kernel, bias), alpha.reshape(1, 1, 4))
    assert got.shape == (2, 3, 4, 4)
    assert np.allclose(got, expected, atol=1e-5)
    assert (expected < 0).any() and (expected > 0).any()  # both sides of the PReLU were used


def test_max_pool_same_pads_the_odd_pixel_at_the_end() -> None:
    x = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1) - 20  # all negative: padding shows
    same = mtcnn.max_pool(x, 2, 2, "same")[0, :, :, 0]
    assert same.tolist() == [[4 - 20, 5 - 20], [7 - 20, 8 - 20]]
    valid = mtcnn.max_pool(np.arange(25, dtype=np.float32).reshape(1, 5, 5, 1), 3, 2, "valid")
    assert valid[0, :, :, 0].tolist() == [[12, 14], [22, 24]]


def test_nms_drops_a_box_overlapped_by_a_dropped_one() -> None:
    """Three boxes in a row: A overlaps B (IoU 40/160 = 0.25), B overlaps C (0.25), A and C
    do not touch. Greedy NMS at 0.2 would keep A and C; the package's rule drops C too,
    since B (itself dropped) scores higher and overlaps it."""
    a = [0, 0, 0, 10, 10, 0.9]
    b = [0, 6, 0, 16, 10, 0.8]
    c = [0, 12, 0, 22, 10, 0.7]
    rows = np.array([c, a, b], np.float64)  # unsorted: nms sorts by score first
    assert mtcnn.nms(rows, 0.2).tolist() == [a]
    assert mtcnn.nms(rows, 0.3).tolist() == [a, b, c]
    # "min" divides by the smaller area: a half-width C inside B's span, 40 / 50 = 0.8
    # (by union 40 / 110 = 0.36).
    small = [0, 12, 0, 17, 10, 0.7]
    rows = np.array([b, small], np.float64)
    assert mtcnn.nms(rows, 0.5, mode="union").tolist() == [b, small]
    assert mtcnn.nms(rows, 0.5, mode="min").tolist() == [b]
    assert np.allclose(mtcnn.iou(rows[:, 1:5])[0, 1], 40 / 110)


def test_square_and_regress_by_hand() -> None:
    rows = np.array([[0, 10, 20, 30, 60, 0.9]])  # 20 wide, 40 high, centre (20, 40)
    assert mtcnn.square(rows).tolist() == [[0, 0, 20, 40, 60, 0.9]]
    moved = mtcnn.regress(rows, np.array([[0.1, -0.1, 0.0, 0.5]], np.float32))
    # sides + 1: 21 wide, 41 high
    assert np.allclose(moved[0, 1:5], [10 + 2.1, 20 - 4.1, 30, 60 + 20.5])


def test_pyramid_scales() -> None:
    # 168 pixels: round(log(168/12) / log(1/0.709) - 1) = round(6.67) = 7 levels from 0.6.
    assert np.allclose(mtcnn.pyramid_scales(200, 168), 0.6 * 0.709 ** np.arange(7))
    assert len(mtcnn.pyramid_scales(19, 100)) == 0  # too small for any level


def test_area_resize_by_hand() -> None:
    column = np.array([1.0, 2.0, 4.0])[:, None, None] * np.ones((3, 2, 1))
    # 3 rows -> 2: each output row covers 1.5 input rows.
    got = mtcnn.area_resize(column, 2, 2)[:, 0, 0]
    assert np.allclose(got, [(1 + 0.5 * 2) / 1.5, (0.5 * 2 + 4) / 1.5])
    blocks = np.arange(16, dtype=np.float64).reshape(4, 4, 1)
    assert np.allclose(mtcnn.area_resize(blocks, 2, 2)[:, :, 0], [[2.5, 4.5], [10.5, 12.5]])


def test_crop_and_resize_by_hand() -> None:
    image = np.repeat(np.arange(5, dtype=np.float32)[:, None, None], 5, axis=1) * np.ones(3)
    # The whole image (x2 = y2 = 5, divided by 5, times 4 again) sampled at 5 points: itself.
    whole = mtcnn.crop_and_resize(image.astype(np.float32), np.array([[0.0, 0, 5, 5]]), 5)
    assert np.allclose(whole[0], image)
    # The top half at 3 points: rows 0, 1, 2 of the image, at 0, 1 and 2 (x2=5, y2=2.5).
    half = mtcnn.crop_and_resize(image.astype(np.float32), np.array([[0.0, 0, 5, 2.5]]), 3)
    assert np.allclose(half[0, :, 0, 0], [0, 1, 2])
    # Entirely outside the image: black.
    outside = mtcnn.crop_and_resize(image.astype(np.float32), np.array([[10.0, 10, 20, 20]]), 4)
    assert not outside.any()


def test_loads_and_detects_without_tensorflow() -> None:
    pytest.importorskip("joblib")
    try:
        mtcnn.weights_folder()
    except ModuleNotFoundError:
        pytest.skip("the faces extra (mtcnn's weights) is not installed")
    code = (
        "import sys, numpy as np; from facefold.faces.mtcnn import Mtcnn; "
        "rows = Mtcnn.load().detect(np.zeros((60, 60, 3), np.uint8)); "
        "print(rows.shape, 'tensorflow' in sys.modules, 'mtcnn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["(0,", "16)", "False", "False"]


@pytest.mark.parametrize("height", [203, 204, 40])
def test_pnet_in_bands_is_pnet_whole(height: int) -> None:
    """Bands of P-Net's output rows give the very numbers of one call: odd and even heights
    (the last band's 'same' pooling pads an odd one), and a level of fewer rows than a band."""
    try:
        detector = mtcnn.Mtcnn.load()
    except ModuleNotFoundError:
        pytest.skip("the faces extra (mtcnn's weights) is not installed")
    level = np.random.default_rng(height).uniform(-1, 1, (1, height, 57, 3)).astype(np.float32)
    whole = detector.pnet(level)
    banded = detector.pnet_in_bands(level, band=8)
    for a, b in zip(whole, banded, strict=True):
        assert a.shape == b.shape
        assert np.array_equal(a, b)


def test_detect_faces_from_threads_at_once_answers_as_alone() -> None:
    """detect.detect_faces shares one detector between threads (the server's workers)."""
    from concurrent.futures import ThreadPoolExecutor

    from facefold.faces import detect

    try:
        detect.load_detector()
    except ModuleNotFoundError:
        pytest.skip("the faces extra (mtcnn's weights) is not installed")
    rng = np.random.default_rng(5)
    pictures = [with_margin(Image.fromarray(render_face(sample_identity(rng), rng)))
                for _ in range(4)]
    alone = [detect.detect_faces(p, min_score=0.01) for p in pictures]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda p: detect.detect_faces(p, min_score=0.01), pictures * 3))
    assert sum(len(faces) for faces in alone) >= 2  # faces were found, so there was work
    # Within rounding, not bit for bit: a detection at the same moment may lift another's
    # one-BLAS-thread limit (detect._one_blas_thread), and more threads may sum differently.
    for faces, expected in zip(together, alone * 3, strict=True):
        assert len(faces) == len(expected)
        assert np.allclose([f.box for f in faces], [f.box for f in expected], atol=1e-3)
        assert np.allclose([f.score for f in faces], [f.score for f in expected], atol=1e-5)


# ------------------------------------------------------------------ against the package


def _textured(size: tuple[int, int], seed: int) -> Image.Image:
    """A smooth random background of ``size`` (width, height)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 220, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)


def _pictures() -> dict[str, np.ndarray]:
    """Real and synthetic faces, a photo of several, and pictures that are no face."""
    pictures: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(0)
    for k in range(3):
        face = render_face(sample_identity(rng), rng)
        pictures[f"synthetic {k}"] = face
        pictures[f"synthetic {k}, margin"] = np.asarray(with_margin(Image.fromarray(face)))
    pictures["noise"] = rng.integers(0, 256, (168, 168, 3), dtype=np.uint8)
    pictures["flat"] = np.full((168, 168, 3), 128, np.uint8)
    ramp = np.linspace(0, 255, 168).astype(np.uint8)
    pictures["gradient"] = np.repeat(np.tile(ramp, (168, 1))[:, :, None], 3, axis=2)
    try:
        celeb = shared_dataset_path("celeb21")
        orl = shared_dataset_path("orl")
    except pytest.skip.Exception:
        return pictures
    crops = [sorted((celeb / person).iterdir())[0] for person in ("Barack_Obama", "Drew_Barrymore")]
    for path in crops:
        image = Image.open(path).convert("RGB")
        pictures[path.name] = np.asarray(image)
        pictures[f"{path.name}, margin"] = np.asarray(with_margin(image))
    for name in ("s1/1.pgm", "s7/3.pgm"):
        pictures[name] = np.asarray(Image.open(orl / name).convert("RGB"))
    photo = _textured((480, 360), seed=1)
    for path, (x, y, side) in zip(crops, [(30, 40, 200), (280, 150, 120)], strict=True):
        photo.paste(Image.open(path).convert("RGB").resize((side, side)), (x, y))
    pictures["photo of two"] = np.asarray(photo)
    return pictures


@pytest.fixture(scope="module")
def reference():
    pytest.importorskip("tensorflow")
    package = pytest.importorskip("mtcnn")
    return package.MTCNN(stages="face_and_landmarks_detection", device="CPU:0")


@pytest.fixture(scope="module")
def ours() -> mtcnn.Mtcnn:
    return mtcnn.Mtcnn.load()


@pytest.mark.parametrize("threshold", [0.8, 0.01])
def test_same_faces_as_the_package(reference, ours: mtcnn.Mtcnn, threshold: float) -> None:
    found = 0
    pictures = _pictures()
    for name, pixels in pictures.items():
        expected = np.asarray(
            reference.detect_faces(pixels, box_format="xyxy", output_type="numpy",
                                   threshold_onet=threshold)
        ).reshape(-1, 16)
        got = ours.detect(pixels, threshold_onet=threshold)
        assert got.shape == expected.shape, name
        # Same order? Both end in the same NMS; match each face to its nearest to be safe.
        for row in expected:
            nearest = got[np.abs(got[:, 1:5] - row[1:5]).max(axis=1).argmin()]
            assert np.abs(nearest[1:5] - row[1:5]).max() < 0.5, name  # box, pixels
            assert np.abs(nearest[6:] - row[6:]).max() < 0.5, name  # landmarks
            assert abs(nearest[5] - row[5]) < 1e-3, name  # score
        found += len(got)
        if name in ("noise", "flat", "gradient"):
            assert len(got) == 0, name
    # Faces were found, so boxes, landmarks and scores were compared: 4 of the 6 synthetic
    # pictures hold one at O-Net's 0.8 (all 6 at 0.01), and the real ones more.
    real = len(pictures) > 9  # the 6 synthetic pictures and 3 non-faces, or real ones too
    assert found >= (4 if threshold == 0.8 else 6) + (6 if real else 0)
