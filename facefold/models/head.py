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
"""

from __future__ import annotations

import keras
import tensorflow as tf

from facefold.config import EMBEDDING_DIMS, ModelSpec

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


def build_head(
    spec: ModelSpec, num_classes: int, precision: str = "float32", seed: int = 0
) -> keras.Model:
    """Build the head for ``spec`` (``spec.embedding`` set) with ``num_classes`` outputs.

    ``precision`` as for :func:`facefold.models.cnn.build_model` (the hidden
    layers compute in it; the logits are float32); ``seed`` fixes the initial
    weights and dropout masks, with the CNN's seed offsets.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if spec.embedding not in EMBEDDING_DIMS:
        raise ValueError(f"model.embedding must be one of {', '.join(EMBEDDING_DIMS)}, "
                         f"got {spec.embedding!r}")
    compute = "mixed_bfloat16" if precision == "bfloat16" else "float32"
    inputs = keras.Input((None, EMBEDDING_DIMS[spec.embedding]), name="embedding")  # (B, V, D)
    x = inputs
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
