"""Inference models: a trained network wrapped to take what a deployed model is given.

The wrapped model returns ``{"logits": (N, classes), "features": (N, D)}`` in float32,
``features`` being the input of the logits layer (for the cosine open-set score).

- CNN: uint8 images (N, S, S, C), the *whole* square image as stored in a dataset; the
  model cuts the central crop, scales it to [0, 1] and resizes it itself
  (:class:`CenterCropScale`, :class:`MatrixResize`), so every export format runs the
  same ops and computes the same numbers.
- Embedding head: the embeddings (N, V, D) of each picture's V views; in an export, the
  aligned chips (N, V, C, C, 3) uint8, the embedding's network inside the model
  (:func:`chip_inference_model`).

Training code never needs these; predict, export and the analyses do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from facefold.config import ModelSpec
from facefold.data.pipeline import center_crop
from facefold.embeddings import resnet  # noqa: F401  registers the descriptor's custom layers
from facefold.models.cnn import RESIZE_ARGS, build_model  # also registers the custom layers
from facefold.models.head import build_head
from facefold.models.outputs import Infer


@keras.saving.register_keras_serializable(package="facefold")
class CenterCropScale(keras.layers.Layer):
    """uint8 images (B, S, S, C) -> their central ``crop`` window as float32 in [0, 1]."""

    def __init__(self, crop: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.crop = crop

    def call(self, images: tf.Tensor) -> tf.Tensor:
        return center_crop(images, self.crop)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "crop": self.crop}


@keras.saving.register_keras_serializable(package="facefold")
class WindowScale(keras.layers.Layer):
    """uint8 images (B, S, S, C) -> their ``size`` x ``size`` window at ``(top, left)`` as
    float32 in [0, 1] (a view of :func:`tta_windows`)."""

    def __init__(self, size: int, top: int, left: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size, self.top, self.left = size, top, left

    def call(self, images: tf.Tensor) -> tf.Tensor:
        window = images[:, self.top:self.top + self.size, self.left:self.left + self.size, :]
        return tf.cast(window, tf.float32) / 255.0

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size, "top": self.top, "left": self.left}


# The windows of crop TTA (model.tta_crops): the crop shifted diagonally by TTA_SHIFT pixels,
# and the centre squares TTA_ZOOM pixels larger and smaller. Training jitters the crop's box
# far more (area 0.7-1.3x, aspect 0.8-1.25), so the model has seen such views.
TTA_SHIFT = 4
TTA_ZOOM = 8


def tta_windows(image_size: int, crop: int) -> list[tuple[int, int, int]]:
    """``(size, top, left)`` of the seven crop-TTA windows of a square image: the centre crop,
    the four diagonal shifts by :data:`TTA_SHIFT`, the centre squares :data:`TTA_ZOOM` larger
    and smaller. A window never leaves the image: the shifts and the larger square are cut
    to it (on an image no larger than the crop, the shifts are the centre crop itself)."""
    centre = (image_size - crop) // 2
    shift = min(TTA_SHIFT, centre, image_size - crop - centre)
    windows = [(crop, centre, centre)]
    windows += [(crop, centre + dy, centre + dx) for dy in (-shift, shift)
                for dx in (-shift, shift)]
    for size in (min(crop + TTA_ZOOM, image_size), max(crop - TTA_ZOOM, 8)):
        start = (image_size - size) // 2
        windows.append((size, start, start))
    return windows


@keras.saving.register_keras_serializable(package="facefold")
class MatrixResize(keras.layers.Layer):
    """The resize of :class:`keras.layers.Resizing` for ``model.resize``, as two matrix
    products.

    Each of :data:`~facefold.models.cnn.RESIZE_ARGS` is linear and separable:
    each output row mixes input rows with fixed weights, and likewise for
    columns. The weights are read off by resizing the identity, so this is the
    same resize as in training, built from ops that TFLite has (its converter
    has no ``ScaleAndTranslate``, the op behind ``antialias=True``).
    """

    def __init__(self, size_in: int, size_out: int, method: str = "antialias",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size_in, self.size_out, self.method = size_in, size_out, method
        interpolation, antialias = RESIZE_ARGS[method]
        basis = tf.eye(size_in)[:, :, None, None]  # size_in images of (size_in, 1, 1)
        resized = tf.image.resize(basis, (size_out, 1), method=interpolation,
                                  antialias=antialias)  # (in, out, 1, 1)
        self.weights_matrix = tf.transpose(resized[:, :, 0, 0]).numpy()  # (out, in)

    def call(self, images: tf.Tensor) -> tf.Tensor:
        matrix = tf.constant(self.weights_matrix)
        x = tf.transpose(images, [0, 3, 1, 2])  # (B, C, H, W)
        x = tf.matmul(tf.matmul(matrix, x), matrix, transpose_b=True)  # (B, C, out, out)
        return tf.transpose(x, [0, 2, 3, 1])  # (B, out, out, C)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size_in": self.size_in, "size_out": self.size_out,
                "method": self.method}


def inference_model(model: keras.Model, spec: ModelSpec, image_size: int) -> keras.Model:
    """Wrap a trained CNN as uint8 image (B, S, S, C) -> ``{"logits", "features"}``, float32.

    The network is rebuilt in float32 with the trained weights (a bfloat16
    run predicts in float32), its resize done by :class:`MatrixResize`, so
    every export format runs the same ops and computes the same numbers. With
    ``spec.tta_crops`` the outputs are the means over the :func:`tta_windows`, each
    resized straight to ``input_size``.
    """
    # The same network without its (weightless) resize layer: input is the resized crop.
    net = build_model(dataclasses.replace(spec, crop_size=spec.input_size),
                      int(model.output_shape[-1]), "float32")
    net.set_weights(model.get_weights())
    heads = keras.Model(
        net.inputs,
        {"logits": net.output, "features": net.get_layer("logits").input},
        name="cnn_with_features",
    )
    image = keras.Input((image_size, image_size, spec.channels), dtype="uint8", name="image")
    if not spec.tta_crops:
        x = CenterCropScale(spec.crop_size, name="center_crop")(image)  # (B, crop, crop, C)
        if spec.input_size != spec.crop_size:
            x = MatrixResize(spec.crop_size, spec.input_size, spec.resize,
                             name="resize")(x)  # (B, in, in, C)
        return keras.Model(image, heads(x), name="facefold_inference")
    views = []
    for k, (size, top, left) in enumerate(tta_windows(image_size, spec.crop_size)):
        x = WindowScale(size, top, left, name=f"window_{k}")(image)
        if size != spec.input_size:
            x = MatrixResize(size, spec.input_size, spec.resize, name=f"resize_{k}")(x)
        views.append(heads(x))
    outputs = {key: keras.layers.Average(name=f"mean_{key}")([v[key] for v in views])
               for key in ("logits", "features")}
    return keras.Model(image, outputs, name="facefold_inference")


def head_inference_model(model: keras.Model, spec: ModelSpec) -> keras.Model:
    """Wrap a trained embedding head as embeddings (B, V, D) -> ``{"logits", "features"}``,
    float32; ``features`` is the input of its logits layer (the mean over the views)."""
    net = build_head(spec, int(model.output_shape[-1]), "float32")
    net.set_weights(model.get_weights())
    return keras.Model(
        net.input, {"logits": net.output, "features": net.get_layer("logits").input},
        name="facefold_head_inference",
    )


@keras.saving.register_keras_serializable(package="facefold")
class FoldViews(keras.layers.Layer):
    """Views side by side into the batch: (B, V, *shape) -> (B * V, *shape), view fastest."""

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.reshape(x, [-1, *x.shape[2:]])  # the view shape is static

    def compute_output_shape(self, shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (None, *shape[2:])


@keras.saving.register_keras_serializable(package="facefold")
class UnfoldViews(keras.layers.Layer):
    """:class:`FoldViews` undone on vectors: (B * V, D) -> (B, V, D)."""

    def __init__(self, views: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.views = views

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.reshape(x, [-1, self.views, x.shape[-1]])

    def compute_output_shape(self, shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (None, self.views, shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "views": self.views}


def chip_inference_model(head: keras.Model, descriptor: keras.Model, views: int) -> keras.Model:
    """A head's inference model (:func:`head_inference_model`) with its embedding's network in
    front: uint8 chips (B, V, C, C, 3) -> ``{"logits", "features"}``, float32, so that one
    file names faces with TensorFlow alone. ``descriptor`` maps chips (B, C, C, 3) to the
    embeddings (B, D) the head learned on; the V views are chips the caller cut (the image's,
    then its mirror's)."""
    side = descriptor.input_shape[1:3]
    chips = keras.Input((views, *side, 3), dtype="uint8", name="chips")  # (B, V, C, C, 3)
    vectors = descriptor(FoldViews(name="fold_views")(chips))  # (B * V, D)
    return keras.Model(chips, head(UnfoldViews(views, name="unfold_views")(vectors)),
                       name="facefold_chip_inference")


@keras.saving.register_keras_serializable(package="facefold")
class CombineMembers(keras.layers.Layer):
    """:func:`~facefold.models.outputs.combine_outputs` as a layer, so that an ensemble's
    export is one file: the members' logits and features (lists, in member order) ->
    ``{"logits", "features"}``.

    The same formulas in float32 (``combine_outputs`` computes in float64 in numpy: the
    run's own predictions); a unit row divides by ``max(norm, 1e-12)`` as
    :func:`~facefold.models.scores.unit_rows` does. ``member_weights`` (one per member,
    summing to 1) or None for the plain mean."""

    def __init__(self, member_weights: list[float] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.member_weights = None if member_weights is None else [
            float(w) for w in member_weights]

    def call(self, logits: list[tf.Tensor], features: list[tf.Tensor]) -> dict[str, tf.Tensor]:
        count = len(logits)
        scales = self.member_weights or [1.0 / count] * count
        mean = tf.add_n([scale * tf.nn.softmax(x) for scale, x in zip(scales, logits,
                                                                       strict=True)])
        tiny = float(np.finfo(np.float32).tiny)
        units = [f / tf.maximum(tf.norm(f, axis=1, keepdims=True), 1e-12) for f in features]
        return {
            "logits": tf.math.log(tf.maximum(mean, tiny)),  # (B, classes)
            "features": tf.concat([float(np.sqrt(scale)) * u
                                   for scale, u in zip(scales, units, strict=True)],
                                  axis=1),  # (B, sum of the members' D)
        }

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "member_weights": self.member_weights}


def ensemble_inference_model(members: Mapping[str, tuple[keras.Model, str]],
                             weights: Sequence[float] | None = None) -> keras.Model:
    """One model of an ensemble: ``members`` maps each member's preset to its export's model
    (``{"logits", "features"}`` out) and the name of its input; members with the same input
    name share it (every CNN member takes the same ``image``), so the model's inputs are a
    dict by those names. The outputs are :class:`CombineMembers` of the members' outputs,
    ``weights`` as for :func:`~facefold.models.outputs.combine_outputs`. ``ValueError`` when
    two members take inputs of the same name but not the same shape."""
    if weights is not None and len(weights) != len(members):
        raise ValueError(f"{len(weights)} weights for {len(members)} ensemble members")
    inputs: dict[str, keras.KerasTensor] = {}
    outputs = []
    for preset, (model, name) in members.items():
        given = model.input
        if name not in inputs:
            inputs[name] = keras.Input(given.shape[1:], dtype=given.dtype, name=name)
        elif tuple(inputs[name].shape) != tuple(given.shape):
            raise ValueError(f"ensemble member '{preset}' takes '{name}' of shape "
                             f"{tuple(given.shape)}, another member {tuple(inputs[name].shape)}:"
                             " they cannot share one input")
        # A member's own name: every CNN's inference model is called facefold_inference.
        member = keras.Model(given, model.output, name=f"member_{preset}")
        outputs.append(member(inputs[name]))
    combined = CombineMembers(None if weights is None else list(weights), name="combine")(
        [out["logits"] for out in outputs], [out["features"] for out in outputs])
    return keras.Model(inputs, combined, name="facefold_ensemble_inference")


def keras_infer(model: keras.Model) -> Infer:
    """Inference with an in-memory Keras model, traced once per batch shape; ``x`` is one
    array, or a dict of arrays by input name (an ensemble's one-file model)."""
    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return lambda x: {k: v.numpy() for k, v in call(tf.nest.map_structure(tf.constant,
                                                                          x)).items()}
