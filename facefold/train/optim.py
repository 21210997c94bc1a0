"""Optimizer, learning-rate schedule and loss of a run, from its ``TrainSpec``.

With every option at its default this is the 2016 recipe, built exactly as
before (``keras.optimizers.Adam`` at a constant rate, sparse cross-entropy on
logits), so existing runs train and resume unchanged. The modern options:

* ``lr_schedule`` / ``warmup_steps``: a Keras ``CosineDecay`` schedule. It is
  a function of the optimizer's update count, which the checkpoint holds, so
  a resumed run continues the same curve.
* ``adamw_decay``: decoupled weight decay (AdamW) on the conv and dense
  kernels; biases and batch-norm scales and offsets are not decayed.
* ``label_smoothing``, ``model.cosine_margin`` on cosine logits, and the soft
  targets of ``augment.mixup`` / ``augment.cutmix``: :class:`SmoothedSparseCrossentropy`.
* ``ema_decay``: Keras's own weight average (``use_ema``), kept *beside* the
  model: :class:`ModernAdam` never copies it into the model (Keras would do so
  at the end of every ``fit``, i.e. at every evaluation, and training would
  restart from the average). :func:`swap_average` exchanges the model's
  weights with the averages; the trainer keeps the averages in the model
  except while it trains (:func:`training_weights`), so evaluation, the saved
  checkpoints and therefore predict, export and serve all use them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import keras
import tensorflow as tf

from facefold.config import Config, TrainSpec
from facefold.models.families import family_of

LearningRate = float | keras.optimizers.schedules.LearningRateSchedule


def learning_rate(train: TrainSpec) -> LearningRate:
    """The learning rate of ``train``: a float for the 2016 constant rate, else a schedule.

    Both schedules ramp linearly from 0 to ``learning_rate`` over
    ``warmup_steps``; ``cosine`` then follows half a cosine down to 0 at
    ``steps``, ``constant`` stays flat. Update ``k`` (from 1) uses the rate at
    step ``k - 1``. A warm-up longer than the run is cut to ``steps``, with a warning.
    """
    peak = train.learning_rate
    if train.lr_schedule == "constant" and not train.warmup_steps:
        return peak
    warmup = min(train.warmup_steps, train.steps)
    if warmup < train.warmup_steps:
        warnings.warn(
            f"train.warmup_steps ({train.warmup_steps}) exceeds train.steps ({train.steps}): "
            f"the warm-up is cut to {warmup} steps",
            stacklevel=2,
        )
    # CosineDecay ends at alpha * peak: alpha = 1 is a flat rate after the warm-up.
    alpha = 0.0 if train.lr_schedule == "cosine" else 1.0
    decay_steps = max(train.steps - warmup, 1)  # Keras refuses 0
    if not warmup:
        return keras.optimizers.schedules.CosineDecay(peak, decay_steps, alpha=alpha)
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps, alpha=alpha, warmup_target=peak, warmup_steps=warmup
    )


@keras.saving.register_keras_serializable(package="facefold")
class ModernAdam(keras.optimizers.Adam):
    """Adam with decoupled weight decay on kernels only and a weight average kept beside the model.

    Takes Keras ``Adam``'s arguments (``weight_decay``, ``use_ema``,
    ``ema_momentum``, …). Three differences from Keras's Adam: variables with
    fewer than 2 dimensions (biases, batch-norm scales and offsets) are never
    decayed, the usual AdamW practice; the average's momentum grows to
    ``ema_momentum`` as ``(1 + t) / (10 + t)`` over the updates ``t``; and
    ``fit`` leaves the model's weights alone at its end (Keras would overwrite
    them with the average), see :func:`swap_average`.
    """

    def build(self, variables: list) -> None:
        # Decided from shapes, so a run rebuilt from its checkpoint decays the same variables.
        self.exclude_from_weight_decay(var_list=[v for v in variables if len(v.shape) < 2])
        super().build(variables)

    def _update_model_variables_moving_average(self, trainable_variables: list) -> None:
        # Keras uses ema_momentum from the second update on, so after n updates the random
        # initial weights still weigh momentum**n: 37 % after 1 / (1 - momentum) updates, the
        # first evaluation of a run. As TensorFlow's ExponentialMovingAverage(num_updates),
        # update t (from 0) uses min(momentum, (1 + t) / (10 + t)); update 0 copies.
        step = keras.ops.cast(self.iterations, "float32")
        momentum = keras.ops.minimum(self.ema_momentum, (1.0 + step) / (10.0 + step))
        momentum = keras.ops.where(step > 0, momentum, 0.0)
        for weight, average in zip(trainable_variables, self._model_variables_moving_average,
                                   strict=True):
            rate = keras.ops.cast(momentum, weight.dtype)
            average.assign(rate * average + (1 - rate) * weight)

    def finalize_variable_values(self, var_list: list) -> None:
        """Do nothing: the trainer decides when the model holds the average."""

    @property
    def averages(self) -> list:
        """The weight averages, in the order of the model's trainable variables (built only)."""
        return list(self._model_variables_moving_average)


def make_optimizer(train: TrainSpec) -> keras.optimizers.Optimizer:
    """The optimizer of ``train``: Keras Adam for the 2016 recipe, else :class:`ModernAdam`."""
    rate = learning_rate(train)
    if not train.adamw_decay and not train.ema_decay:
        return keras.optimizers.Adam(rate)
    return ModernAdam(
        rate,
        weight_decay=train.adamw_decay or None,
        use_ema=bool(train.ema_decay),
        ema_momentum=train.ema_decay or 0.99,  # Keras's default; unused without use_ema
    )


def is_soft(y_true: tf.Tensor, y_pred: tf.Tensor) -> bool:
    """True when ``y_true`` holds soft targets (B, C), one row per image as mixup and cutmix
    make them, rather than class indices (B,) or (B, 1). Decided on static shapes: Keras
    casts labels to the loss's float dtype before a loss sees them."""
    return len(y_true.shape) == 2 and y_true.shape[-1] == y_pred.shape[-1] != 1


def targets(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Target distributions (B, C) in ``y_pred``'s dtype: soft targets as they are, class
    indices one-hot."""
    if is_soft(y_true, y_pred):
        return tf.cast(y_true, y_pred.dtype)
    labels = tf.reshape(tf.cast(y_true, tf.int32), [-1])
    return tf.one_hot(labels, tf.shape(y_pred)[-1], dtype=y_pred.dtype)


@keras.saving.register_keras_serializable(package="facefold")
def target_accuracy(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """1 where the top logit is the label, or with soft targets their largest class (a
    mixed crop counts for the person it shows most of)."""
    top = tf.argmax(targets(y_true, y_pred), axis=-1)
    return tf.cast(tf.equal(tf.argmax(y_pred, axis=-1), top), tf.float32)


@keras.saving.register_keras_serializable(package="facefold")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of logits against labels or soft targets, with label smoothing and a margin.

    ``y_true`` (B,) int class indices or soft targets (B, C) (:func:`is_soft`),
    ``y_pred`` (B, C) logits. The target of an image of class ``y`` is
    ``1 - label_smoothing + label_smoothing / C`` on ``y`` and
    ``label_smoothing / C`` on every other class (a soft target ``t`` becomes
    ``(1 - label_smoothing) t + label_smoothing / C``). Keras's sparse
    cross-entropy has no smoothing; its categorical one does, on one-hot labels.
    ``margin`` is subtracted from the logits in proportion to the target first: with cosine
    logits ``s * cos`` and ``margin = s * m`` this is CosFace's loss (Wang et
    al., 2018), which asks each image to be nearer its class than any other by
    the angle margin ``m``.
    """

    def __init__(self, label_smoothing: float, margin: float = 0.0,
                 name: str = "smoothed_crossentropy", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.label_smoothing, self.margin = label_smoothing, margin

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        target = targets(y_true, y_pred)  # one-hot, or the soft targets of mixup/cutmix
        if self.margin:
            y_pred = y_pred - self.margin * target
        return keras.losses.categorical_crossentropy(
            target, y_pred, from_logits=True, label_smoothing=self.label_smoothing
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing,
                "margin": self.margin}


def make_loss(train: TrainSpec, margin: float = 0.0, soft: bool = False) -> keras.losses.Loss:
    """Cross-entropy on logits, smoothed when ``train.label_smoothing`` > 0, with ``margin``
    taken off the true class's logit, for soft targets too when ``soft`` (see
    :class:`SmoothedSparseCrossentropy`)."""
    if train.label_smoothing or margin or soft:
        return SmoothedSparseCrossentropy(train.label_smoothing, margin)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _weight_pairs(model: keras.Model) -> list[tuple[Any, Any]]:
    """``(weight, its average)`` pairs, or none while there is no average to swap.

    None without an averaging optimizer, before it is built, and before the
    first update (the average is then the weights themselves: Keras starts it
    with a copy at update 1, and a freshly loaded step-0 checkpoint holds zeros).
    """
    optimizer = getattr(model, "optimizer", None)
    if not isinstance(optimizer, ModernAdam) or not optimizer.use_ema or not optimizer.built:
        return []
    if int(optimizer.iterations) == 0:
        return []
    return list(zip(model.trainable_variables, optimizer.averages, strict=True))


def keeps_average(model: keras.Model) -> bool:
    """True when ``model``'s optimizer holds a weight average to swap with its weights (see
    :func:`_weight_pairs` for when it does not)."""
    return bool(_weight_pairs(model))


def swap_average(model: keras.Model) -> None:
    """Exchange ``model``'s trainable weights with the optimizer's averages of them, exactly.

    Doing it twice restores both. A no-op when the run keeps no average (see
    :func:`_weight_pairs`).
    """
    for weight, average in _weight_pairs(model):
        raw = keras.ops.convert_to_numpy(weight)
        weight.assign(average)
        average.assign(raw)


@contextmanager
def training_weights(model: keras.Model) -> Iterator[None]:
    """Inside: the model holds the weights being trained. Around it: their averages.

    The trainer keeps a model with ``train.ema_decay`` > 0 in its evaluation
    form — averages in the model, raw weights in the optimizer's ``average``
    slots — which is also how checkpoints are saved; training happens in here.
    """
    swap_average(model)
    try:
        yield
    finally:
        swap_average(model)


def compile_model(model: keras.Model, config: Config) -> None:
    """Attach the training setup (also used by bench): the optimizer and cross-entropy loss of
    ``config.train`` (2016 defaults: Adam, plain cross-entropy on logits; CosFace's margin
    with ``model.cosine_margin``; soft targets with mixup, cutmix or a teacher), accuracy."""
    soft = family_of(config).soft_targets(config)
    model.compile(
        optimizer=make_optimizer(config.train),
        loss=make_loss(config.train, config.model.cosine_scale * config.model.cosine_margin,
                       soft),
        metrics=[keras.metrics.MeanMetricWrapper(target_accuracy, name="accuracy") if soft
                 else keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=False,  # XLA measured slower than oneDNN for this model on CPU
    )
