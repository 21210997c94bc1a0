"""dlib's face-recognition ResNet as a Keras network: the same numbers, batched, on oneDNN.

:func:`convert` turns a network read by :mod:`facefold.embeddings.dlib_format` into a
*spec* (the layers, as JSON) and arrays in Keras' layout; :func:`cached_weights` keeps that
conversion once per machine under the user cache, keyed by the SHA-256 of the ``.dat`` file;
:func:`build` makes the Keras model from it, and :func:`load_descriptor` does all three.

**The network** (dlib's ``dnn_face_recognition_ex.cpp``): a 7×7/2 conv (32 filters),
affine, ReLU, a 3×3/2 max pool, then 14 residual blocks — 3 of 32 filters, 4 of 64, 3 of 128,
3 of 256 and a last one of 256 —, a global average pool and a 128-d fully connected layer
without bias: 29 conv layers. A block is ``conv 3×3, affine, ReLU, conv 3×3, affine`` added
to its input, then a ReLU; the first block of each width (dlib's ``ares_down``) has a
stride-2 first conv and adds the input average-pooled 2×2/2.

**dlib's rules, kept exactly** (``dnn/layers.h``, ``cuda/cpu_dlib.cpp``, ``dnn/input.h``):

- the input is ``(pixel - mean) / 256`` per channel, the means stored in the file
  (122.782, 117.001, 104.298 for R, G, B);
- a conv or pool pads ``nr // 2`` when its stride is 1 and nothing otherwise, and its output
  side is ``1 + (side + 2 * padding - window) // stride`` (Keras' ``"valid"`` after explicit
  zero padding, ``"same"`` for a 3×3/1 conv); convs have a bias;
- ``affine`` is ``x * gamma + beta`` per channel (the batch norms, frozen);
- ``add_prev`` adds two tensors of different sizes by treating the missing values as 0: its
  output has the larger height, width and channel count of the two. This happens: a
  downsampling block's conv path has ``1 + (side - 3) // 2`` rows and its pooled path
  ``1 + (side - 2) // 2``, 3 against 4 at side 8 and 1 against 2 at side 4; and the pooled
  path has half the channels. The smaller tensor is zero-padded at the bottom, right and
  last channels, where dlib's indices leave it.

Tags and skips are written alike in the file (see :mod:`~facefold.embeddings.dlib_format`);
they are read as dlib's ``residual`` / ``residual_down`` templates use them: a marker saves
the current output (tag1); two markers in a row save it as tag2 and go back to tag1's
output (skip1); ``add_prev`` adds the last saved tag2, else tag1.

Layout: dlib's tensors are NCHW and its filters (num_filters, k, nr, nc); Keras' are NHWC
and HWIO, so filters are transposed ``(2, 3, 1, 0)``. This module imports TensorFlow.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from facefold.atomic import atomic_path
from facefold.data.images import file_sha256
from facefold.embeddings import dlib_format as fmt

# Bump when the conversion below changes meaning: cached conversions are then redone.
CONVERSION_VERSION = 1


# ---------------------------------------------------------------- conversion


def convert(net: fmt.DlibNetwork) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """``(spec, arrays)`` of a dlib network: one dict per layer from the input upwards
    (``kind`` and its sizes) and float32 arrays in Keras' layout named ``"<index>.<name>"``
    (``kernel`` HWIO, ``bias``, ``gamma``, ``beta``, the fc ``weights`` (in, out)), plus
    ``"input.means"`` (3,) R, G, B."""
    spec: list[dict[str, Any]] = [{"kind": "input", "size": list(net.input.size)}]
    arrays = {"input.means": net.input.means}
    for i, layer in enumerate(net.layers):
        match layer:
            case fmt.Conv():
                spec.append({"kind": "conv", "stride": list(layer.stride),
                             "padding": list(layer.padding), "bias": layer.biases is not None,
                             "relu": layer.relu})
                arrays[f"{i}.kernel"] = layer.filters.transpose(2, 3, 1, 0)  # -> (nr, nc, k, n)
                if layer.biases is not None:
                    arrays[f"{i}.bias"] = layer.biases
            case fmt.Affine():
                spec.append({"kind": "affine", "disabled": layer.disabled})
                arrays[f"{i}.gamma"], arrays[f"{i}.beta"] = layer.gamma, layer.beta
            case fmt.Relu():
                spec.append({"kind": "relu", "disabled": layer.disabled})
            case fmt.Pool():
                spec.append({"kind": f"{layer.kind}_pool", "window": list(layer.window),
                             "stride": list(layer.stride), "padding": list(layer.padding)})
            case fmt.AddPrev():
                spec.append({"kind": "add_prev"})
            case fmt.Marker():
                spec.append({"kind": "marker"})
            case fmt.FullyConnected():
                spec.append({"kind": "fc", "bias": layer.biases is not None})
                arrays[f"{i}.weights"] = layer.weights
                if layer.biases is not None:
                    arrays[f"{i}.bias"] = layer.biases
    return spec, {k: np.ascontiguousarray(v, np.float32) for k, v in arrays.items()}


def cached_weights(dat: str | Path, cache_dir: str | Path) -> Path:
    """The ``.npz`` of :func:`convert` of dlib's file ``dat``, under ``cache_dir/weights``,
    named by the file's SHA-256: converted (about a second) and written atomically the first
    time on a machine, read after. Returns its path."""
    sha = file_sha256(dat)
    path = Path(cache_dir) / "weights" / f"dlib-resnet-v{CONVERSION_VERSION}-{sha}.npz"
    if not path.is_file():
        spec, arrays = convert(fmt.read_network(dat))
        with atomic_path(path) as tmp, tmp.open("wb") as handle:
            np.savez(handle, spec=np.str_(json.dumps(spec)), **arrays)
    return path


# ---------------------------------------------------------------- Keras layers


@keras.saving.register_keras_serializable("facefold")
class ChannelAffine(keras.layers.Layer):
    """dlib's ``affine_``: ``x * gamma + beta`` per channel, (B, H, W, C) -> (B, H, W, C)."""

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        channels = int(input_shape[-1])
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")

    def call(self, x: Any) -> Any:
        return x * self.gamma + self.beta


@keras.saving.register_keras_serializable("facefold")
class PadAdd(keras.layers.Layer):
    """dlib's ``add_prev_``: ``a + b`` where a value missing from the smaller of the two
    (rows at the bottom, columns at the right, last channels) counts as 0.
    (B, H1, W1, C1), (B, H2, W2, C2) -> (B, max H, max W, max C)."""

    def call(self, inputs: list[Any]) -> Any:
        a, b = inputs
        shape = [max(int(s), int(t)) for s, t in zip(a.shape[1:], b.shape[1:], strict=True)]
        a, b = (keras.ops.pad(x, [[0, 0]] + [[0, n - int(s)] for n, s in zip(
            shape, x.shape[1:], strict=True)]) for x in (a, b))
        return a + b

    def compute_output_shape(self, shapes: list[tuple[int | None, ...]]) -> tuple:
        a, b = shapes
        return (a[0], *(max(s, t) for s, t in zip(a[1:], b[1:], strict=True)))


@keras.saving.register_keras_serializable("facefold")
class InputScale(keras.layers.Layer):
    """dlib's ``input_rgb_image``: uint8 RGB (B, H, W, 3) -> float32 ``(x - means) / 256``."""

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.means = self.add_weight(name="means", shape=(3,), initializer="zeros",
                                     trainable=False)

    def call(self, x: Any) -> Any:
        # (x - mean) / 256 as dlib computes it: 1/256 is exact, so scaling after the
        # subtraction rounds exactly as dlib's division does.
        return (keras.ops.cast(x, "float32") - self.means) * (1.0 / 256.0)


def _pad(x: Any, padding: list[int]) -> Any:
    """Zeros around (B, H, W, C): ``padding`` (y, x) rows and columns on each side."""
    return keras.layers.ZeroPadding2D(tuple(padding))(x) if any(padding) else x


Weighted = list[tuple[keras.layers.Layer, list[np.ndarray]]]  # Keras layers and their weights


def _layer(layer: dict[str, Any], i: int, x: Any, arrays: dict[str, np.ndarray]
           ) -> tuple[Any, Weighted]:
    """One conv, affine, relu, pool or fc ``layer`` (number ``i`` of the spec) applied to
    ``x`` (B, H, W, C) or (B, C): the output and the weights its Keras layers take."""
    kind = layer["kind"]
    if kind == "conv":
        kernel = arrays[f"{i}.kernel"]  # (nr, nc, k, n)
        window, stride, padding = kernel.shape[:2], tuple(layer["stride"]), layer["padding"]
        same = stride == (1, 1) and padding == [window[0] // 2, window[1] // 2] and bool(
            window[0] % 2 and window[1] % 2)  # Keras' "same" pads exactly this
        conv = keras.layers.Conv2D(kernel.shape[3], window, stride, "same" if same else "valid",
                                   use_bias=layer["bias"],
                                   activation="relu" if layer["relu"] else None)
        weights = [kernel] + ([arrays[f"{i}.bias"]] if layer["bias"] else [])
        return conv(x if same else _pad(x, padding)), [(conv, weights)]
    if kind in ("affine", "relu") and layer["disabled"]:
        return x, []
    if kind == "affine":
        affine = ChannelAffine()
        return affine(x), [(affine, [arrays[f"{i}.gamma"], arrays[f"{i}.beta"]])]
    if kind == "relu":
        return keras.layers.ReLU()(x), []
    if kind in ("max_pool", "avg_pool"):
        if layer["window"] == [0, 0]:  # avg_pool_everything: (B, H, W, C) -> (B, C)
            return keras.layers.GlobalAveragePooling2D()(x), []
        pool = keras.layers.MaxPooling2D if kind == "max_pool" else keras.layers.AveragePooling2D
        window, stride = tuple(layer["window"]), tuple(layer["stride"])
        return pool(window, stride, "valid")(_pad(x, layer["padding"])), []
    if kind == "fc":
        if len(x.shape) > 2:  # dlib flattens its (k, nr, nc) layout: channels outermost
            x = keras.layers.Flatten()(keras.layers.Permute((3, 1, 2))(x))
        weights = arrays[f"{i}.weights"]  # (in, out)
        dense = keras.layers.Dense(weights.shape[1], use_bias=layer["bias"])
        values = [weights] + ([arrays[f"{i}.bias"]] if layer["bias"] else [])
        return dense(x), [(dense, values)]
    raise ValueError(f"layer {i}: unknown kind {kind!r}")


def build(spec: list[dict[str, Any]], arrays: dict[str, np.ndarray]) -> keras.Model:
    """The Keras model of a :func:`convert`-ed network: uint8 RGB (B, S, S, 3) -> float32
    (B, D) descriptors, its weights set from ``arrays``.

    Markers and ``add_prev`` are read as dlib's residual templates write them (see the
    module docstring): a lone marker is tag1, two in a row are tag2 then skip1.
    """
    size = spec[0]["size"]
    images = keras.Input((size[0], size[1], 3), dtype="uint8", name="chip")
    scale = InputScale(name="input")
    x = scale(images)
    weighted: Weighted = [(scale, [arrays["input.means"]])]
    tag1 = tag2 = None
    layers = spec[1:]
    i = 0
    while i < len(layers):
        kind = layers[i]["kind"]
        if kind == "marker" and i + 1 < len(layers) and layers[i + 1]["kind"] == "marker":
            tag2, x = x, tag1  # tag2 saves the block's output, skip1 goes back to tag1's
            i += 1
        elif kind == "marker":
            tag1, tag2 = x, None
        elif kind == "add_prev":
            other = tag2 if tag2 is not None else tag1
            if other is None:
                raise ValueError(f"layer {i}: add_prev without a tagged layer before it")
            x = PadAdd()([x, other])
        else:
            x, more = _layer(layers[i], i, x, arrays)
            weighted += more
        i += 1
    model = keras.Model(images, x, name="dlib_resnet")
    for keras_layer, values in weighted:
        keras_layer.set_weights(values)
    return model


def split_top(model: keras.Model) -> tuple[keras.Model, np.ndarray]:
    """A :func:`build`-ed network ending in a global average pool and a fc without bias, cut
    between the two: ``(trunk, kernel)``, the trunk uint8 chips (B, S, S, 3) -> the pooled
    (B, C) float32 (sharing ``model``'s layers) and the fc's kernel (C, D) float32 (a copy),
    so that ``trunk(chips) @ kernel`` is ``model(chips)``. ``ValueError`` for another end."""
    pool, fc = model.layers[-2:]
    if not (isinstance(pool, keras.layers.GlobalAveragePooling2D) and isinstance(
            fc, keras.layers.Dense) and not fc.use_bias and fc.input is pool.output):
        raise ValueError(f"{model.name} does not end in an average pool and a fc without bias")
    trunk = keras.Model(model.input, pool.output, name=f"{model.name}_pool")
    return trunk, np.array(fc.get_weights()[0], np.float32)


def load_descriptor(dat: str | Path, cache_dir: str | Path) -> keras.Model:
    """The Keras model of dlib's network file ``dat`` (conversion cached in ``cache_dir``)."""
    with np.load(cached_weights(dat, cache_dir)) as saved:
        spec = json.loads(str(saved["spec"]))
        arrays = {k: saved[k] for k in saved.files if k != "spec"}
    return build(spec, arrays)


def descriptor_function(model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    """``model`` as one compiled call: uint8 chips (N, S, S, 3) -> float32 (N, D) numpy.

    A ``tf.function`` over any batch size, traced once: every batch runs the same graph
    (oneDNN convolutions over all cores). Not XLA: on this network it was slower (measured
    in docs/performance.md).
    """
    import tensorflow as tf

    size = model.input_shape[1:3]
    call = tf.function(lambda chips: model(chips, training=False), input_signature=[
        tf.TensorSpec((None, *size, 3), tf.uint8)])

    def describe(chips: np.ndarray) -> np.ndarray:
        return call(np.ascontiguousarray(chips, np.uint8)).numpy()

    return describe
