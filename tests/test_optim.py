"""The training recipe: 2016 defaults, learning-rate schedules, label smoothing, AdamW and the
weight average, each against a hand computation."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from facefold.config import TrainSpec
from facefold.models.presets import get_preset
from facefold.train.optim import (
    ModernAdam,
    SmoothedSparseCrossentropy,
    learning_rate,
    make_loss,
    make_optimizer,
    swap_average,
)


def test_the_2016_recipe_is_plain_adam_and_cross_entropy() -> None:
    train = get_preset("seed").train
    optimizer = make_optimizer(train)
    assert type(optimizer) is keras.optimizers.Adam  # not ModernAdam: old runs resume unchanged
    assert learning_rate(train) == 1e-3 and not optimizer.use_ema
    assert optimizer.weight_decay is None
    assert type(make_loss(train)) is keras.losses.SparseCategoricalCrossentropy


def test_cosine_schedule_with_warmup_by_hand() -> None:
    # Peak 1e-3, 10 warm-up steps, 110 steps: a linear ramp, then 1e-3 * (1 + cos(pi t)) / 2
    # with t = (step - 10) / 100, and 0 from step 110 on.
    schedule = learning_rate(TrainSpec(learning_rate=1e-3, lr_schedule="cosine",
                                       warmup_steps=10, steps=110))
    by_hand = {0: 0.0, 5: 5e-4, 10: 1e-3, 35: 1e-3 * (1 + math.cos(math.pi / 4)) / 2,
               60: 5e-4, 85: 1e-3 * (1 - math.cos(math.pi / 4)) / 2, 110: 0.0, 150: 0.0}
    for step, value in by_hand.items():
        assert float(schedule(step)) == pytest.approx(value, abs=1e-9), step
    assert by_hand[35] == pytest.approx(8.5355e-4, rel=1e-4)


def test_cosine_without_warmup_and_constant_with_warmup() -> None:
    cosine = learning_rate(TrainSpec(learning_rate=2e-3, lr_schedule="cosine", steps=100))
    assert [float(cosine(s)) for s in (0, 50, 100)] == pytest.approx([2e-3, 1e-3, 0.0], abs=1e-9)
    flat = learning_rate(TrainSpec(learning_rate=2e-3, warmup_steps=20, steps=100))
    assert [float(flat(s)) for s in (0, 10, 20, 99)] == pytest.approx([0, 1e-3, 2e-3, 2e-3],
                                                                      abs=1e-9)


def test_warmup_longer_than_the_run_is_cut_with_a_warning() -> None:
    with pytest.warns(UserWarning, match=r"warmup_steps \(400\) exceeds train.steps \(40\)"):
        schedule = learning_rate(TrainSpec(lr_schedule="cosine", warmup_steps=400, steps=40))
    assert float(schedule(20)) == pytest.approx(5e-4)  # half-way up a 40-step ramp
    assert float(schedule(40)) == pytest.approx(1e-3)


def test_label_smoothing_loss_by_hand() -> None:
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], np.float32)
    labels = np.array([0, 1])
    eps, classes = 0.1, 3
    targets = np.full((2, classes), eps / classes)
    targets[np.arange(2), labels] += 1 - eps  # 0.9333 on the label, 0.0333 elsewhere
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    by_hand = float(-(targets * log_softmax).sum(axis=1).mean())
    assert float(SmoothedSparseCrossentropy(eps)(labels, logits)) == pytest.approx(by_hand,
                                                                                 rel=1e-6)
    plain = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    assert float(SmoothedSparseCrossentropy(0.0)(labels, logits)) == pytest.approx(float(plain))
    assert isinstance(make_loss(TrainSpec(label_smoothing=eps)), SmoothedSparseCrossentropy)


def test_cosface_margin_by_hand() -> None:
    """CosFace: the true class's logit s*cos loses s*m before the (smoothed) softmax."""
    cosines = np.array([[0.8, 0.1, -0.3], [0.2, 0.6, 0.5]], np.float32)
    labels, scale, margin, eps = np.array([0, 2]), 16.0, 0.35, 0.1
    shifted = scale * cosines.astype(np.float64)
    shifted[np.arange(2), labels] -= scale * margin  # 12.8 -> 7.2 and 8.0 -> 2.4
    targets = np.full((2, 3), eps / 3)
    targets[np.arange(2), labels] += 1 - eps
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    by_hand = float(-(targets * log_softmax).sum(axis=1).mean())
    loss = make_loss(TrainSpec(label_smoothing=eps), scale * margin)
    assert float(loss(labels, scale * cosines)) == pytest.approx(by_hand, rel=1e-5)
    assert float(loss(labels, scale * cosines)) > float(make_loss(
        TrainSpec(label_smoothing=eps))(labels, scale * cosines))  # the margin makes it harder
    assert float(make_loss(TrainSpec(), 2.0)(labels, scale * cosines)) == pytest.approx(
        float(SmoothedSparseCrossentropy(0.0, 2.0)(labels, scale * cosines)))


def _dense_model() -> keras.Model:
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2, bias_initializer="ones")(inputs))


def test_adamw_decays_kernels_but_not_biases() -> None:
    model = _dense_model()
    kernel, bias = (w.numpy().copy() for w in model.trainable_variables)
    optimizer = ModernAdam(0.1, weight_decay=0.5)
    # Zero gradients: Adam's step is 0, so only the decay acts: w -> w * (1 - 0.1 * 0.5).
    optimizer.apply_gradients([(np.zeros_like(kernel), model.trainable_variables[0]),
                               (np.zeros_like(bias), model.trainable_variables[1])])
    np.testing.assert_allclose(model.trainable_variables[0].numpy(), kernel * 0.95, rtol=1e-6)
    np.testing.assert_array_equal(model.trainable_variables[1].numpy(), bias)


def test_weight_average_by_hand_and_the_swap_is_exact() -> None:
    model = _dense_model()
    model.compile(optimizer=make_optimizer(TrainSpec(learning_rate=0.1, ema_decay=0.15)),
                  loss="mse")
    x, y = np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32)
    swap_average(model)  # nothing to swap before the first update
    seen = []
    for _ in range(3):
        model.train_on_batch(x, y)
        seen.append([w.numpy().copy() for w in model.trainable_variables])
    # Update 0 copies the weights; update t uses momentum min(0.15, (1 + t) / (10 + t)):
    # 1/10 -> 2/11 = 0.1818 at t = 1, so 0.15; at t = 2, 3/12 = 0.25, so 0.15 again.
    first = [0.15 * a + 0.85 * b for a, b in zip(seen[0], seen[1], strict=True)]
    expected = [0.15 * a + 0.85 * b for a, b in zip(first, seen[2], strict=True)]
    for average, value in zip(model.optimizer.averages, expected, strict=True):
        np.testing.assert_allclose(average.numpy(), value, rtol=1e-6)
    swap_average(model)
    for weight, value in zip(model.trainable_variables, expected, strict=True):
        np.testing.assert_allclose(weight.numpy(), value, rtol=1e-6)
    swap_average(model)  # and back, bit for bit
    for weight, value in zip(model.trainable_variables, seen[-1], strict=True):
        np.testing.assert_array_equal(weight.numpy(), value)


def test_the_average_forgets_the_initial_weights_early() -> None:
    """With a high decay the momentum still starts low: (1 + t) / (10 + t)."""
    model = _dense_model()
    model.compile(optimizer=make_optimizer(TrainSpec(learning_rate=0.1, ema_decay=0.999)),
                  loss="mse")
    x, y = np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32)
    model.train_on_batch(x, y)
    after_one = [w.numpy().copy() for w in model.trainable_variables]
    model.train_on_batch(x, y)
    momentum = 2 / 11  # update t = 1
    for average, old, new in zip(model.optimizer.averages, after_one,
                                 model.trainable_variables, strict=True):
        np.testing.assert_allclose(average.numpy(), momentum * old + (1 - momentum) * new.numpy(),
                                   rtol=1e-6)
