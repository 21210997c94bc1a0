"""Input pipeline: shards -> decoded uint8 arrays in memory -> batched, in-graph augmentation.

Each JPEG is decoded once (:func:`decode_shards`); folds of a cross-validation
reuse the same arrays. A training batch is a pure function of
``(seed, step)``: which images it holds (a seeded permutation per epoch) and
how they are jittered (stateless random ops; see :mod:`facefold.data.augment`).
So a run resumed at step ``s`` sees exactly the batches an uninterrupted run
would have seen, and the same seed gives the same data order on any executor.

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
from facefold.data.augment import augment, mix, mixes
from facefold.data.records import (
    ShardError,
    list_shards,
    read_labels,
    required_features,
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
    features_spec = required_features()

    def parse(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        features = tf.io.parse_single_example(serialized, features_spec)
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


BatchMaker = Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]


def batch_maker(
    split: Split, spec: AugmentSpec, crop: int, batch_size: int, seed: int,
    num_classes: int = 0, targets: np.ndarray | None = None,
) -> BatchMaker:
    """A function ``step -> (x, y)`` giving training batch ``step`` of a run.

    ``x`` is (B, crop, crop, C) float32 in [0, 1], ``y`` (B,) int32 or, when
    ``spec`` mixes crops (mixup, cutmix; see :func:`~facefold.data.augment.mix`) or
    ``targets`` (N, ``num_classes``) give every image of ``split`` a soft target (a
    teacher's, see :mod:`facefold.train.distill`), soft targets (B, ``num_classes``)
    float32. Batch ``s`` depends only on ``(seed, s)``, which is what makes resuming
    exact. The images are copied into one tensor once, here.
    """
    num_images = len(split)
    if batch_size > num_images:
        raise ValueError(f"batch size {batch_size} exceeds the {num_images} training images")
    if mixes(spec) and num_classes <= int(split.labels.max(initial=0)):
        raise ValueError(f"mixing labels needs num_classes above the largest label, "
                         f"got {num_classes}")
    if targets is not None and targets.shape != (num_images, num_classes):
        raise ValueError(f"soft targets must be one row of {num_classes} per training image "
                         f"({num_images}), got shape {targets.shape}")
    images = tf.constant(split.images)
    labels = tf.constant(split.labels if targets is None else targets.astype(np.float32))

    def make_batch(step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        step = tf.cast(step, tf.int64)
        index = _batch_indices(num_images, batch_size, seed, step)
        jitter_seed = tf.stack([tf.constant(seed, tf.int64) + 1_000_003, step])
        x = augment(tf.gather(images, index), spec, crop, jitter_seed)
        if mixes(spec):
            mix_seed = tf.stack([tf.constant(seed, tf.int64) + 2_000_029, step])
            return mix(x, tf.gather(labels, index), num_classes, spec, mix_seed)
        return x, tf.gather(labels, index)

    return make_batch


def without_autotuning(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` without tf.data's autotuning: every dataset of this module, and the
    batches ``bench`` and the precision probe time.

    The autotuning thread wakes after ever longer sleeps, and a ``model.fit`` over a dataset
    with autotuning sometimes ended only at its next wake-up, long after its last step: the
    "2x mode" of training and of every timing (measured in docs/performance.md)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def step_batches(make_batch: BatchMaker, start_step: int, end_step: int) -> tf.data.Dataset:
    """Batches ``start_step`` … ``end_step - 1`` of ``make_batch`` (from :func:`batch_maker`),
    made in parallel and prefetched. One ``make_batch`` serves many ranges (the images are
    copied into it once). Without autotuning (:func:`without_autotuning`): the map's
    parallelism is then the number of cores, all the work there is on them."""
    return without_autotuning(
        tf.data.Dataset.range(start_step, end_step)
        .map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def training_batches(
    split: Split,
    spec: AugmentSpec,
    crop: int,
    batch_size: int,
    seed: int,
    start_step: int,
    end_step: int,
    num_classes: int = 0,
) -> tf.data.Dataset:
    """Batches ``start_step`` … ``end_step - 1`` of a training run (see :func:`batch_maker`)."""
    return step_batches(batch_maker(split, spec, crop, batch_size, seed, num_classes),
                        start_step, end_step)


def embedding_batch_maker(split: Split, flip: bool, batch_size: int, seed: int) -> BatchMaker:
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
            draw_seed = tf.stack([tf.constant(seed, tf.int64) + 1_000_003, step])
            mirror = tf.random.stateless_uniform((batch_size,), draw_seed) < 0.5
            view = tf.cast(mirror, tf.int32)  # (B,)
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
    return step_batches(embedding_batch_maker(split, flip, batch_size, seed), start_step,
                        end_step)


def embedding_evaluation_batches(split: Split, views: int, batch_size: int) -> tf.data.Dataset:
    """The first ``views`` views (N, views, D) of every image of ``split``, in order: ``(x, y)``
    pairs (``views`` = 2 for flip TTA: the head averages the image's and the mirror's)."""
    return without_autotuning(
        tf.data.Dataset.from_tensor_slices((split.images[:, :views], split.labels))
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def evaluation_batches(split: Split, crop: int, batch_size: int) -> tf.data.Dataset:
    """Central crops of every image of ``split``, in order: ``(x, y)`` pairs."""
    return without_autotuning(
        tf.data.Dataset.from_tensor_slices((split.images, split.labels))
        .batch(batch_size)
        .map(lambda x, y: (center_crop(x, crop), y), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
