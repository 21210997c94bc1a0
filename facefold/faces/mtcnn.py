"""MTCNN face detection in NumPy: the three networks and the cascade of the ``mtcnn`` package.

The ``mtcnn`` 1.0.0 package (MIT) runs its networks on TensorFlow, and importing it starts
TensorFlow, most of a cold ``facefold verify`` (docs/performance.md, "Start-up of the deploy
commands"). Its networks are small, so here they run in NumPy, from the weight files its wheel
ships (``mtcnn/assets/weights/{pnet,rnet,onet}.lz4``, found without importing the package).

The cascade follows the package's own arithmetic step by step, so that both find the same
faces (``tests/test_mtcnn_numpy.py`` compares them):

1. P-Net on an image pyramid (scales ``0.6 · 0.709**k``, TensorFlow's "area" resize, sizes
   truncated), windows with a face score above 0.6, NMS per scale (IoU 0.5) then across scales
   (0.7), boxes made square;
2. R-Net on each box cut out and resized to 24×24 (TensorFlow's ``crop_and_resize``, bilinear,
   black outside the image), box regression, score above 0.7, NMS (0.7), square again;
3. O-Net on 48×48 cuts: box regression, five landmarks, score above ``threshold_onet``
   (0.8 by default), NMS by the smaller box's area (0.7); boxes clipped to the image.

The package's NMS is not the greedy one: a box is dropped when any box of higher score overlaps
it beyond the threshold, even a box that was itself dropped. Boxes are never rounded.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The package's defaults (mtcnn/stages/*.py).
MIN_FACE_SIZE = 20  # pixels: the smallest face the pyramid looks for
SCALE_FACTOR = 0.709  # between two levels of the pyramid
THRESHOLD_PNET, THRESHOLD_RNET, THRESHOLD_ONET = 0.6, 0.7, 0.8
NMS_PNET_SCALE, NMS_PNET_ALL, NMS_RNET, NMS_ONET = 0.5, 0.7, 0.7, 0.7
_WINDOW = 12  # P-Net's input window, pixels
_STRIDE = 2  # P-Net's output cells are 2 pixels apart (one 2x2 pooling)
PNET_BAND = 32  # P-Net's output rows computed at once (see Mtcnn.pnet_in_bands)
COLUMNS = 16  # a detection row: image, x1, y1, x2, y2, score, 5 landmark x, 5 landmark y

# A network is data: its layers in order, each taking its arrays from the weight list in the
# order the package's Keras models list them. ("conv",) takes kernel (kh, kw, in, out) and bias;
# ("prelu",) one alpha per channel; ("pool", size, stride, padding) none; ("flatten",) none
# (the package permutes height and width before flattening); ("dense",) weights and bias.
Layer = tuple
PNET_LAYERS: tuple[Layer, ...] = (
    ("conv",), ("prelu",), ("pool", 2, 2, "same"),
    ("conv",), ("prelu",), ("conv",), ("prelu",),
)  # then two 1x1 convolutions: 4 box offsets, 2 class scores (softmax)
RNET_LAYERS: tuple[Layer, ...] = (
    ("conv",), ("prelu",), ("pool", 3, 2, "same"),
    ("conv",), ("prelu",), ("pool", 3, 2, "valid"),
    ("conv",), ("prelu",), ("flatten",), ("dense",), ("prelu",),
)  # then dense heads: 4 box offsets, 2 class scores
ONET_LAYERS: tuple[Layer, ...] = (
    ("conv",), ("prelu",), ("pool", 3, 2, "same"),
    ("conv",), ("prelu",), ("pool", 3, 2, "valid"),
    ("conv",), ("prelu",), ("pool", 2, 2, "same"),
    ("conv",), ("prelu",), ("flatten",), ("dense",), ("prelu",),
)  # then dense heads: 4 box offsets, 10 landmark coordinates, 2 class scores
_TAKES = {"conv": 2, "prelu": 1, "dense": 2, "pool": 0, "flatten": 0}


@dataclass(frozen=True)
class Network:
    """One of MTCNN's networks: its layers, their weights, and its output heads (float32)."""

    layers: tuple[Layer, ...]
    weights: tuple[np.ndarray, ...]  # the trunk's arrays, in the order the layers take them
    heads: tuple[tuple[np.ndarray, np.ndarray], ...]  # (weights (in, out), bias) per output

    @classmethod
    def from_arrays(
        cls, layers: tuple[Layer, ...], arrays: Sequence[np.ndarray], heads: int
    ) -> Network:
        """The network from the package's weight list (trunk first, then ``heads`` pairs)."""
        arrays = [np.asarray(a, np.float32) for a in arrays]
        used = sum(_TAKES[layer[0]] for layer in layers)
        if len(arrays) != used + 2 * heads:
            raise ValueError(f"expected {used + 2 * heads} weight arrays, got {len(arrays)}")
        # A 1x1 convolution head (P-Net) is a dense layer on every cell: keep (in, out).
        pairs = tuple(
            (arrays[i].reshape(-1, arrays[i].shape[-1]), arrays[i + 1])
            for i in range(used, len(arrays), 2)
        )
        return cls(layers=layers, weights=tuple(arrays[:used]), heads=pairs)

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        """The heads' outputs for ``x`` (N, H, W, 3) float32; the last head is softmaxed."""
        arrays = iter(self.weights)
        for kind, *args in self.layers:
            if kind == "conv":
                x = conv2d(x, next(arrays), next(arrays))
            elif kind == "prelu":
                x = prelu(x, next(arrays))
            elif kind == "pool":
                x = max_pool(x, *args)
            elif kind == "flatten":
                x = x.transpose(0, 2, 1, 3).reshape(len(x), -1)  # Keras Permute((2, 1, 3))
            elif kind == "dense":
                x = x @ next(arrays) + next(arrays)
        outputs = [x @ w + b for w, b in self.heads]
        outputs[-1] = softmax(outputs[-1])
        return outputs


def conv2d(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A 'valid' convolution, stride 1: (N, H, W, C) by (kh, kw, C, O) -> (N, H-kh+1, W-kw+1, O).

    im2col: the kh·kw shifted views side by side along the channels, in the kernel's (dy, dx, c)
    order, then one matrix product (BLAS), which beats a sum of kh·kw thin products.
    """
    kh, kw, channels, out = kernel.shape
    height, width = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    if height < 1 or width < 1:
        return np.zeros((len(x), max(height, 0), max(width, 0), out), np.float32)
    columns = np.concatenate(
        [x[:, dy : dy + height, dx : dx + width, :] for dy in range(kh) for dx in range(kw)],
        axis=-1,
    )  # (N, H', W', kh·kw·C)
    result = columns @ kernel.reshape(kh * kw * channels, out)
    result += bias  # in place: on a 1280-pixel photo's first levels, each copy counts
    return result


def prelu(x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Keras' PReLU: x where positive, alpha·x where negative (alpha per channel, broadcast)."""
    return np.where(x > 0, x, x * alpha.reshape(-1))


def max_pool(x: np.ndarray, size: int, stride: int, padding: str) -> np.ndarray:
    """Keras' MaxPooling2D on (N, H, W, C): 'same' pads with -inf, the odd pixel at the end."""
    if padding == "same":
        pads = []
        for n in x.shape[1:3]:
            out = -(-n // stride)
            total = max((out - 1) * stride + size - n, 0)
            pads.append((total // 2, total - total // 2))
        x = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=-np.inf)
    out_h = (x.shape[1] - size) // stride + 1
    out_w = (x.shape[2] - size) // stride + 1
    result = None
    for dy in range(size):
        for dx in range(size):
            rows = slice(dy, dy + stride * (out_h - 1) + 1, stride)
            cols = slice(dx, dx + stride * (out_w - 1) + 1, stride)
            view = x[:, rows, cols]
            result = view.copy() if result is None else np.maximum(result, view, out=result)
    return result


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, the largest value subtracted first (as Keras does)."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------------------- the pictures


def normalize(pixels: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> the networks' input range, (p - 127.5) / 128, float32."""
    return ((pixels.astype(np.float64) - 127.5) / 128).astype(np.float32)


def pyramid_scales(width: int, height: int) -> np.ndarray:
    """The package's pyramid: ``0.6 · 0.709**k``, as many levels as its formula gives.

    The level count comes from the smaller side against the 12-pixel window (not against the
    scaled side), rounded; it is 0 for a side under ~20 pixels.
    """
    shorter = min(width, height)
    count = round(-((np.log(shorter / _WINDOW) / np.log(SCALE_FACTOR)) + 1))
    return (_WINDOW / MIN_FACE_SIZE) * SCALE_FACTOR ** np.arange(max(count, 0))


def area_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """TensorFlow's ``resize_area`` of (H, W, C) to (height, width, C), float32 out."""
    return area_resize_integral(integral_image(image), height, width)


def integral_image(image: np.ndarray) -> np.ndarray:
    """(H+1, W+1, C) float64 sums of ``image`` above and left of each pixel corner.

    Computed once per photo, it gives every pyramid level (:func:`area_resize_integral`)
    without summing the photo again: on a 1280x960 photo, a running sum per level cost more
    than P-Net itself.
    """
    h, w, c = image.shape
    sums = np.zeros((h + 1, w + 1, c))
    np.cumsum(image, axis=0, dtype=np.float64, out=sums[1:, 1:])
    np.cumsum(sums[1:, 1:], axis=1, out=sums[1:, 1:])
    return sums


def area_resize_integral(sums: np.ndarray, height: int, width: int) -> np.ndarray:
    """The image of the integral ``sums`` resized by area to (height, width, C), float32.

    As TensorFlow's ``resize_area``: each output pixel is the mean of the input over its
    footprint, partial pixels weighted by the part covered, the footprint's edges computed in
    float32. The integral of a piecewise-constant image is bilinear between pixel corners, so
    the sum over a footprint is four bilinear samples of ``sums``; exact in float64.
    """
    corners = sums
    scales = []
    for axis, size in ((0, height), (1, width)):
        corners, scale = _integral_at_edges(corners, axis, size)
        scales.append(scale)
    total = corners[1:, 1:] - corners[1:, :-1] - corners[:-1, 1:] + corners[:-1, :-1]
    return (total / (scales[0] * scales[1])).astype(np.float32)


def _integral_at_edges(sums: np.ndarray, axis: int, size: int) -> tuple[np.ndarray, np.float64]:
    """``sums`` sampled along ``axis`` at the size + 1 footprint edges of a resize to ``size``;
    and the footprint's length in input pixels."""
    n = sums.shape[axis] - 1  # input pixels along the axis
    scale = np.float32(n) / np.float32(size)
    edges = (np.arange(size + 1, dtype=np.float32) * scale).astype(np.float64)
    # TensorFlow clamps a pixel index past the end (float rounding) to the last pixel.
    cell = np.minimum(np.floor(edges).astype(np.int64), n - 1)
    shape = [1] * sums.ndim
    shape[axis] = -1
    part = (edges - cell).reshape(shape)
    low, high = np.take(sums, cell, axis=axis), np.take(sums, cell + 1, axis=axis)
    return low + part * (high - low), np.float64(scale)


def crop_and_resize(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """TensorFlow's ``crop_and_resize`` as the package calls it: (N, size, size, 3) float32.

    ``image`` is (H, W, 3) float32; ``boxes`` (N, 4) are x1, y1, x2, y2 in pixels. The package
    divides them by the image's size but TensorFlow multiplies back by size - 1, so a cut
    shrinks slightly towards the top left: followed as is. Samples outside the image are 0.
    """
    h, w = image.shape[:2]
    norm = (boxes[:, [1, 0, 3, 2]] / np.array([h, w, h, w], np.float64)).astype(np.float32)
    steps = np.arange(size, dtype=np.float32)
    rows = _sample_positions(norm[:, 0], norm[:, 2], h, size, steps)  # (N, size)
    cols = _sample_positions(norm[:, 1], norm[:, 3], w, size, steps)
    inside = ((rows >= 0) & (rows <= h - 1))[:, :, None] & ((cols >= 0) & (cols <= w - 1))[
        :, None, :
    ]
    top, left = np.floor(rows), np.floor(cols)
    y_lerp, x_lerp = (rows - top)[:, :, None, None], (cols - left)[:, None, :, None]
    t, b = _index(top, h), _index(np.ceil(rows), h)
    le, ri = _index(left, w), _index(np.ceil(cols), w)

    def at(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return image[r[:, :, None], c[:, None, :]]  # (N, size, size, 3)

    top_row = at(t, le) + (at(t, ri) - at(t, le)) * x_lerp
    bottom_row = at(b, le) + (at(b, ri) - at(b, le)) * x_lerp
    patches = top_row + (bottom_row - top_row) * y_lerp
    return np.where(inside[:, :, :, None], patches, np.float32(0)).astype(np.float32)


def _sample_positions(
    start: np.ndarray, end: np.ndarray, extent: int, size: int, steps: np.ndarray
) -> np.ndarray:
    """Where TensorFlow samples a box's ``size`` points along one axis (float32 arithmetic)."""
    span = np.float32(extent - 1)
    step = (end - start) * span / np.float32(size - 1)
    return (start * span)[:, None] + steps[None, :] * step[:, None]


def _index(position: np.ndarray, extent: int) -> np.ndarray:
    """A sample's pixel index, kept inside the image (samples outside are zeroed anyway)."""
    return np.clip(position, 0, extent - 1).astype(np.int64)


# ---------------------------------------------------------------------------- the boxes


def iou(boxes: np.ndarray, mode: str = "union") -> np.ndarray:
    """(N, N) overlaps of (N, 4) boxes x1, y1, x2, y2: intersection over union, or over the
    smaller area (``mode="min"``). Areas are ``(x2 - x1)·(y2 - y1)``, without the +1 of pixels."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    low = np.maximum(boxes[None, :, :2], boxes[:, None, :2])
    high = np.minimum(boxes[None, :, 2:], boxes[:, None, 2:])
    inter = np.prod(np.maximum(high - low, 0), axis=-1)
    if mode == "union":
        denominator = area[:, None] + area[None, :] - inter
    elif mode == "min":
        denominator = np.minimum(area[:, None], area[None, :])
    else:
        raise ValueError(f"mode must be 'union' or 'min', got {mode!r}")
    with np.errstate(divide="ignore", invalid="ignore"):  # empty boxes: nan, never over
        return inter / denominator


def nms(rows: np.ndarray, threshold: float, mode: str = "union", sort: bool = True) -> np.ndarray:
    """The rows (x1, y1, x2, y2 in columns 1-4, score in 5) the package's NMS keeps.

    With ``sort``, rows are first put in decreasing score (NumPy's argsort reversed, as the
    package does, so ties fall the same way). A row is kept when no row before it overlaps it
    by more than ``threshold``, whether or not that earlier row was kept.
    """
    if len(rows) == 0:
        return rows
    if sort:
        rows = rows[np.argsort(rows[:, 5])[::-1]]
    overlaps = iou(rows[:, 1:5], mode)
    earlier = np.triu(overlaps > threshold, k=1)  # [i, j]: i before j overlaps j
    return rows[~earlier.any(axis=0)]


def square(rows: np.ndarray) -> np.ndarray:
    """Boxes grown to squares of their longer side about the same centre (not rounded)."""
    rows = rows.copy()
    w, h = rows[:, 3] - rows[:, 1], rows[:, 4] - rows[:, 2]
    side = np.maximum(w, h)
    rows[:, 1] += w * 0.5 - side * 0.5
    rows[:, 2] += h * 0.5 - side * 0.5
    rows[:, 3] = rows[:, 1] + side
    rows[:, 4] = rows[:, 2] + side
    return rows


def regress(rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Box corners moved by the network's offsets, in units of the box's side + 1."""
    rows = rows.copy()
    w = rows[:, 3] - rows[:, 1] + 1
    h = rows[:, 4] - rows[:, 2] + 1
    # The package multiplies TensorFlow's float32 offsets by the sizes in float32.
    sides = np.stack([w, h, w, h], axis=-1).astype(np.float32)
    rows[:, 1:5] += np.asarray(offsets, np.float32) * sides
    return rows


def window_boxes(
    offsets: np.ndarray, scores: np.ndarray, threshold: float, scale: float
) -> np.ndarray:
    """P-Net's cells with a face score above ``threshold`` as rows (image 0, box, score).

    ``offsets`` (H, W, 4) and ``scores`` (H, W) are one pyramid level's output. Cell (y, x)
    stands for the 12-pixel window starting at (2x + 1, 2y + 1) of the level (the package's
    +1), moved by the offsets times 11, then scaled back to the photo; highest score first.
    """
    ys, xs = np.nonzero(scores > threshold)
    reg = offsets[ys, xs].astype(np.float64).T  # (4, K)
    x1, y1 = xs * _STRIDE + 1, ys * _STRIDE + 1
    x2, y2 = xs * _STRIDE + _WINDOW, ys * _STRIDE + _WINDOW
    span = _WINDOW - 1
    rows = np.stack(
        [np.zeros(len(xs)), x1 + reg[0] * span, y1 + reg[1] * span,
         x2 + reg[2] * span, y2 + reg[3] * span, scores[ys, xs].astype(np.float64)],
        axis=1,
    )
    rows = rows[np.argsort(rows[:, 5])[::-1]]
    rows[:, 1:5] /= scale
    return rows


# ---------------------------------------------------------------------------- the cascade


@dataclass(frozen=True)
class Mtcnn:
    """The three networks; :meth:`detect` runs the cascade. Immutable, so threads may share it."""

    pnet: Network
    rnet: Network
    onet: Network

    @classmethod
    def load(cls, folder: Path | None = None) -> Mtcnn:
        """The networks from ``folder`` (default: the installed ``mtcnn`` wheel's weights).

        Raises ``ModuleNotFoundError`` when the ``mtcnn`` package or its ``joblib``/``lz4``
        is not installed (the caller names the extra to install).
        """
        folder = weights_folder() if folder is None else folder
        import joblib  # the package's own format: joblib pickles, lz4-compressed

        def read(name: str) -> list[np.ndarray]:
            return joblib.load(folder / f"{name}.lz4")

        return cls(
            pnet=Network.from_arrays(PNET_LAYERS, read("pnet"), heads=2),
            rnet=Network.from_arrays(RNET_LAYERS, read("rnet"), heads=2),
            onet=Network.from_arrays(ONET_LAYERS, read("onet"), heads=3),
        )

    def detect(self, pixels: np.ndarray, threshold_onet: float = THRESHOLD_ONET) -> np.ndarray:
        """Faces in ``pixels`` (H, W, 3) uint8 RGB as (N, 16) rows, as the package's
        ``detect_faces(..., box_format="xyxy", output_type="numpy")`` returns them:
        image index (0), x1, y1, x2, y2, score, the 5 landmarks' x, then their y."""
        image = normalize(np.asarray(pixels))
        rows = self.proposals(image)
        if len(rows):
            rows = self.refine(image, rows)
        if len(rows):
            rows = self.output(image, rows, threshold_onet)
        if not len(rows):
            return np.empty((0, COLUMNS))
        h, w = image.shape[:2]
        rows[:, [1, 3]] = np.clip(rows[:, [1, 3]], 0, w - 1)  # boxes, not landmarks, are clipped
        rows[:, [2, 4]] = np.clip(rows[:, [2, 4]], 0, h - 1)
        return rows

    def proposals(self, image: np.ndarray) -> np.ndarray:
        """Stage 1: P-Net's square boxes over the pyramid, (N, 6) rows."""
        h, w = image.shape[:2]
        levels = []
        sums = integral_image(image)
        for scale in pyramid_scales(w, h):
            # The package resizes to shape · scale truncated to whole pixels.
            level = area_resize_integral(sums, int(h * scale), int(w * scale))
            offsets, scores = self.pnet_in_bands(level[None])
            rows = window_boxes(offsets[0], scores[0, :, :, 1], THRESHOLD_PNET, scale)
            levels.append(nms(rows, NMS_PNET_SCALE, sort=False))
        rows = np.concatenate(levels) if levels else np.empty((0, 6))
        return square(nms(rows, NMS_PNET_ALL))

    def pnet_in_bands(self, level: np.ndarray, band: int = PNET_BAND) -> list[np.ndarray]:
        """P-Net's outputs for ``level`` (1, H, W, 3), computed ``band`` output rows at a time.

        The same numbers as one call (every layer is local), with arrays small enough to stay
        in the CPU's cache: a photo's detection takes a fifth less time (docs/performance.md,
        "Start-up of the deploy commands"). Output row y sees input rows 2y to 2y + 11; a
        band starts on an even input row so the 2x2 pooling pairs the same rows, and the last
        band runs to the bottom so its 'same' padding is the whole level's.
        """
        height = level.shape[1]
        rows = (height - 1) // 2 - 4  # conv 3x3, pool 2 'same', conv 3x3, conv 3x3
        if rows <= band:
            return self.pnet(level)
        parts: list[list[np.ndarray]] = [[], []]
        for start in range(0, rows, band):
            stop = min(start + band, rows)
            end = 2 * (stop - 1) + _WINDOW if stop < rows else height
            for part, output in zip(parts, self.pnet(level[:, 2 * start : end]), strict=True):
                part.append(output[:, : stop - start])
        return [np.concatenate(part, axis=1) for part in parts]

    def refine(self, image: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Stage 2: R-Net on 24x24 cuts, regressed, kept above 0.7, NMS, squared."""
        offsets, scores = self.rnet(crop_and_resize(image, rows[:, 1:5], 24))
        rows = rows.copy()
        rows[:, 5] = scores[:, 1]
        rows = regress(rows, offsets)
        return square(nms(rows[rows[:, 5] > THRESHOLD_RNET], NMS_RNET))

    def output(self, image: np.ndarray, rows: np.ndarray, threshold: float) -> np.ndarray:
        """Stage 3: O-Net on 48x48 cuts: regressed boxes and landmarks, kept above
        ``threshold``, NMS over the smaller box's area."""
        offsets, points, scores = self.onet(crop_and_resize(image, rows[:, 1:5], 48))
        # Landmarks are fractions of the box O-Net saw (before its regression), less one pixel.
        w = rows[:, 3:4] - rows[:, 1:2] + 1
        h = rows[:, 4:5] - rows[:, 2:3] + 1
        points = points.astype(np.float64)
        xs = w * points[:, :5] + rows[:, 1:2] - 1
        ys = h * points[:, 5:] + rows[:, 2:3] - 1
        rows = rows.copy()
        rows[:, 5] = scores[:, 1]
        rows = np.concatenate([regress(rows, offsets), xs, ys], axis=1)
        return nms(rows[rows[:, 5] > threshold], NMS_ONET, mode="min")


def weights_folder() -> Path:
    """The folder of the ``mtcnn`` wheel's weight files, found without importing the package
    (its ``__init__`` imports TensorFlow). ``ModuleNotFoundError`` when it is not installed."""
    spec = importlib.util.find_spec("mtcnn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("No module named 'mtcnn'", name="mtcnn")
    folder = Path(next(iter(spec.submodule_search_locations))) / "assets" / "weights"
    if not (folder / "pnet.lz4").is_file():
        raise ModuleNotFoundError(f"the mtcnn package has no weights in {folder}", name="mtcnn")
    return folder
