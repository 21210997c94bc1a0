"""The input pipeline: exact crops, epoch coverage, determinism by (seed, step), decoding errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import make_tiny_dataset, write_2016_shard

from facefold.config import AugmentSpec
from facefold.data.augment import ERASE_AREA, _resample, augment, random_boxes, random_erase
from facefold.data.pipeline import (
    Split,
    _batch_indices,
    center_crop,
    decode_shards,
    training_batches,
)
from facefold.data.records import ShardError

NO_JITTER = AugmentSpec(flip=False, brightness=0.0, contrast=(1.0, 1.0), hue=0.0,
                        saturation=(1.0, 1.0))
# Every stronger option at once (the seed's colour jitter stays on).
STRONG = AugmentSpec(scale=(0.6, 1.4), aspect=(0.75, 1.33), rotation=10.0, erasing=0.5)


def _ramp_images(n: int, size: int = 12) -> np.ndarray:
    """Images whose every pixel value is unique within an image: a crop's position is readable."""
    base = np.arange(size * size * 3, dtype=np.int64).reshape(size, size, 3) % 251
    return np.stack([(base + 3 * i) % 256 for i in range(n)]).astype(np.uint8)


def test_center_crop_takes_the_middle_window() -> None:
    images = _ramp_images(2, 12)
    got = center_crop(tf.constant(images), 8).numpy()
    np.testing.assert_array_equal(got * 255.0, images[:, 2:10, 2:10, :].astype(np.float32))


def test_random_crop_is_an_exact_window_and_flip_mirrors() -> None:
    images = _ramp_images(16, 12)
    crops = augment(tf.constant(images), NO_JITTER, 8, tf.constant([1, 2], tf.int64)).numpy()
    crops = np.rint(crops * 255).astype(np.uint8)
    offsets = set()
    for image, crop in zip(images, crops, strict=True):
        matches = [(t, c) for t in range(5) for c in range(5)
                   if np.array_equal(image[t:t + 8, c:c + 8], crop)]
        assert len(matches) == 1, "every crop must be one exact 8x8 window of its image"
        offsets.add(matches[0])
    assert len(offsets) > 3, "offsets must vary between images"
    flipped = augment(tf.constant(images), AugmentSpec(flip=True, brightness=0.0,
                      contrast=(1.0, 1.0), hue=0.0, saturation=(1.0, 1.0)), 8,
                      tf.constant([1, 2], tf.int64)).numpy()
    flipped = np.rint(flipped * 255).astype(np.uint8)
    mirrored = [np.array_equal(f, c[:, ::-1]) for f, c in zip(flipped, crops, strict=True)]
    assert 0 < sum(mirrored) < len(mirrored)  # some flipped, some not, same crops otherwise


def test_jitter_stays_in_range_and_changes_pixels() -> None:
    images = _ramp_images(8, 12)
    out = augment(tf.constant(images), AugmentSpec(), 8, tf.constant([3, 4], tf.int64)).numpy()
    assert out.min() >= 0.0 and out.max() <= 1.0
    plain = augment(tf.constant(images), NO_JITTER, 8, tf.constant([3, 4], tf.int64)).numpy()
    assert np.abs(out - plain).mean() > 0.01


def test_every_image_once_per_epoch() -> None:
    n, batch = 10, 4
    seen = np.concatenate([_batch_indices(n, batch, 7, tf.constant(s, tf.int64)).numpy()
                           for s in range(5)])  # 20 positions = exactly two epochs
    assert sorted(seen[:10]) == list(range(10))
    assert sorted(seen[10:]) == list(range(10))
    assert list(seen[:10]) != list(range(10))  # shuffled


@pytest.mark.parametrize("spec", [AugmentSpec(), STRONG], ids=["default", "strong"])
def test_batches_depend_only_on_seed_and_step(spec: AugmentSpec) -> None:
    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 255, (20, 12, 12, 3), dtype=np.uint8), np.arange(20) % 4)
    def batches(start: int, end: int, seed: int = 5) -> list:
        ds = training_batches(split, spec, 8, 6, seed, start, end)
        return [x.numpy() for x, _ in ds]
    whole = batches(0, 6)
    resumed = batches(3, 6)
    for a, b in zip(whole[3:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(batches(0, 1, seed=6)[0], whole[0])


def test_batch_larger_than_data_is_an_error() -> None:
    split = Split(np.zeros((3, 12, 12, 3), np.uint8), np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="batch size 8 exceeds the 3 training images"):
        training_batches(split, AugmentSpec(), 8, 8, 0, 0, 1)


def test_decode_gray_and_rgb(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "d", classes=3, shards=2, per_shard=2, size=20)
    rgb = decode_shards(data, channels=3)
    gray = decode_shards(data, channels=1)
    assert [len(s) for s in rgb] == [6, 6]
    assert rgb[0].images.shape == (6, 20, 20, 3)
    assert gray[0].images.shape == (6, 20, 20, 1)
    assert sorted(rgb[1].labels.tolist()) == [0, 0, 1, 1, 2, 2]


def test_label_outside_the_list_names_file_and_record(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "d", classes=3, shards=2, per_shard=1, size=20)
    image = np.zeros((20, 20, 3), np.uint8)
    write_2016_shard(data / "data-01.tfrecords", [(0, image), (1, image), (7, image)])
    with pytest.raises(ShardError, match=r"data-01.tfrecords record 2: label 7 is outside"):
        decode_shards(data)


def test_corrupt_shard_names_the_file(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "d", classes=3, shards=2, per_shard=2, size=20)
    shard = data / "data-00.tfrecords"
    shard.write_bytes(shard.read_bytes()[:-40])
    with pytest.raises(ShardError, match=r"data-00\.tfrecords"):
        decode_shards(data)


def test_color_matrix_keeps_gray_and_blends_towards_luma() -> None:
    from facefold.data.augment import color_matrix

    matrices = color_matrix(tf.constant([0.0, 0.3, -0.1, 0.0]),
                            tf.constant([1.0, 0.7, 1.3, 0.0])).numpy()
    np.testing.assert_allclose(matrices[0], np.eye(3), atol=1e-6)
    np.testing.assert_allclose(matrices.sum(axis=2), 1.0, atol=1e-5)  # gray stays gray
    rgb = np.array([0.9, 0.5, 0.1], np.float32)
    luma = 0.299 * 0.9 + 0.587 * 0.5 + 0.114 * 0.1  # saturation 0: every channel = luma
    np.testing.assert_allclose(matrices[3] @ rgb, [luma] * 3, atol=1e-5)
    for matrix in matrices[:3]:  # hue and saturation changes keep luma
        assert abs(np.array([0.299, 0.587, 0.114]) @ matrix @ rgb - luma) < 1e-5


def test_color_matrix_hue_moves_colours_like_tf_adjust_hue() -> None:
    from facefold.data.augment import color_matrix

    colours = np.random.default_rng(0).uniform(0.2, 0.8, (500, 3)).astype(np.float32)
    for shift in (0.04, -0.04, 0.1):
        reference = tf.image.adjust_hue(colours[None], shift)[0].numpy() - colours
        matrix = color_matrix(tf.constant([shift]), tf.constant([1.0]))[0].numpy()
        ours = colours @ matrix.T - colours
        cosine = (ours * reference).sum(1) / (
            np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1))
        assert np.median(cosine) > 0.75  # same direction of change...
        ratio = np.linalg.norm(ours, axis=1).mean() / np.linalg.norm(reference, axis=1).mean()
        assert 0.8 < ratio < 1.25  # ...and about as far


def test_fixed_contrast_and_saturation_match_a_hand_computation() -> None:
    images = np.random.default_rng(1).integers(0, 256, (4, 10, 10, 3), dtype=np.uint8)
    spec = AugmentSpec(flip=False, brightness=0.0, contrast=(0.5, 0.5), hue=0.0,
                       saturation=(0.5, 0.5))
    out = augment(tf.constant(images), spec, 10, tf.constant([1, 2], tf.int64)).numpy()
    x = images.astype(np.float64) / 255
    mean = x.mean(axis=(1, 2), keepdims=True)
    contrasted = 0.5 * x + 0.5 * mean  # contrast 0.5 pulls halfway to the channel mean
    luma = contrasted @ np.array([0.299, 0.587, 0.114])
    expected = np.clip(0.5 * contrasted + 0.5 * luma[..., None], 0, 1)  # saturation 0.5
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("spec", [
    AugmentSpec(scale=(0.7, 1.3), aspect=(0.8, 1.25)),
    AugmentSpec(rotation=15.0),
    AugmentSpec(erasing=1.0),
    STRONG,
], ids=["box", "rotation", "erasing", "all"])
@pytest.mark.parametrize("channels", [3, 1])
def test_strong_augmentation_is_deterministic_and_in_range(spec: AugmentSpec,
                                                           channels: int) -> None:
    images = tf.constant(np.random.default_rng(1).integers(0, 256, (16, 40, 40, channels),
                                                           dtype=np.uint8))
    def run(step: int) -> np.ndarray:
        return augment(images, spec, 32, tf.constant([9, step], tf.int64)).numpy()
    first = run(3)
    assert first.shape == (16, 32, 32, channels) and first.dtype == np.float32
    assert first.min() >= 0.0 and first.max() <= 1.0
    np.testing.assert_array_equal(run(3), first)
    assert not np.array_equal(run(4), first)
    plain = augment(images, AugmentSpec(), 32, tf.constant([9, 3], tf.int64)).numpy()
    assert not np.array_equal(plain, first)


def test_boxes_have_the_drawn_area_and_stay_inside() -> None:
    spec = AugmentSpec(scale=(0.5, 1.0), aspect=(0.8, 1.25))  # at most 107 px: never cut
    flip = tf.constant(np.arange(256) % 3 == 0)
    boxes = random_boxes((256, 112, 112), spec, 96, flip, tf.constant([1, 2], tf.int64))
    width = np.abs(boxes.step_x.numpy()) * 96  # a box is crop steps wide
    height = boxes.step_y.numpy() * 96
    area = width * height / 96**2
    assert area.min() >= 0.5 - 1e-4 and area.max() <= 1.0 + 1e-4
    ratio = width / height
    assert ratio.min() >= 0.8 - 1e-4 and ratio.max() <= 1.25 + 1e-4
    for centre, step in ((boxes.centre_x, np.abs(boxes.step_x)),
                         (boxes.centre_y, boxes.step_y)):
        half_span = 95 / 2 * np.asarray(step)
        assert (centre.numpy() - half_span).min() >= -1e-4  # first sample at a pixel centre >= 0
        assert (centre.numpy() + half_span).max() <= 111 + 1e-4  # last one <= 111
    np.testing.assert_array_equal(boxes.step_x.numpy() < 0, flip.numpy())


def test_unturned_boxes_sample_where_the_projective_transform_does() -> None:
    """The fast crop_and_resize path (mirrored boxes too) equals the general transform."""
    images = tf.constant(np.random.default_rng(3).integers(0, 256, (16, 40, 40, 3),
                                                           dtype=np.uint8))
    flip = tf.constant(np.arange(16) % 2 == 0)
    boxes = random_boxes((16, 40, 40), AugmentSpec(scale=(0.6, 1.4), aspect=(0.75, 1.33)), 32,
                         flip, tf.constant([5, 6], tf.int64))
    fast = _resample(images, boxes, 32, turned=False).numpy()
    general = _resample(images, boxes, 32, turned=True).numpy()
    np.testing.assert_allclose(fast, general, atol=1e-5)


def test_a_turned_constant_image_stays_constant() -> None:
    """Rotated corners are filled by reflection, so no black (or other) border appears."""
    images = tf.fill((8, 40, 40, 3), tf.constant(200, tf.uint8))
    out = augment(images, dataclasses.replace(NO_JITTER, rotation=30.0, scale=(1.4, 1.4)), 32,
                  tf.constant([1, 1], tf.int64)).numpy()
    np.testing.assert_allclose(out, 200 / 255, atol=1e-5)


def test_random_erasing_paints_one_rectangle_in_one_colour() -> None:
    x = tf.constant(np.random.default_rng(4).random((64, 32, 32, 3)), tf.float32)
    seed = tf.constant([7, 8], tf.int64)
    np.testing.assert_array_equal(random_erase(x, 0.0, seed).numpy(), x.numpy())
    out = random_erase(x, 1.0, seed).numpy()
    changed = np.any(out != x.numpy(), axis=3)  # (B, S, S)
    for image, mask in zip(out, changed, strict=True):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        assert mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()  # a full rectangle
        assert mask.sum() == len(rows) * len(cols)
        low, high = ERASE_AREA
        assert 0.5 * low <= mask.mean() <= high + 0.1  # within a pixel row or column
        colours = image[mask]
        np.testing.assert_array_equal(colours, np.broadcast_to(colours[0], colours.shape))
    some = np.any(random_erase(x, 0.5, seed).numpy() != x.numpy(), axis=(1, 2, 3))
    assert 10 < some.sum() < 54
