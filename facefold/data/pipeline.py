"""Input pipeline: shards -> decoded uint8 arrays in memory -> batched, in-graph augmentation.

Each JPEG is decoded once (:func:`decode_shards`); folds of a cross-validation
reuse the same arrays. A training batch is a pure function of
``(seed, step)``: which images it holds (a seeded permutation per epoch) and
how they are jittered (stateless random ops). So a run resumed at step ``s``
sees exactly the batches an uninterrupted run would have seen, and the same
seed gives the same data order on any executor.

Pixel values handed to the model are float32 in [0, 1]; see
:class:`facefold.config.AugmentSpec` for the jitter and its scale.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from facefold.config import AugmentSpec
from facefold.data.records import (
    REQUIRED_FEATURES,
    ShardError,
    list_shards,
    read_labels,
    tf_error_message,
)


@dataclass(frozen=True)
class Split:
    """Decoded face crops and their labels: ``images`` (N, H, W, C) uint8, ``labels`` (N,) int32.

    (An embedding head's inputs are a :class:`~facefold.embeddings.shards.EmbeddingSplit`.)
    """

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def _decode_shard(path: Path, channels: int, num_classes: int) -> Split:
    """Decode one shard; errors name the file and record."""
    def parse(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        features = tf.io.parse_single_example(serialized, REQUIRED_FEATURES)
        image = tf.io.decode_jpeg(features["image_raw"], channels=channels)
        return image, tf.cast(features["label"], tf.int32)

    dataset = tf.data.TFRecordDataset(str(path)).map(
        parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    images, labels = [], []
    try:
        for image, label in dataset.as_numpy_iterator():
            images.append(image)
            labels.append(label)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as err:
        raise ShardError(
            f"{path} record {len(labels)}: {tf_error_message(err)} "
            "(run `facefold dataset inspect` for a full check)"
        ) from err
    if not labels:
        raise ShardError(f"{path} holds no records")
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ShardError(f"{path}: images differ in size {sorted(shapes)}")
    labels_arr = np.asarray(labels, np.int32)
    bad = np.flatnonzero((labels_arr < 0) | (labels_arr >= num_classes))
    if bad.size:
        raise ShardError(
            f"{path} record {bad[0]}: label {labels_arr[bad[0]]} is outside the "
            f"label list (0..{num_classes - 1})"
        )
    return Split(np.stack(images), labels_arr)


def decode_shards(data_dir: str | Path, channels: int = 3) -> list[Split]:
    """Decode every shard of a dataset folder, in shard order.

    ``channels=1`` decodes the JPEGs to gray. Raises :class:`ShardError`
    naming the file on a corrupt shard or a label outside ``labels.txt``.
    """
    num_classes = len(read_labels(data_dir))
    splits = [_decode_shard(p, channels, num_classes) for p in list_shards(data_dir)]
    sizes = {s.images.shape[1:] for s in splits}
    if len(sizes) != 1:
        raise ShardError(f"{data_dir}: shards hold images of different sizes {sorted(sizes)}")
    return splits


def concat(splits: list[Split]) -> Split:
    """Join several splits of one kind into one (e.g. the training shards of a fold)."""
    return dataclasses.replace(splits[0], **{
        f.name: np.concatenate([getattr(s, f.name) for s in splits])
        for f in dataclasses.fields(splits[0])
    })


def center_crop(images: tf.Tensor, crop: int) -> tf.Tensor:
    """The central ``crop`` x ``crop`` window of uint8 images, as float32 in [0, 1].

    This is the evaluation and prediction preprocessing; the model does the rest.
    """
    height, width = images.shape[-3], images.shape[-2]
    if crop > height or crop > width:
        raise ValueError(f"crop size {crop} is larger than the images ({height}x{width})")
    top, left = (height - crop) // 2, (width - crop) // 2
    window = images[..., top : top + crop, left : left + crop, :]
    return tf.cast(window, tf.float32) / 255.0


def _batch_indices(num_images: int, batch: int, seed: int, step: tf.Tensor) -> tf.Tensor:
    """Indices of the images in training batch ``step``: epochs are seeded permutations."""
    positions = tf.cast(step, tf.int64) * batch + tf.range(batch, dtype=tf.int64)
    epochs = positions // num_images
    first_epoch = epochs[0]
    # A batch spans at most two epochs as long as batch <= num_images (checked by the caller).
    perms = tf.stack(
        [
            tf.random.experimental.stateless_shuffle(
                tf.range(num_images, dtype=tf.int64), seed=tf.stack([seed, first_epoch + k])
            )
            for k in range(2)
        ]
    )  # (2, N)
    return tf.gather_nd(perms, tf.stack([epochs - first_epoch, positions % num_images], axis=1))


# RGB <-> YIQ (NTSC): Y is luma, I and Q span the colour plane. A hue shift is a
# rotation of (I, Q); a saturation change scales them. Both keep gray pixels gray.
_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def color_matrix(hue_shift: tf.Tensor, saturation: tf.Tensor) -> tf.Tensor:
    """3x3 RGB matrices, one per image, that rotate hue and scale saturation.

    ``hue_shift`` (B,) is a fraction of the hue circle (0.5 = half a turn),
    ``saturation`` (B,) a factor (0 = gray, 1 = unchanged). Returns (B, 3, 3)
    float32 ``M`` with ``rgb_out = M @ rgb_in``. It is the linear (YIQ) form of
    ``tf.image.adjust_hue`` + ``adjust_saturation``: it moves colours the same
    way and as far as the HSV versions (not to the same values: it keeps luma
    where HSV keeps the max channel), for one matrix product instead of two
    colour-space round trips.
    """
    # Minus: in YIQ the HSV hue order (red -> yellow -> green) runs clockwise.
    angle = -2.0 * np.pi * tf.cast(hue_shift, tf.float32)
    cos, sin = tf.cos(angle) * saturation, tf.sin(angle) * saturation
    ones, zeros = tf.ones_like(cos), tf.zeros_like(cos)
    yiq_op = tf.stack(
        [tf.stack([ones, zeros, zeros], -1),
         tf.stack([zeros, cos, -sin], -1),
         tf.stack([zeros, sin, cos], -1)], axis=1
    )  # (B, 3, 3)
    to_rgb = tf.constant(_YIQ_TO_RGB, tf.float32)
    to_yiq = tf.constant(_RGB_TO_YIQ, tf.float32)
    return tf.einsum("ij,bjk,kl->bil", to_rgb, yiq_op, to_yiq)


def _random_crop(
    images: tf.Tensor, crop: int, top: tf.Tensor, left: tf.Tensor, flip: tf.Tensor
) -> tf.Tensor:
    """Per-image ``crop`` x ``crop`` windows at integer offsets ``top``, ``left`` (B,) of uint8
    images, mirrored left-right where ``flip`` (B,) is true.

    Two gathers; the mirror is a reversed column index, so it costs nothing extra
    (a separate ``tf.reverse`` + ``tf.where`` doubled the time of the whole augmentation).
    """
    steps = tf.range(crop, dtype=tf.int32)
    columns = tf.where(flip[:, None], crop - 1 - steps, steps)
    rows = tf.gather(images, top[:, None] + steps, axis=1, batch_dims=1)
    return tf.gather(rows, left[:, None] + columns, axis=2, batch_dims=1)


# Random erasing draws a rectangle of this fraction of the crop's area and this aspect range
# (Zhong et al. 2017 use up to 0.4 and 0.3-3.3; a quarter still leaves most of a face).
ERASE_AREA = (0.02, 0.25)
ERASE_ASPECT = (1 / 3, 3.0)


def _batch_size(x: tf.Tensor) -> int | tf.Tensor:
    """The batch size of ``x``: static when known, which keeps shapes known to grappler's
    cost model (no PredictCost warnings), else the dynamic size."""
    return x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]


def _uniform(batch: int | tf.Tensor, seed: tf.Tensor, low: float, high: float) -> tf.Tensor:
    """``batch`` stateless uniform draws in [low, high), float32."""
    return tf.random.stateless_uniform((batch,), seed, low, high)


def _log_uniform(batch: int | tf.Tensor, seed: tf.Tensor, low: float, high: float) -> tf.Tensor:
    """``batch`` draws whose logarithm is uniform: ratios as likely below 1 as above."""
    return tf.exp(_uniform(batch, seed, np.log(low), np.log(high)))


def exact_window(spec: AugmentSpec) -> bool:
    """Whether the crop is an exact integer window (no scale, aspect or rotation jitter)."""
    return spec.scale == (1.0, 1.0) and spec.aspect == (1.0, 1.0) and not spec.rotation


@dataclass(frozen=True)
class Boxes:
    """Where each output crop samples its input (all (B,) float32, input pixel units).

    Output pixel (column u, row v) of a ``crop`` x ``crop`` crop samples the
    input at ``centre + R(angle) @ ((u - m) * step_x, (v - m) * step_y)`` with
    ``m = (crop - 1) / 2``, pixel centres at integers; a negative ``step_x``
    mirrors the crop.
    """

    centre_x: tf.Tensor
    centre_y: tf.Tensor
    step_x: tf.Tensor
    step_y: tf.Tensor
    angle: tf.Tensor  # radians


def random_boxes(
    shape: tuple[int | tf.Tensor, int, int], spec: AugmentSpec, crop: int, flip: tf.Tensor,
    seed: tf.Tensor,
) -> Boxes:
    """Random boxes for a batch of input ``shape`` (batch, height, width).

    A box covers ``spec.scale`` x crop² pixels (within a pixel), its
    width/height ratio is in ``spec.aspect`` (log-uniform), it is cut to the
    image and placed uniformly where its samples stay inside the image, and
    turned about its centre by up to ±``spec.rotation`` degrees (the corners of
    a turned box may leave the image). ``flip`` (B,) mirrors the crop.
    """
    batch, height, width = shape
    seeds = tf.random.experimental.stateless_split(seed, 5)
    area = _uniform(batch, seeds[0], *spec.scale) * crop * crop
    ratio = _log_uniform(batch, seeds[1], *spec.aspect)
    # Samples span (crop - 1) steps; the span must fit between the first and last pixel centre.
    span_x = tf.minimum(tf.sqrt(area * ratio) * (crop - 1) / crop, width - 1)
    span_y = tf.minimum(tf.sqrt(area / ratio) * (crop - 1) / crop, height - 1)
    centre_x = _uniform(batch, seeds[2], 0, 1) * (width - 1 - span_x) + span_x / 2
    centre_y = _uniform(batch, seeds[3], 0, 1) * (height - 1 - span_y) + span_y / 2
    limit = np.deg2rad(spec.rotation)
    angle = _uniform(batch, seeds[4], -limit, limit) if spec.rotation else tf.zeros_like(area)
    step_x = span_x / (crop - 1) * tf.where(flip, -1.0, 1.0)
    return Boxes(centre_x, centre_y, step_x, span_y / (crop - 1), angle)


def projective_transforms(boxes: Boxes, crop: int) -> tf.Tensor:
    """``boxes`` as (B, 8) rows ``a0 a1 a2 b0 b1 b2 0 0`` of ``ImageProjectiveTransformV3``:
    output pixel (u, v) samples the input at ``(a0 u + a1 v + a2, b0 u + b1 v + b2)``."""
    cos, sin = tf.cos(boxes.angle), tf.sin(boxes.angle)
    a0, a1 = cos * boxes.step_x, -sin * boxes.step_y
    b0, b1 = sin * boxes.step_x, cos * boxes.step_y
    middle = (crop - 1) / 2  # the output's centre samples the box's centre
    a2 = boxes.centre_x - middle * (a0 + a1)
    b2 = boxes.centre_y - middle * (b0 + b1)
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def _resample(images: tf.Tensor, boxes: Boxes, crop: int, turned: bool) -> tf.Tensor:
    """uint8 images (B, H, W, C) sampled bilinearly at ``boxes`` into float32 crops
    (B, crop, crop, C) in [0, 1]; ``turned``: whether the boxes may be rotated.

    Unturned boxes go through ``crop_and_resize`` (a mirrored box is one whose
    x1 > x2), ~2.5x faster on this CPU than the general projective transform that
    turned boxes need; there a corner outside the image is filled by reflection.
    """
    if turned:
        x = tf.raw_ops.ImageProjectiveTransformV3(
            images=tf.cast(images, tf.float32),  # uint8 output would truncate, not round
            transforms=projective_transforms(boxes, crop),
            output_shape=tf.constant([crop, crop]), fill_value=0.0,
            interpolation="BILINEAR", fill_mode="REFLECT",
        )
        return x / 255.0
    height, width = images.shape[1], images.shape[2]
    half_x, half_y = boxes.step_x * (crop - 1) / 2, boxes.step_y * (crop - 1) / 2
    corners = tf.stack([
        (boxes.centre_y - half_y) / (height - 1), (boxes.centre_x - half_x) / (width - 1),
        (boxes.centre_y + half_y) / (height - 1), (boxes.centre_x + half_x) / (width - 1),
    ], axis=1)  # (B, 4): normalized y1, x1, y2, x2
    index = tf.range(tf.shape(images)[0])
    return tf.image.crop_and_resize(images, corners, index, (crop, crop)) / 255.0


def random_erase(x: tf.Tensor, probability: float, seed: tf.Tensor) -> tf.Tensor:
    """With ``probability`` per image, paint a random rectangle of float crops (B, S, S, C) in
    one random colour (uniform in [0, 1] per channel); the rectangle's area and aspect are
    drawn from :data:`ERASE_AREA` and :data:`ERASE_ASPECT`, its position uniformly inside
    the crop. One colour, not per-pixel noise: the noise cost as much as the whole jitter."""
    batch = _batch_size(x)
    size = x.shape[1]
    seeds = tf.random.experimental.stateless_split(seed, 6)
    area = _uniform(batch, seeds[0], *ERASE_AREA) * size * size
    ratio = _log_uniform(batch, seeds[1], *ERASE_ASPECT)
    height = tf.minimum(tf.sqrt(area / ratio), size)
    width = tf.minimum(tf.sqrt(area * ratio), size)
    top = _uniform(batch, seeds[2], 0, 1) * (size - height)
    left = _uniform(batch, seeds[3], 0, 1) * (size - width)
    erase = tf.cast(_uniform(batch, seeds[4], 0, 1) < probability, tf.float32)
    position = tf.range(size, dtype=tf.float32)[None, :]  # (1, S)
    rows = (position >= top[:, None]) & (position < (top + height)[:, None])  # (B, S)
    cols = (position >= left[:, None]) & (position < (left + width)[:, None])  # (B, S)
    # A 0/1 mask as an outer product and a blend: ~25 % faster here than tf.where.
    inside = (tf.cast(rows, tf.float32) * erase[:, None])[:, :, None, None] * tf.cast(
        cols, tf.float32)[:, None, :, None]  # (B, S, S, 1)
    colour = tf.random.stateless_uniform((batch, 1, 1, x.shape[3]), seeds[5])
    return x + inside * (colour - x)


def _jitter_colour(x: tf.Tensor, spec: AugmentSpec, seeds: tf.Tensor) -> tf.Tensor:
    """Brightness, contrast and, for RGB, hue and saturation of float crops (B, S, S, C) in
    [0, 1], drawn with ``seeds[3:7]`` (from :func:`augment`); clipped to [0, 1].

    Why it is written this way: the whole colour jitter is affine per image,
    ``x -> A x + t`` with ``A = contrast * color_matrix(hue, saturation)``, so it is
    one small batched matrix product plus one clip. On 2 CPU cores this keeps
    the pipeline off the critical path (the HSV round trip cost a quarter of a
    training step).
    """
    batch = _batch_size(x)
    crop, channels = x.shape[1], x.shape[3]
    brightness = _uniform(batch, seeds[3], -spec.brightness, spec.brightness) if (
        spec.brightness) else 0.0
    low, high = spec.contrast
    contrast = _uniform(batch, seeds[4], low, high) if (low, high) != (1.0, 1.0) else tf.ones(
        (batch,))
    jitter_color = channels == 3 and (spec.hue or spec.saturation != (1.0, 1.0))
    if not jitter_color and not spec.brightness and (low, high) == (1.0, 1.0):
        return x
    # Contrast pulls each channel towards its mean m, brightness adds b: y = c x + (1 - c) m + b.
    # Then the colour matrix M (M 1 = 1, gray stays gray): M y = c M x + (1 - c) M m + b.
    mean = tf.reduce_mean(x, axis=[1, 2])  # (B, C)
    if jitter_color:
        matrix = color_matrix(_uniform(batch, seeds[5], -spec.hue, spec.hue),
                              _uniform(batch, seeds[6], *spec.saturation))
        mean = tf.einsum("bij,bj->bi", matrix, mean)
        # (B, HW, 3) @ (B, 3, 3)^T: a batched matmul is ~5x faster than einsum or broadcasting here.
        pixels = tf.reshape(x, (batch, crop * crop, channels))
        pixels = tf.matmul(pixels, contrast[:, None, None] * matrix, transpose_b=True)
        x = tf.reshape(pixels, (batch, crop, crop, channels))
    else:
        x = x * contrast[:, None, None, None]
    shift = (1.0 - contrast)[:, None] * mean + tf.reshape(brightness, (-1, 1))
    return tf.clip_by_value(x + shift[:, None, None, :], 0.0, 1.0)


def augment(images: tf.Tensor, spec: AugmentSpec, crop: int, seed: tf.Tensor) -> tf.Tensor:
    """Jitter a batch of uint8 images (B, H, W, C) into float32 crops (B, crop, crop, C) in [0, 1].

    A random crop with left-right flip, then brightness, contrast and, for
    RGB, hue and saturation (:func:`_jitter_colour`), then random erasing; each
    drawn per image from stateless RNGs keyed by ``seed`` (shape (2,)). The crop
    is an exact integer window (two gathers, the flip in the column index) unless
    ``spec`` asks for scale, aspect or rotation jitter; then it is a random box
    (:func:`random_boxes`) resampled bilinearly. Draws of the options that are off by
    default come from seeds folded off ``seed``, so the default settings draw
    exactly what they drew before those options existed.
    """
    batch = _batch_size(images)
    height, width = images.shape[1], images.shape[2]
    seeds = tf.random.experimental.stateless_split(seed, 7)
    flip = _uniform(batch, seeds[2], 0.0, 1.0) < 0.5 if spec.flip else tf.zeros((batch,), tf.bool)
    if exact_window(spec):
        def offsets(i: int, span: int) -> tf.Tensor:
            return tf.random.stateless_uniform((batch,), seeds[i], 0, span + 1, tf.int32)

        x = _random_crop(images, crop, offsets(0, height - crop), offsets(1, width - crop), flip)
        x = tf.cast(x, tf.float32) / 255.0
    else:
        boxes = random_boxes((batch, height, width), spec, crop, flip,
                             tf.random.experimental.stateless_fold_in(seed, 1))
        x = _resample(images, boxes, crop, turned=bool(spec.rotation))
    x = _jitter_colour(x, spec, seeds)
    if spec.erasing:
        x = random_erase(x, spec.erasing, tf.random.experimental.stateless_fold_in(seed, 2))
    return x


def batch_maker(
    split: Split, spec: AugmentSpec, crop: int, batch_size: int, seed: int
) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """A function ``step -> (x, y)`` giving training batch ``step`` of a run.

    ``x`` is (B, crop, crop, C) float32 in [0, 1], ``y`` (B,) int32. Batch ``s``
    depends only on ``(seed, s)``, which is what makes resuming exact. The
    images are copied into one tensor once, here.
    """
    num_images = len(split)
    if batch_size > num_images:
        raise ValueError(f"batch size {batch_size} exceeds the {num_images} training images")
    images = tf.constant(split.images)
    labels = tf.constant(split.labels)

    def make_batch(step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        step = tf.cast(step, tf.int64)
        index = _batch_indices(num_images, batch_size, seed, step)
        jitter_seed = tf.stack([tf.constant(seed, tf.int64) + 1_000_003, step])
        x = augment(tf.gather(images, index), spec, crop, jitter_seed)
        return x, tf.gather(labels, index)

    return make_batch


def training_batches(
    split: Split,
    spec: AugmentSpec,
    crop: int,
    batch_size: int,
    seed: int,
    start_step: int,
    end_step: int,
) -> tf.data.Dataset:
    """Batches ``start_step`` … ``end_step - 1`` of a training run (see :func:`batch_maker`)."""
    return _steps(batch_maker(split, spec, crop, batch_size, seed), start_step, end_step)


def _steps(
    make_batch: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]], start_step: int, end_step: int
) -> tf.data.Dataset:
    """``make_batch(step)`` for steps ``start_step`` … ``end_step - 1``, in order, prefetched."""
    return (
        tf.data.Dataset.range(start_step, end_step)
        .map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def embedding_batch_maker(
    split: Split, flip: bool, batch_size: int, seed: int
) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """A function ``step -> (x, y)`` giving training batch ``step`` of an embedding head.

    ``split.images`` are embeddings (N, V, D): view 0 of the image as stored,
    view 1 (when V = 2) of its mirror. ``x`` is (B, 1, D), one view per image:
    with ``flip`` the mirror's with probability 1/2, the embedding-side twin of
    the CNN's flip augmentation; ``y`` is (B,) int32. The images of batch
    ``s`` are those of the CNN pipeline for the same seed (:func:`_batch_indices`).
    """
    num_images, views = len(split), split.images.shape[1]
    if batch_size > num_images:
        raise ValueError(f"batch size {batch_size} exceeds the {num_images} training images")
    embeddings, labels = tf.constant(split.images, tf.float32), tf.constant(split.labels)

    def make_batch(step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        step = tf.cast(step, tf.int64)
        index = _batch_indices(num_images, batch_size, seed, step)
        x = tf.gather(embeddings, index)  # (B, V, D)
        if flip and views > 1:
            draw = _uniform(batch_size, tf.stack([tf.constant(seed, tf.int64) + 1_000_003, step]),
                            0.0, 1.0)
            view = tf.cast(draw < 0.5, tf.int32)  # (B,)
            x = tf.gather(x, view[:, None], axis=1, batch_dims=1)  # (B, 1, D)
        else:
            x = x[:, :1]
        return x, tf.gather(labels, index)

    return make_batch


def embedding_training_batches(
    split: Split, flip: bool, batch_size: int, seed: int, start_step: int, end_step: int
) -> tf.data.Dataset:
    """Batches ``start_step`` … ``end_step - 1`` of an embedding head's training run
    (see :func:`embedding_batch_maker`)."""
    return _steps(embedding_batch_maker(split, flip, batch_size, seed), start_step, end_step)


def embedding_evaluation_batches(split: Split, views: int, batch_size: int) -> tf.data.Dataset:
    """The first ``views`` views (N, views, D) of every image of ``split``, in order: ``(x, y)``
    pairs (``views`` = 2 for flip TTA: the head averages the image's and the mirror's)."""
    return (
        tf.data.Dataset.from_tensor_slices((split.images[:, :views], split.labels))
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def evaluation_batches(split: Split, crop: int, batch_size: int) -> tf.data.Dataset:
    """Central crops of every image of ``split``, in order: ``(x, y)`` pairs."""
    return (
        tf.data.Dataset.from_tensor_slices((split.images, split.labels))
        .batch(batch_size)
        .map(lambda x, y: (center_crop(x, crop), y), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
