"""The CNN family: N conv stages with max-pooling, then dense layers, then logits.

One builder loops over the widths in a :class:`~facefold.config.ModelSpec`; the
2016 ``seed`` model, its ablations and the modern presets are specs, not copies
of this code.

A stage is, by the spec's switches (all off = the 2016 stage)::

    plain        conv3x3+ReLU                                 -> max-pool 3/2
    batch_norm   conv3x3 -> BN -> ReLU                        -> max-pool 3/2
    residual     conv3x3 [BN] ReLU conv3x3 [BN] [drop_path] + shortcut -> ReLU -> max-pool 3/2
                 (shortcut: identity, or a 1x1 conv [BN] where the width changes;
                 stages 2.. only: stage 1 stays one conv, a stem, as a residual block at
                 full resolution would cost about as much as all the later stages)

then flatten (or ``global_pool``: global average pooling), the hidden dense
layers, ``dropout`` and the logits (:func:`logits_layer`: linear, or a cosine
classifier with ``cosine_scale``). ``tta_flip`` makes inference (any call
with ``training`` false: evaluate, predict, exports) return the mean of the
logits of each image and its mirror; training is unaffected.

Input: a batch of square face crops, float32 in [0, 1], shape
``(B, crop_size, crop_size, channels)``. The model resizes to ``input_size``
(``resize``: :data:`RESIZE_ARGS`) and then standardizes each image itself, so
prediction needs only the crop.
Output: float32 logits ``(B, num_classes)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from facefold.choices import PRECISIONS
from facefold.config import ModelSpec

# Layer names are part of the API: sparsity tracking and activation grids look them up.
# "conv{i}" is always the ReLU output of stage i (in the 2016 stage, the conv itself with
# its fused ReLU); with batch norm or residual blocks the convs are "conv{i}a", "conv{i}b"
# and "conv{i}_shortcut", each followed by "<name>_bn".
CONV_NAME = "conv{}"
DENSE_NAME = "fc{}"
# Offsets of the initializer seeds: seed * 1000 + offset + stage (or dense layer) index.
_SEED_CONV_B, _SEED_SHORTCUT, _SEED_DENSE, _SEED_DROPOUT, _SEED_LOGITS = 30, 60, 100, 198, 199
_SEED_DROP_PATH = 250


@keras.saving.register_keras_serializable(package="facefold")
class PerImageStandardization(keras.layers.Layer):
    """``tf.image.per_image_standardization``: zero mean, unit variance per image."""

    def call(self, images: tf.Tensor) -> tf.Tensor:
        return tf.image.per_image_standardization(images)


@keras.saving.register_keras_serializable(package="facefold")
class FlipTwin(keras.layers.Layer):
    """Test-time flip, first half: at inference, images (B, H, W, C) -> (2B, H, W, C), the
    images followed by their left-right mirrors; unchanged when ``training``.

    Every later layer works per image, so one doubled batch computes both views;
    :class:`TwinMean` folds them back.
    """

    def call(self, images: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if training:
            return images
        return tf.concat([images, tf.reverse(images, axis=[2])], axis=0)


@keras.saving.register_keras_serializable(package="facefold")
class TwinMean(keras.layers.Layer):
    """Test-time flip, second half: at inference, features (2B, D) from :class:`FlipTwin`'s
    doubled batch -> (B, D), the mean of each image's two views; unchanged when ``training``.

    Placed just before the (affine) logits layer, the mean of the features gives
    exactly the mean of the two views' logits, and the features an export returns
    are the averaged ones.
    """

    def call(self, features: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if training:
            return features
        image, mirror = tf.split(features, 2, axis=0)
        return 0.5 * (image + mirror)


@keras.saving.register_keras_serializable(package="facefold")
class ResumableDropout(keras.layers.Dropout):
    """Keras dropout whose random state is saved with the model.

    Keras 3.15 leaves a Dropout's seed-generator state out of ``model.save``, so a
    run resumed from a checkpoint would draw other masks than the uninterrupted
    run; saving it keeps resumed runs bit-identical.
    """

    def save_own_variables(self, store: Any) -> None:
        store["seed_state"] = self.seed_generator.state.numpy()

    def load_own_variables(self, store: Any) -> None:
        self.seed_generator.state.assign(store["seed_state"])


@keras.saving.register_keras_serializable(package="facefold")
class FusedBatchNorm(keras.layers.BatchNormalization):
    """Keras batch norm (NHWC, last axis) whose training pass is TensorFlow's fused kernel.

    Keras 3 computes batch norm from separate ops, in float32 even under
    bfloat16, and differentiates through each; on this CPU that made a
    residual model 3x slower than its FLOPs. The fused kernel (and its fused
    gradient) does the same normalization in one pass. Inference, where Keras's
    ops are cheap and convert to TFLite, is Keras's own. As in Keras, the moving
    statistics move towards each batch's mean and (biased) variance by ``1 - momentum``.
    """

    def call(self, inputs: tf.Tensor, training: bool | None = None,
             mask: tf.Tensor | None = None) -> tf.Tensor:
        if not training or not self.trainable:
            return super().call(inputs, training=training, mask=mask)
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma, self.beta, epsilon=self.epsilon, is_training=True
        )
        # The kernel returns the unbiased (n - 1) variance; Keras's moving variance is biased.
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
        variance = variance * (count - 1) / count
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1 - self.momentum)
        )
        return outputs


def _conv(
    x: tf.Tensor, width: int, kernel: int, name: str, spec: ModelSpec, compute: str,
    init_seed: int, relu: bool = False, zero_gamma: bool = False,
) -> tf.Tensor:
    """Conv ``name`` (SAME, stride 1) with ``width`` outputs, then, if ``relu``, ReLU.

    With ``spec.batch_norm`` a batch norm ``<name>_bn`` follows the conv (which
    then has no bias: the norm's offset replaces it) and the ReLU is a layer
    ``<name>_relu``; without, the ReLU is fused into the conv, as in 2016.
    ``zero_gamma`` starts the norm's scale at 0, so a residual branch that ends
    in it starts as its shortcut (a common trick that steadies early training).
    """
    x = keras.layers.Conv2D(
        width,
        kernel,
        padding="same",
        activation="relu" if relu and not spec.batch_norm else None,
        use_bias=not spec.batch_norm,
        kernel_initializer=keras.initializers.TruncatedNormal(
            stddev=spec.conv_init_std, seed=init_seed
        ),
        dtype=compute,
        name=name,
    )(x)
    if not spec.batch_norm:
        return x
    x = FusedBatchNorm(
        gamma_initializer="zeros" if zero_gamma else "ones", dtype=compute, name=f"{name}_bn"
    )(x)
    return keras.layers.ReLU(dtype=compute, name=f"{name}_relu")(x) if relu else x


def _conv_stage(
    x: tf.Tensor, i: int, width: int, spec: ModelSpec, compute: str, seed: int
) -> tf.Tensor:
    """Stage ``i`` (from 1) before its pooling: (B, S, S, C_in) -> (B, S, S, width), the
    ReLU output named ``conv{i}`` (see the module docstring for the three kinds)."""
    name, k, init_seed = CONV_NAME.format(i), spec.kernel_size, seed * 1000 + i
    residual = spec.residual and i > 1  # stage 1 stays one conv: the stem
    if not spec.batch_norm and not residual:
        return _conv(x, width, k, name, spec, compute, init_seed, relu=True)  # the 2016 stage
    y = _conv(x, width, k, f"{name}a", spec, compute, init_seed, relu=residual)
    if residual:
        y = _conv(y, width, k, f"{name}b", spec, compute, init_seed + _SEED_CONV_B,
                  zero_gamma=True)
        shortcut = x if x.shape[-1] == width else _conv(
            x, width, 1, f"{name}_shortcut", spec, compute, init_seed + _SEED_SHORTCUT
        )
        if spec.drop_path:  # the whole branch of an image, scaled by 1 / (1 - rate) when kept
            rate = spec.drop_path * (i - 1) / (len(spec.conv_channels) - 1)
            y = ResumableDropout(rate, noise_shape=(None, 1, 1, 1),
                                 seed=seed * 1000 + _SEED_DROP_PATH + i, dtype=compute,
                                 name=f"{name}_drop_path")(y)
        y = keras.layers.Add(dtype=compute, name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(dtype=compute, name=name)(y)


@keras.saving.register_keras_serializable(package="facefold")
class CosineLogits(keras.layers.Layer):
    """Logits ``scale * cos(feature, w_c)`` (B, classes): a cosine classifier.

    Features and class weights are L2-normalized, so a logit depends on the
    angle only and its range is fixed (±``scale``); a fixed scale keeps the
    softmax from saturating or staying flat.
    """

    def __init__(self, units: int, scale: float, seed: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units, self.scale, self.seed = units, scale, seed

    def build(self, input_shape: tuple) -> None:
        self.kernel = self.add_weight(
            name="kernel", shape=(input_shape[-1], self.units),
            initializer=keras.initializers.GlorotUniform(seed=self.seed),
        )

    def call(self, features: tf.Tensor) -> tf.Tensor:
        x = tf.math.l2_normalize(features, axis=-1)
        w = tf.math.l2_normalize(self.kernel, axis=0)
        return self.scale * tf.matmul(x, w)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "scale": self.scale,
                "seed": self.seed}


def logits_layer(spec: ModelSpec, num_classes: int, seed: int) -> keras.layers.Layer:
    """The last layer of a CNN or head, named ``logits``, in float32 whatever the compute
    precision (softmax and loss stay float32): linear, or :class:`CosineLogits` when
    ``spec.cosine_scale`` > 0."""
    if spec.cosine_scale:
        return CosineLogits(num_classes, spec.cosine_scale, seed=seed * 1000 + _SEED_LOGITS,
                            dtype="float32", name="logits")
    return keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.TruncatedNormal(
            stddev=spec.dense_init_std, seed=seed * 1000 + _SEED_LOGITS),
        dtype="float32", name="logits",
    )


# model.resize -> keras.layers.Resizing's (interpolation, antialias). All three are linear
# and separable, which MatrixResize (facefold.models.inference) relies on for exports.
RESIZE_ARGS = {"antialias": ("bilinear", True), "bilinear": ("bilinear", False),
               "area": ("area", False)}


def build_model(
    spec: ModelSpec, num_classes: int, precision: str = "float32", seed: int = 0
) -> keras.Model:
    """Build the CNN for ``spec`` with ``num_classes`` outputs.

    ``precision`` is ``"float32"`` or ``"bfloat16"`` (mixed: bfloat16 compute,
    float32 weights; preprocessing and logits stay float32). ``seed`` fixes
    the initial weights (and the dropout masks).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be float32 or bfloat16 here, got {precision!r}")
    compute = "mixed_bfloat16" if precision == "bfloat16" else "float32"
    inputs = keras.Input((spec.crop_size, spec.crop_size, spec.channels), name="crop")
    x = inputs
    if spec.tta_flip:
        x = FlipTwin(dtype="float32", name="tta_flip")(x)  # inference: (2B, crop, crop, C)
    if spec.input_size != spec.crop_size:
        interpolation, antialias = RESIZE_ARGS[spec.resize]
        x = keras.layers.Resizing(spec.input_size, spec.input_size, interpolation=interpolation,
                                  antialias=antialias, dtype="float32", name="resize")(x)
    x = PerImageStandardization(dtype="float32", name="standardize")(x)  # (B, S, S, C)
    for i, width in enumerate(spec.conv_channels, start=1):
        x = _conv_stage(x, i, width, spec, compute, seed)
        x = keras.layers.MaxPool2D(
            spec.pool_size, strides=2, padding="same", dtype=compute, name=f"pool{i}"
        )(x)  # (B, S/2^i, S/2^i, width)
    if spec.global_pool:
        x = keras.layers.GlobalAveragePooling2D(dtype=compute, name="global_pool")(x)  # (B, C)
    else:
        x = keras.layers.Flatten(dtype=compute, name="flatten")(x)
    decay = keras.regularizers.L2(spec.weight_decay / 2) if spec.weight_decay else None
    for i, units in enumerate(spec.dense_units, start=1):
        x = keras.layers.Dense(
            units,
            activation="relu",
            kernel_initializer=keras.initializers.TruncatedNormal(
                stddev=spec.dense_init_std, seed=seed * 1000 + _SEED_DENSE + i
            ),
            bias_initializer=keras.initializers.Constant(spec.dense_bias_init),
            kernel_regularizer=decay,
            dtype=compute,
            name=DENSE_NAME.format(i),
        )(x)
    if spec.dropout:
        x = ResumableDropout(
            spec.dropout, seed=seed * 1000 + _SEED_DROPOUT, dtype=compute, name="dropout"
        )(x)
    if spec.tta_flip:
        x = TwinMean(dtype=compute, name="tta_mean")(x)  # inference: back to (B, D)
    logits = logits_layer(spec, num_classes, seed)(x)  # (B, classes)
    return keras.Model(inputs, logits, name="cnn")


def relu_layer_names(model: keras.Model) -> list[str]:
    """Names of the layers whose outputs are ReLU activations (conv and hidden dense)."""
    return [
        layer.name
        for layer in model.layers
        if layer.name.startswith(("conv", "fc")) and layer.name[-1].isdigit()
    ]


def build_probe(model: keras.Model, names: Sequence[str] | None = None) -> keras.Model:
    """A model from ``model``'s input to the outputs of the layers ``names``.

    ``names`` defaults to every ReLU layer (:func:`relu_layer_names`).
    The probe shares ``model``'s layers, so it always sees the current weights.
    Calling it returns a list of tensors, one per name, in order.
    """
    names = list(names) if names is not None else relu_layer_names(model)
    if not names:
        raise ValueError(f"model {model.name!r} has no layers to probe")
    outputs = [model.get_layer(name).output for name in names]
    # model.input (not .inputs): a single-input model then takes a plain tensor, no warning.
    return keras.Model(model.input, outputs, name=f"{model.name}_probe")
