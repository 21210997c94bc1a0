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
    """Decoded face crops and their labels: ``images`` (N, H, W, C) uint8, ``labels`` (N,) int32."""

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
    """Join several splits into one (e.g. the training shards of a fold)."""
    return Split(
        np.concatenate([s.images for s in splits]), np.concatenate([s.labels for s in splits])
    )


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


def augment(images: tf.Tensor, spec: AugmentSpec, crop: int, seed: tf.Tensor) -> tf.Tensor:
    """Jitter a batch of uint8 images (B, H, W, C) into float32 crops (B, crop, crop, C) in [0, 1].

    Random crop, left-right flip, brightness, contrast, and for RGB hue and
    saturation, each drawn per image from stateless RNGs keyed by ``seed`` (shape (2,)).

    Why it is written this way: the whole colour jitter is affine per image,
    ``x -> A x + t`` with ``A = contrast * color_matrix(hue, saturation)``, so it is
    one small batched matrix product plus one clip. On 2 CPU cores this keeps
    the pipeline off the critical path (the HSV round trip cost a quarter of a
    training step).
    """
    # A static batch size keeps shapes known to grappler's cost model (no PredictCost warnings).
    batch = images.shape[0] if images.shape[0] is not None else tf.shape(images)[0]
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    seeds = tf.random.experimental.stateless_split(seed, 7)

    def uniform(i: int, low: float, high: float) -> tf.Tensor:
        return tf.random.stateless_uniform((batch,), seeds[i], low, high)

    def offsets(i: int, span: int) -> tf.Tensor:
        return tf.random.stateless_uniform((batch,), seeds[i], 0, span + 1, tf.int32)

    flip = uniform(2, 0.0, 1.0) < 0.5 if spec.flip else tf.zeros((batch,), tf.bool)
    x = _random_crop(images, crop, offsets(0, height - crop), offsets(1, width - crop), flip)
    x = tf.cast(x, tf.float32) / 255.0

    brightness = uniform(3, -spec.brightness, spec.brightness) if spec.brightness else 0.0
    low, high = spec.contrast
    contrast = uniform(4, low, high) if (low, high) != (1.0, 1.0) else tf.ones((batch,))
    jitter_color = channels == 3 and (spec.hue or spec.saturation != (1.0, 1.0))
    if not jitter_color and not spec.brightness and (low, high) == (1.0, 1.0):
        return x
    # Contrast pulls each channel towards its mean m, brightness adds b: y = c x + (1 - c) m + b.
    # Then the colour matrix M (M 1 = 1, gray stays gray): M y = c M x + (1 - c) M m + b.
    mean = tf.reduce_mean(x, axis=[1, 2])  # (B, C)
    if jitter_color:
        matrix = color_matrix(uniform(5, -spec.hue, spec.hue), uniform(6, *spec.saturation))
        mean = tf.einsum("bij,bj->bi", matrix, mean)
        # (B, HW, 3) @ (B, 3, 3)^T: a batched matmul is ~5x faster than einsum or broadcasting here.
        pixels = tf.reshape(x, (batch, crop * crop, channels))
        pixels = tf.matmul(pixels, contrast[:, None, None] * matrix, transpose_b=True)
        x = tf.reshape(pixels, (batch, crop, crop, channels))
    else:
        x = x * contrast[:, None, None, None]
    shift = (1.0 - contrast)[:, None] * mean + tf.reshape(brightness, (-1, 1))
    return tf.clip_by_value(x + shift[:, None, None, :], 0.0, 1.0)


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
    return (
        tf.data.Dataset.range(start_step, end_step)
        .map(
            batch_maker(split, spec, crop, batch_size, seed),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
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
