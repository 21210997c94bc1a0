"""The plain CNN family: N x [conv -> ReLU -> max-pool], then dense layers, then logits.

One builder loops over the widths in a :class:`~facefold.config.ModelSpec`; the
2016 ``seed`` model and all its ablations are specs, not copies of this code.

Input: a batch of square face crops, float32 in [0, 1], shape
``(B, crop_size, crop_size, channels)``. The model resizes to ``input_size``
and standardizes each image itself, so prediction needs only the crop.
Output: float32 logits ``(B, num_classes)``.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from facefold.config import ModelSpec

# Layer names are part of the API: sparsity tracking and activation grids look them up.
CONV_NAME = "conv{}"
DENSE_NAME = "fc{}"


@keras.saving.register_keras_serializable(package="facefold")
class PerImageStandardization(keras.layers.Layer):
    """``tf.image.per_image_standardization``: zero mean, unit variance per image."""

    def call(self, images: tf.Tensor) -> tf.Tensor:
        return tf.image.per_image_standardization(images)


def build_model(
    spec: ModelSpec, num_classes: int, precision: str = "float32", seed: int = 0
) -> keras.Model:
    """Build the CNN for ``spec`` with ``num_classes`` outputs.

    ``precision`` is ``"float32"`` or ``"bfloat16"`` (mixed: bfloat16 compute,
    float32 weights; preprocessing and logits stay float32). ``seed`` fixes
    the initial weights.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"precision must be float32 or bfloat16 here, got {precision!r}")
    compute = "mixed_bfloat16" if precision == "bfloat16" else "float32"
    inputs = keras.Input((spec.crop_size, spec.crop_size, spec.channels), name="crop")
    x = inputs
    if spec.input_size != spec.crop_size:
        x = keras.layers.Resizing(
            spec.input_size, spec.input_size, antialias=True, dtype="float32", name="resize"
        )(x)
    x = PerImageStandardization(dtype="float32", name="standardize")(x)  # (B, S, S, C)
    for i, width in enumerate(spec.conv_channels, start=1):
        x = keras.layers.Conv2D(
            width,
            spec.kernel_size,
            padding="same",
            activation="relu",
            kernel_initializer=keras.initializers.TruncatedNormal(
                stddev=spec.conv_init_std, seed=seed * 1000 + i
            ),
            dtype=compute,
            name=CONV_NAME.format(i),
        )(x)
        x = keras.layers.MaxPool2D(
            spec.pool_size, strides=2, padding="same", dtype=compute, name=f"pool{i}"
        )(x)  # (B, S/2^i, S/2^i, width)
    x = keras.layers.Flatten(dtype=compute, name="flatten")(x)
    decay = keras.regularizers.L2(spec.weight_decay / 2) if spec.weight_decay else None
    for i, units in enumerate(spec.dense_units, start=1):
        x = keras.layers.Dense(
            units,
            activation="relu",
            kernel_initializer=keras.initializers.TruncatedNormal(
                stddev=spec.dense_init_std, seed=seed * 1000 + 100 + i
            ),
            bias_initializer=keras.initializers.Constant(spec.dense_bias_init),
            kernel_regularizer=decay,
            dtype=compute,
            name=DENSE_NAME.format(i),
        )(x)
    logits = keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.TruncatedNormal(
            stddev=spec.dense_init_std, seed=seed * 1000 + 199
        ),
        dtype="float32",  # softmax and loss in float32 whatever the compute precision
        name="logits",
    )(x)
    return keras.Model(inputs, logits, name="cnn")


def relu_layer_names(model: keras.Model) -> list[str]:
    """Names of the layers whose outputs are ReLU activations (conv and hidden dense)."""
    return [
        layer.name
        for layer in model.layers
        if layer.name.startswith(("conv", "fc")) and layer.name[-1].isdigit()
    ]
