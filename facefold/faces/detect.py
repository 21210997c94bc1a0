"""Find faces in a photo and cut them out aligned like the training crops.

Detection is MTCNN run in NumPy by :mod:`facefold.faces.mtcnn` (no TensorFlow), with
the weights the ``mtcnn`` package's wheel ships (MIT: nothing is downloaded), an
optional extra installed with ``pip install 'facefold[faces]'``. Alignment maps a
face's five landmarks onto the standard ArcFace 112×112 template with a
similarity transform (rotation, uniform scale, translation), the alignment of
InsightFace's training crops such as celeb21's.

Coordinates follow Pillow: ``(x, y)`` in pixels of the photo, x to the right,
y down. Left and right are the image's, as seen, not the person's.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
from PIL import Image

from facefold.faces.mtcnn import Mtcnn

INSTALL_HINT = "pip install 'facefold[faces]'"

# The InsightFace / ArcFace five-point template for 112×112 crops: left eye,
# right eye, nose tip, mouth left, mouth right, as (x, y) with pixel centres
# at whole numbers (OpenCV's convention, in which it was published).
ARCFACE_TEMPLATE_112: np.ndarray = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)
ARCFACE_TEMPLATE_112.setflags(write=False)

# Photos are shrunk to this longest side for detection only (crops are cut
# from the full photo): MTCNN's time grows with the pixel count, and a face under its
# 20-pixel minimum at this scale (62 pixels of a 4000-pixel photo) is too small
# for a good crop anyway.
_DETECT_MAX_SIDE = 1280
_MIN_WINDOW = 12  # MTCNN's first stage looks at 12x12 windows
_BUILD_LOCK = threading.Lock()


@dataclass(frozen=True)
class Face:
    """One face found in a photo."""

    box: tuple[float, float, float, float]  # x, y, width, height in pixels of the photo
    landmarks: np.ndarray  # (5, 2) float: left eye, right eye, nose, mouth left, mouth right
    score: float  # detector confidence in 0..1


def detect_faces(image: Image.Image, min_score: float = 0.9) -> list[Face]:
    """Every face in ``image`` with a detector confidence of at least ``min_score``.

    ``image`` is a Pillow image of any mode (converted to RGB; open files with
    :func:`facefold.data.images.load_rgb` so EXIF rotation is applied). Returns
    the faces largest box first; an empty list when there is none, and at once
    for a picture too small or too thin to hold MTCNN's 12-pixel window at the
    detection scale (see :func:`detection_size`). The first call in a process
    loads the detector's weights, later calls reuse them.

    Raises ``ValueError`` for ``min_score`` outside (0, 1] and
    ``ModuleNotFoundError`` saying what to install when the extra is missing.
    """
    if not 0 < min_score <= 1:
        raise ValueError(f"min_score must be in (0, 1], got {min_score}")
    scale, small = detection_size(image.size)
    # Decided from the size alone, before building the detector or resizing: a 3000x1
    # strip would shrink to 1280x0, which Pillow's resize cannot do.
    if min(small) < _MIN_WINDOW:  # smaller than MTCNN's 12-pixel window: nothing to find
        return []
    detector = _detector()
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if scale < 1:
        rgb = rgb.resize(small, Image.Resampling.BILINEAR, reducing_gap=2.0)
    # O-Net's own cut (default 0.8) at min_score: NMS then sees only faces we keep.
    with _one_blas_thread():
        rows = detector.detect(np.asarray(rgb), threshold_onet=min_score)
    faces = [_face(row, 1 / scale) for row in rows if row[5] >= min_score]
    return sorted(faces, key=lambda f: f.box[2] * f.box[3], reverse=True)


def detection_size(size: tuple[int, int]) -> tuple[float, tuple[int, int]]:
    """``(scale, (width, height))`` at which a photo of ``size`` is searched for faces.

    The photo is shrunk so its longer side is at most 1280 pixels (never
    enlarged); a side may round to 0 for a very long, thin picture, which
    :func:`detect_faces` then skips.
    """
    longest = max(size)
    scale = min(1.0, _DETECT_MAX_SIDE / longest) if longest > 0 else 1.0
    if scale == 1:
        return scale, size
    return scale, (round(size[0] * scale), round(size[1] * scale))


def _face(row: np.ndarray, scale: float) -> Face:
    """A :class:`Face` from one MTCNN numpy row, scaled up by ``scale`` to the photo's pixels.

    The row is ``[image, x1, y1, x2, y2, score, x of the 5 points, y of the 5 points]``,
    pixel centres on whole numbers (hence the half-pixel shifts around the scaling).
    """
    x1, y1, x2, y2 = ((float(v) + 0.5) * scale - 0.5 for v in row[1:5])
    points = np.stack([row[6:11], row[11:16]], axis=1).astype(np.float64)  # (5, 2)
    landmarks = (points + 0.5) * scale - 0.5
    landmarks.setflags(write=False)
    return Face(box=(x1, y1, x2 - x1, y2 - y1), landmarks=landmarks, score=float(row[5]))


def load_detector() -> None:
    """Load the detector now rather than on the first photo.

    Raises ``ModuleNotFoundError`` saying what to install when the extra is
    missing, so a command can fail before it has done any work.
    """
    _detector()


def _detector() -> Mtcnn:
    """The process's one MTCNN, loaded on first use (thread-safe; immutable, so shared)."""
    with _BUILD_LOCK:
        return _build_detector()


@functools.cache
def _build_detector() -> Mtcnn:
    try:
        return Mtcnn.load()
    except ModuleNotFoundError as err:  # mtcnn (its weights) or its joblib/lz4
        raise ModuleNotFoundError(
            f"face detection needs the optional MTCNN detector ({err}); {INSTALL_HINT}",
            name=err.name,
        ) from err


def _one_blas_thread() -> AbstractContextManager:
    """NumPy's matrix products on one thread while MTCNN runs (threadpoolctl, of the faces
    extra; without it, as they are).

    On the shared 2-core VM, OpenBLAS's own threads doubled the time of a 1280x960 photo and
    tripled that of a crop's face check whenever other work kept the cores busy
    (docs/performance.md, "Start-up of the deploy commands"). The limit is process-wide: two
    detections at once may lift it early for each other, which changes only their speed.
    """
    limit = _blas_limit()
    return limit() if limit is not None else contextlib.nullcontext()


@functools.cache
def _blas_limit() -> Callable[[], AbstractContextManager] | None:
    try:
        from threadpoolctl import ThreadpoolController
    except ModuleNotFoundError:
        return None
    controller = ThreadpoolController()  # finds the BLAS libraries once (a few ms)
    return functools.partial(controller.limit, limits=1, user_api="blas")


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2×3 rotation + uniform scale + translation that takes ``src`` closest to ``dst``.

    ``src`` and ``dst`` are ``(N, 2)`` points, N ≥ 2. Least squares over the
    four unknowns ``a, b, tx, ty`` of ``x' = a·x − b·y + tx, y' = b·x + a·y + ty``:
    the same answer as Umeyama's method, and never a mirror image.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    x, y = src[:, 0], src[:, 1]
    ones, zeros = np.ones_like(x), np.zeros_like(x)
    system = np.concatenate(
        [np.stack([x, -y, ones, zeros], axis=1), np.stack([y, x, zeros, ones], axis=1)]
    )  # (2N, 4): the x' equations, then the y' equations
    target = np.concatenate([dst[:, 0], dst[:, 1]])
    (a, b, tx, ty), *_ = np.linalg.lstsq(system, target, rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def align_face(image: Image.Image, landmarks: np.ndarray, size: int = 112) -> Image.Image:
    """Cut the face with these five ``landmarks`` out of ``image`` as a ``size``×``size`` RGB crop.

    ``landmarks`` is ``(5, 2)`` in the order of :class:`Face` (e.g.
    ``Face.landmarks``). They are mapped onto :data:`ARCFACE_TEMPLATE_112`
    scaled to ``size`` by the best similarity transform, and the photo is
    warped with bicubic resampling; parts outside the photo come out black.
    Raises ``ValueError`` naming the problem for landmarks of the wrong shape,
    not finite, or all within a pixel of each other, or a ``size`` under 16.
    """
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    points = _check_landmarks(landmarks)
    # Pillow samples output pixel (i, j) at (i + 0.5, j + 0.5); the template and
    # the detector put pixel centres on whole numbers. Shift both by half a pixel.
    template = ARCFACE_TEMPLATE_112 * (size / 112) + 0.5
    region, points = _face_region(image, points + 0.5, template, size)
    matrix = np.vstack([similarity_transform(points, template), [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(matrix)[:2]  # Pillow wants output -> input
    return region.transform(
        (size, size),
        Image.Transform.AFFINE,
        tuple(inverse.ravel()),
        resample=Image.Resampling.BICUBIC,
        fillcolor=(0, 0, 0),
    )


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """``landmarks`` as a (5, 2) float array, or ``ValueError`` saying what is wrong."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2):
        raise ValueError(f"landmarks must have shape (5, 2), got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError(f"landmarks must be finite numbers, got {points.tolist()}")
    if np.ptp(points, axis=0).max() < 1:
        raise ValueError(f"landmarks all lie within one pixel: {points.tolist()}")
    return points


def _face_region(
    image: Image.Image, points: np.ndarray, template: np.ndarray, size: int
) -> tuple[Image.Image, np.ndarray]:
    """The part of ``image`` the crop will show, pre-shrunk; and ``points`` moved into it.

    ``Image.transform`` does not low-pass filter, so a face much larger than
    the crop would come out aliased. The region under the crop is cut out
    first (cheap even for a 12-megapixel photo) and shrunk by a whole factor
    with a box filter, so the warp itself shrinks by less than 2×. Points are in
    Pillow's continuous coordinates (pixel centres at +0.5), in which both
    steps are exact.
    """
    matrix = similarity_transform(points, template)
    scale = math.hypot(matrix[0, 0], matrix[1, 0])  # crop pixels per photo pixel
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64)
    footprint = corners @ inverse.T  # (4, 2): the crop's corners in the photo
    margin = 4 / scale  # room for the bicubic kernel beyond the edges
    left, top = np.floor(footprint.min(axis=0) - margin).astype(int)
    right, bottom = np.ceil(footprint.max(axis=0) + margin).astype(int)
    # crop() pads outside the photo with black, like the transform's fillcolor.
    region = image.crop((left, top, right, bottom))
    region = region if region.mode == "RGB" else region.convert("RGB")
    points = points - (left, top)
    factor = math.floor(1 / scale)
    if factor >= 2:
        region = region.reduce(factor)
        points = points / factor
    return region, points
