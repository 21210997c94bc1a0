"""The plain Keras peer: facefold's 2016-style network as a Keras tutorial would write it,
the independent step that facefold's training step is timed against.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from facefold.config import ModelSpec
from facefold.models.cnn import RESIZE_ARGS

PEER = "plain Keras "


def plain_keras_model(spec: ModelSpec, num_classes: int, precision: str) -> keras.Model:
    """The same network as :func:`~facefold.models.cnn.build_model` for a 2016-style spec,
    written the way a Keras tutorial would: one ``Sequential`` of stock layers, Keras's
    default initializers, the mixed-precision policy on every layer. The independent peer
    that facefold's training step is timed against (it is never trained for accuracy)."""
    if spec.batch_norm or spec.residual or spec.global_pool or spec.tta_flip:
        raise ValueError("the plain Keras peer is the 2016 architecture: no batch norm, "
                         "residual blocks, global pooling or flip TTA")
    compute = "mixed_bfloat16" if precision == "bfloat16" else "float32"
    layers: list[keras.layers.Layer] = [
        keras.Input((spec.crop_size, spec.crop_size, spec.channels))]
    if spec.input_size != spec.crop_size:
        interpolation, antialias = RESIZE_ARGS[spec.resize]
        layers.append(keras.layers.Resizing(spec.input_size, spec.input_size,
                                            interpolation=interpolation, antialias=antialias))
    layers.append(keras.layers.Lambda(tf.image.per_image_standardization))
    for width in spec.conv_channels:
        layers += [
            keras.layers.Conv2D(width, spec.kernel_size, padding="same", activation="relu",
                                dtype=compute),
            keras.layers.MaxPool2D(spec.pool_size, strides=2, padding="same", dtype=compute),
        ]
    layers.append(keras.layers.Flatten(dtype=compute))
    decay = keras.regularizers.L2(spec.weight_decay / 2) if spec.weight_decay else None
    layers += [keras.layers.Dense(units, activation="relu", kernel_regularizer=decay,
                                  dtype=compute) for units in spec.dense_units]
    layers.append(keras.layers.Dense(num_classes, dtype="float32"))
    model = keras.Sequential(layers, name="plain_keras")
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model
