"""The embedding family: a classifier head on a pretrained face embedding.

The embedding itself (e.g. dlib's 128-d descriptor, see
:mod:`facefold.embeddings.dlib128`) is computed once per image outside the
model and cached; the head is the only part trained, under the same trainer,
folds, checkpoints and reports as the CNNs.

Input: ``(B, V, D)`` float32, V views of each image's embedding: 1 in
training (the image or, with flip augmentation, sometimes its mirror) and at
inference without TTA, 2 (image, mirror) with ``tta_flip``. Each view goes
through the ``dense_units`` hidden layers (``fc1`` …, ReLU) and ``dropout``;
:class:`ViewMean` averages the views' features, and the logits layer
(``logits``: linear, or :class:`~facefold.models.cnn.CosineLogits` when
``cosine_scale`` > 0)
maps the mean to ``(B, num_classes)`` float32 logits. With no hidden layer
and linear logits the head is multinomial logistic regression on the
embedding.

On an embedding cut before the pretrained network's last layers (``dlib128-pool``, see
:data:`facefold.config.EMBEDDING_TOPS`), the head begins with those layers, initialised from
the network's weights and trained at a fraction of the learning rate (:class:`TopDense`): the
head then fine-tunes the top of the pretrained network, and the features it compares are the
fine-tuned embedding.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from facefold.config import EMBEDDING_DIMS, EMBEDDING_TOPS, ModelSpec

# The CNN's seed offsets, so a head's initial weights follow the same rule.
from facefold.models.cnn import (
    _SEED_DENSE,
    _SEED_DROPOUT,
    DENSE_NAME,
    ResumableDropout,
    logits_layer,
)


@keras.saving.register_keras_serializable(package="facefold")
class ViewMean(keras.layers.Layer):
    """Features of V views (B, V, D) -> their mean (B, D): the head's flip TTA, placed before the
    logits layer as the CNN's :class:`~facefold.models.cnn.TwinMean` (with linear logits, the
    mean of the views' logits)."""

    def call(self, features: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(features, axis=1)


@keras.saving.register_keras_serializable(package="facefold")
class TopDense(keras.layers.Layer):
    """A pretrained fc without bias, (B, V, D) -> (B, V, units), trained ``lr_scale`` times as
    fast as the rest of the head.

    The kernel is stored divided by ``lr_scale``: Adam moves every stored value by about the
    learning rate per step whatever the size of its gradient, so the kernel itself moves
    ``lr_scale`` times as far. That gives this layer its own small learning rate under the
    one optimizer, schedule and checkpoint of the trainer. ``kernel`` (D, units) is the
    initial kernel (None: zeros, for a head whose weights are set right after it is built).
    """

    def __init__(self, units: int, lr_scale: float, kernel: np.ndarray | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not lr_scale > 0:
            raise ValueError(f"lr_scale must be > 0, got {lr_scale}")
        self.units, self.lr_scale, self._initial = units, lr_scale, kernel

    def build(self, input_shape: tuple) -> None:
        self.stored = self.add_weight(name="kernel", shape=(input_shape[-1], self.units),
                                      initializer="zeros")
        if self._initial is not None:
            self.stored.assign(np.asarray(self._initial, np.float32) / self.lr_scale)

    @property
    def kernel(self) -> tf.Tensor:
        """The fc's kernel (D, units) as the network applies it."""
        return self.stored * self.lr_scale

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.linalg.matmul(x, tf.cast(self.kernel, x.dtype))

    def compute_output_shape(self, shape: tuple) -> tuple:
        return (*shape[:-1], self.units)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "lr_scale": self.lr_scale}


TOP_NAME = "top_fc"  # the TopDense layer of a head on a cut embedding


def build_head(
    spec: ModelSpec, num_classes: int, precision: str = "float32", seed: int = 0,
    top_kernel: np.ndarray | None = None,
) -> keras.Model:
    """Build the head for ``spec`` (``spec.embedding`` set) with ``num_classes`` outputs.

    ``precision`` as for :func:`facefold.models.cnn.build_model` (the hidden
    layers compute in it; the logits are float32); ``seed`` fixes the initial
    weights and dropout masks, with the CNN's seed offsets. On an embedding with a top
    (:data:`~facefold.config.EMBEDDING_TOPS`), ``top_kernel`` is the pretrained kernel the
    head's first layer starts from (None: zeros, for weights set right after).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if spec.embedding not in EMBEDDING_DIMS:
        raise ValueError(f"model.embedding must be one of {', '.join(EMBEDDING_DIMS)}, "
                         f"got {spec.embedding!r}")
    compute = "mixed_bfloat16" if precision == "bfloat16" else "float32"
    inputs = keras.Input((None, EMBEDDING_DIMS[spec.embedding]), name="embedding")  # (B, V, D)
    x = inputs
    top = EMBEDDING_TOPS.get(spec.embedding)
    if top is not None:  # float32: the pretrained kernel's small steps need its precision
        x = TopDense(top["units"], top["lr_scale"], top_kernel, name=TOP_NAME)(x)  # (B, V, 128)
    for i, units in enumerate(spec.dense_units, start=1):
        x = keras.layers.Dense(
            units, activation="relu",
            kernel_initializer=keras.initializers.TruncatedNormal(
                stddev=spec.dense_init_std, seed=seed * 1000 + _SEED_DENSE + i),
            bias_initializer=keras.initializers.Constant(spec.dense_bias_init),
            dtype=compute, name=DENSE_NAME.format(i),
        )(x)  # (B, V, units)
    if spec.dropout:
        x = ResumableDropout(
            spec.dropout, seed=seed * 1000 + _SEED_DROPOUT, dtype=compute, name="dropout"
        )(x)
    x = ViewMean(dtype="float32", name="view_mean")(x)  # (B, D')
    logits = logits_layer(spec, num_classes, seed)(x)  # (B, classes)
    return keras.Model(inputs, logits, name="head")
