"""Mixup and cutmix: mixed crops and soft targets by hand, the loss and accuracy on soft
targets, batches as pure functions of the step, and a run that trains and evaluates."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from facefold.config import AugmentSpec
from facefold.data.augment import mix
from facefold.data.pipeline import Split, batch_maker
from facefold.models.presets import resolve_config
from facefold.train import train
from facefold.train.optim import SmoothedSparseCrossentropy, make_loss, target_accuracy

SEED = tf.constant([3, 11], tf.int64)


def _batch(rng: np.random.Generator, size: int = 6, side: int = 8):
    x = rng.random((size, side, side, 3)).astype(np.float32)
    return tf.constant(x), tf.constant(np.arange(size) % 4, tf.int32)


def test_mixup_blends_each_crop_with_the_reversed_batch_by_hand() -> None:
    x, labels = _batch(np.random.default_rng(0))
    mixed, targets = mix(x, labels, 5, AugmentSpec(mixup=0.4), SEED)
    mixed, targets, x = mixed.numpy(), targets.numpy(), x.numpy()
    lam = targets[0, 0]  # crop 0 is person 0, its partner (crop 5) person 1
    assert 0 < lam < 1 and targets[0, 1] == pytest.approx(1 - lam)
    np.testing.assert_allclose(mixed, lam * x + (1 - lam) * x[::-1], atol=1e-6)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-6)
    # Crops 2 and 3 (people 2 and 3) pair with each other: the same proportion both ways.
    assert targets[2, 2] == pytest.approx(lam) and targets[3, 2] == pytest.approx(1 - lam)
    again = mix(tf.constant(x), labels, 5, AugmentSpec(mixup=0.4), SEED)[0].numpy()
    np.testing.assert_array_equal(mixed, again)  # a pure function of the seed


def test_cutmix_pastes_one_rectangle_and_the_target_is_the_pasted_share() -> None:
    x, labels = _batch(np.random.default_rng(1), side=16)
    for k in range(20):  # many draws: every box, clipped or not, must add up
        mixed, targets = mix(x, labels, 4, AugmentSpec(cutmix=1.0),
                             tf.constant([k, 7], tf.int64))
        mixed, targets = mixed.numpy(), targets.numpy()
        from_other = np.all(np.isclose(mixed, x.numpy()[::-1]), axis=-1)[0]  # (S, S) of crop 0
        from_own = np.all(np.isclose(mixed, x.numpy()), axis=-1)[0]
        assert (from_other | from_own).all()  # every pixel is one crop's or the other's
        rows, cols = np.nonzero(from_other)
        if len(rows):  # the pasted pixels fill a rectangle exactly
            box = from_other[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            assert box.all()
        assert targets[0, 0] == pytest.approx(1 - from_other.mean(), abs=1e-6)
        assert targets[0, 1] == pytest.approx(from_other.mean(), abs=1e-6)  # crop 5: person 1
        np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-6)


def test_with_both_a_batch_uses_one_or_the_other() -> None:
    x, labels = _batch(np.random.default_rng(2), side=16)
    kinds = set()
    for k in range(16):
        mixed = mix(x, labels, 4, AugmentSpec(mixup=1.0, cutmix=1.0),
                    tf.constant([k, 1], tf.int64))[0].numpy()
        own = np.isclose(mixed, x.numpy()).all(axis=-1)[0]
        kinds.add("cutmix" if own.any() else "mixup")  # a blend leaves no pixel its own
    assert kinds == {"cutmix", "mixup"}


def test_soft_target_loss_and_accuracy_by_hand() -> None:
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], np.float32)
    soft = np.array([[0.7, 0.3, 0.0], [0.0, 0.4, 0.6]], np.float32)
    eps = 0.1
    smoothed = (1 - eps) * soft + eps / 3
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    by_hand = float(-(smoothed * log_softmax).sum(axis=1).mean())
    assert float(SmoothedSparseCrossentropy(eps)(soft, logits)) == pytest.approx(by_hand, 1e-5)
    # A one-hot soft target is the same loss as its class index.
    loss = make_loss(resolve_config("seed").train, soft=True)
    one_hot = np.eye(3, dtype=np.float32)[[0, 2]]
    assert float(loss(one_hot, logits)) == pytest.approx(float(loss(np.array([0, 2]), logits)))
    # Accuracy counts the largest target class: row 0 (0.7 on 0, top logit 0) right, row 1
    # (0.6 on 2, top logit 2) right; against labels 1 and 1, neither.
    np.testing.assert_array_equal(target_accuracy(soft, logits).numpy(), [1.0, 1.0])
    np.testing.assert_array_equal(target_accuracy(np.array([1, 1]), logits).numpy(), [0., 0.])


def test_mixed_batches_are_a_pure_function_of_the_step() -> None:
    rng = np.random.default_rng(4)
    split = Split(rng.integers(0, 256, (20, 12, 12, 3), dtype=np.uint8),
                  (np.arange(20) % 5).astype(np.int32))
    spec = AugmentSpec(mixup=0.2, cutmix=1.0)
    make = batch_maker(split, spec, 10, 8, seed=2, num_classes=5)
    x3, y3 = make(tf.constant(3))
    assert x3.shape == (8, 10, 10, 3) and y3.shape == (8, 5)
    again = batch_maker(split, spec, 10, 8, seed=2, num_classes=5)(tf.constant(3))
    np.testing.assert_array_equal(x3.numpy(), again[0].numpy())  # resumes exactly
    np.testing.assert_array_equal(y3.numpy(), again[1].numpy())
    assert not np.array_equal(make(tf.constant(4))[1].numpy(), y3.numpy())
    with pytest.raises(ValueError, match="num_classes above the largest label"):
        batch_maker(split, spec, 10, 8, seed=2)


def test_a_mixing_run_trains_and_evaluates_on_plain_labels(tiny_dataset: Path,
                                                           tmp_path: Path) -> None:
    config = resolve_config("fast-cutmix", overrides={
        "model": {"crop_size": 32, "input_size": 32},
        "augment": {"mixup": 0.4},  # both, so each kind of batch is traced
        "train": {"steps": 20, "eval_every": 10, "batch_size": 16, "warmup_steps": 2,
                  "precision": "float32", "sparsity_every": 0}})
    rows = train(tiny_dataset, config, tmp_path / "run", [0], log=lambda _: None)
    assert [r["step"] for r in rows] == [0, 10, 20]
    assert all(0 <= r["eval_accuracy"] <= 1 for r in rows)
    assert rows[-1]["train_loss"] > 0 and 0 <= rows[-1]["train_accuracy"] <= 1
    predictions = np.load(tmp_path / "run" / "predictions.npz")
    assert (predictions["probabilities"].argmax(1) == predictions["labels"]).mean() == (
        pytest.approx(rows[-1]["eval_accuracy"]))


def test_mixing_is_refused_for_an_embedding_head() -> None:
    with pytest.raises(ValueError, match=r"augment\.mixup and augment\.cutmix mix pixels"):
        resolve_config("dlib128", overrides={"augment": {"cutmix": 1.0}})
    assert dataclasses.replace(AugmentSpec(), mixup=0.0) == AugmentSpec()
