"""A reader of dlib's DNN serialization, in pure Python and numpy (no dlib needed).

What it reads is the file dlib writes with ``serialize(path) << net`` for a network
``loss<layer<layer<…<input>>>>``, such as ``dlib_face_recognition_resnet_model_v1.dat``.
:func:`read_network` returns a :class:`DlibNetwork`: the loss, the input layer and the
layers between them from the input upwards, each a small dataclass holding numpy arrays in
dlib's own layout (filters ``(num_filters, k, nr, nc)``; a fully connected layer's weights
``(num_inputs, num_outputs)``).

**The encodings** (dlib's ``serialize.h``, ``cuda/tensor.h``):

- an *integer*: one control byte — its low 4 bits the count of bytes that follow, bit 7 the
  sign — then the magnitude in that many bytes, little-endian (``300`` is ``02 2C 01``,
  ``-5`` is ``81 05``);
- a *float* (``float_details``): the mantissa (signed 64-bit) then the exponent (signed
  16-bit), two integers as above; the value is ``mantissa * 2**exponent``, an exponent of
  32000 / 32001 / 32002 meaning +inf / -inf / NaN;
- a *string*: its length (an integer) then its bytes; a *bool*: the byte ``'1'`` or ``'0'``;
- a *tensor*: version 2, ``num_samples, k, nr, nc`` (integers), then that many little-endian
  IEEE float32; an *alias tensor* (a view into a layer's ``params``): version 1 and its four
  sizes, no data.

**The nesting** (dlib's ``dnn/core.h``): ``add_loss_layer`` writes version 1, the loss, then
its subnetwork; ``add_layer`` writes its version (2) and its *subnetwork first*, then its
layer's own fields and five bookkeeping fields (three bools, three tensors); the bottom
``add_layer`` over the input layer writes version 3 (or 2) and the input layer first;
``add_tag_layer`` and ``add_skip_layer`` write version 1 and their subnetwork, nothing else.
So the file holds the versions of all layers from the top down, then the input layer, then
the layers' fields from the input upwards. Tags and skips are written the same way (their
ids are template arguments, not data): both are read as :class:`Marker`, and what they mean
is the network type's business (see :mod:`facefold.embeddings.resnet`).

Each layer's fields (``dnn/layers.h``, ``dnn/input.h``, ``dnn/loss.h``) are read by its
version string (``con_4``…``con_6``, ``affine_``/``affine_2``, ``relu_``/``relu_2``,
``max_pool_2``, ``avg_pool_2``, ``add_prev_``, ``fc_2``/``fc_3``, ``input_rgb_image_sized``,
``loss_metric_``/``loss_metric_2``). Anything else, a truncated file or trailing bytes raise
:class:`DlibFormatError` naming the file and the byte offset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# float_details' special exponents (dlib/float_details.h)
_INF, _NINF, _NAN = 32000, 32001, 32002


class DlibFormatError(ValueError):
    """A file that is not a dlib network of the supported layers; the message names the file
    and the byte offset where reading failed."""


# ---------------------------------------------------------------- the layers


@dataclass(frozen=True)
class Conv:
    """``con_``: ``filters`` (num_filters, k, nr, nc) float32, ``biases`` (num_filters,) or None;
    ``stride`` and ``padding`` (y, x); ``relu`` True when dlib fused a ReLU into it (con_6)."""

    filters: np.ndarray
    biases: np.ndarray | None
    stride: tuple[int, int]
    padding: tuple[int, int]
    relu: bool = False


@dataclass(frozen=True)
class Affine:
    """``affine_``: ``x * gamma + beta`` per channel (a batch norm frozen after training);
    ``gamma`` and ``beta`` (k,) float32. ``disabled``: the layer passes its input through."""

    gamma: np.ndarray
    beta: np.ndarray
    disabled: bool = False


@dataclass(frozen=True)
class Relu:
    """``relu_``; ``disabled``: the layer passes its input through."""

    disabled: bool = False


@dataclass(frozen=True)
class Pool:
    """``max_pool_`` (``kind`` "max") or ``avg_pool_`` ("avg"): ``window`` (nr, nc) — (0, 0)
    meaning the whole input (``avg_pool_everything``) —, ``stride`` and ``padding`` (y, x)."""

    kind: str
    window: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class AddPrev:
    """``add_prev_``: the sum of its input and a tagged layer's output (which tag is not
    written in the file); where their sizes differ the missing values count as 0."""


@dataclass(frozen=True)
class Marker:
    """``add_tag_layer`` or ``add_skip_layer``: written alike, told apart by the network type."""


@dataclass(frozen=True)
class FullyConnected:
    """``fc_``: ``weights`` (num_inputs, num_outputs) float32 — output = input @ weights —,
    ``biases`` (num_outputs,) or None (``fc_no_bias``)."""

    weights: np.ndarray
    biases: np.ndarray | None


@dataclass(frozen=True)
class InputRGB:
    """``input_rgb_image_sized``: a ``size`` (nr, nc) RGB uint8 image becomes
    ``(pixel - means) / 256`` per channel; ``means`` (3,) float32 in R, G, B order."""

    means: np.ndarray
    size: tuple[int, int]


@dataclass(frozen=True)
class LossMetric:
    """``loss_metric_``: training-only (``margin``, ``distance_threshold``); at inference the
    network's output is the descriptor as it is."""

    margin: float
    distance_threshold: float


Layer = Conv | Affine | Relu | Pool | AddPrev | Marker | FullyConnected


@dataclass(frozen=True)
class DlibNetwork:
    """A network read from ``path``: its ``input``, its ``layers`` from the input upwards, and
    its ``loss``."""

    path: Path
    input: InputRGB
    layers: list[Layer]
    loss: LossMetric


# ---------------------------------------------------------------- the encodings


class Reader:
    """dlib's encodings read from ``data`` (the bytes of ``path``) at a moving ``offset``."""

    def __init__(self, data: bytes, path: str | Path = "<bytes>") -> None:
        self.data = data
        self.path = Path(path)
        self.offset = 0

    def error(self, what: str, offset: int | None = None) -> DlibFormatError:
        """A :class:`DlibFormatError` naming the file and ``offset`` (default: the current)."""
        where = self.offset if offset is None else offset
        return DlibFormatError(f"{self.path}: at byte {where}: {what}")

    def take(self, count: int, what: str) -> bytes:
        """The next ``count`` bytes; an error naming ``what`` when the file ends first."""
        if count < 0 or self.offset + count > len(self.data):
            raise self.error(f"the file ends inside {what} (needs {count} bytes, "
                             f"{len(self.data) - self.offset} left)")
        chunk = self.data[self.offset : self.offset + count]
        self.offset += count
        return chunk

    def integer(self, what: str = "an integer") -> int:
        """A signed or unsigned integer (control byte, then the little-endian magnitude)."""
        start = self.offset
        (control,) = self.take(1, what)
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            raise self.error(f"{what}: control byte {control:#04x} is not an integer's", start)
        value = int.from_bytes(self.take(size, what), "little")
        return -value if control & 0x80 else value

    def size(self, what: str) -> int:
        """A non-negative integer (a count or a dimension)."""
        start = self.offset
        value = self.integer(what)
        if value < 0:
            raise self.error(f"{what} is {value}, must be >= 0", start)
        return value

    def float(self, what: str = "a float") -> float:
        """A float_details: mantissa then exponent."""
        start = self.offset
        if self.offset < len(self.data) and self.data[self.offset] & 0x70:
            raise self.error(f"{what}: dlib's old text float format is not supported", start)
        mantissa = self.integer(what)
        exponent = self.integer(what)
        if exponent == _INF:
            return math.inf
        if exponent == _NINF:
            return -math.inf
        if exponent == _NAN:
            return math.nan
        return math.ldexp(mantissa, exponent)

    def string(self, what: str = "a string") -> str:
        length = self.size(what)
        start = self.offset
        raw = self.take(length, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.error(f"{what} is not ASCII: {raw[:20]!r}", start) from None

    def boolean(self, what: str = "a bool") -> bool:
        start = self.offset
        raw = self.take(1, what)
        if raw not in (b"0", b"1"):
            raise self.error(f"{what}: {raw!r} is not a bool ('0' or '1')", start)
        return raw == b"1"

    def _version(self, expected: int, what: str) -> None:
        start = self.offset
        version = self.integer(f"the version of {what}")
        if version != expected:
            raise self.error(f"{what}: version {version}, expected {expected}", start)

    def tensor(self, what: str = "a tensor") -> np.ndarray:
        """A tensor (num_samples, k, nr, nc) float32."""
        self._version(2, what)
        shape = tuple(self.size(f"a dimension of {what}") for _ in range(4))
        count = math.prod(shape)
        raw = self.take(4 * count, f"the {count} floats of {what}")
        return np.frombuffer(raw, "<f4").astype(np.float32).reshape(shape)

    def alias(self, what: str = "an alias tensor") -> tuple[int, int, int, int]:
        """An alias tensor's shape (num_samples, k, nr, nc)."""
        self._version(1, what)
        return tuple(self.size(f"a dimension of {what}") for _ in range(4))  # type: ignore[return-value]

    def at_end(self) -> bool:
        return self.offset == len(self.data)


def _slices(reader: Reader, params: np.ndarray, shapes: list[tuple[int, ...]], what: str,
            start: int) -> list[np.ndarray]:
    """The views dlib's alias tensors make into ``params``: one after the other from 0."""
    flat = params.reshape(-1)
    sizes = [math.prod(s) for s in shapes]
    if sum(sizes) > flat.size:
        raise reader.error(f"{what}: its parameters hold {flat.size} floats, its tensors "
                           f"need {sum(sizes)}", start)
    offsets = np.cumsum([0, *sizes])
    return [flat[a:b].reshape(s) for a, b, s in zip(offsets, offsets[1:], shapes, strict=False)]


# ---------------------------------------------------------------- the layers' fields


def _conv(reader: Reader, version: str, start: int) -> Conv:
    params = reader.tensor("con_ params")
    reader.size("con_ num_filters")
    reader.size("con_ nr")
    reader.size("con_ nc")
    stride = (reader.size("con_ stride_y"), reader.size("con_ stride_x"))
    padding = (reader.size("con_ padding_y"), reader.size("con_ padding_x"))
    filters_shape, biases_shape = reader.alias("con_ filters"), reader.alias("con_ biases")
    for name in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
        reader.float(f"con_ {name} multiplier")
    use_bias = reader.boolean("con_ use_bias") if version in ("con_5", "con_6") else True
    relu = reader.boolean("con_ use_relu") if version == "con_6" else False
    shapes = [filters_shape] + ([biases_shape] if use_bias and math.prod(biases_shape) else [])
    arrays = _slices(reader, params, shapes, version, start)
    biases = arrays[1].reshape(-1) if len(arrays) > 1 else None
    return Conv(arrays[0], biases, stride, padding, relu)


def _affine(reader: Reader, version: str, start: int) -> Affine:
    params = reader.tensor("affine_ params")
    shapes = [reader.alias("affine_ gamma"), reader.alias("affine_ beta")]
    mode = reader.integer("affine_ mode")
    if mode not in (0, 1):  # dlib's layer_mode: CONV_MODE 0, FC_MODE 1
        raise reader.error(f"affine_ mode {mode} is neither 0 (conv) nor 1 (fc)")
    disabled = reader.boolean("affine_ disabled") if version == "affine_2" else False
    gamma, beta = _slices(reader, params, shapes, version, start)
    return Affine(gamma.reshape(-1), beta.reshape(-1), disabled)


def _pool(reader: Reader, version: str, start: int) -> Pool:
    window = (reader.size(f"{version} nr"), reader.size(f"{version} nc"))
    stride = (reader.size(f"{version} stride_y"), reader.size(f"{version} stride_x"))
    padding = (reader.size(f"{version} padding_y"), reader.size(f"{version} padding_x"))
    return Pool(version.split("_")[0], window, stride, padding)


def _fc(reader: Reader, version: str, start: int) -> FullyConnected:
    reader.size("fc_ num_outputs")
    reader.size("fc_ num_inputs")
    params = reader.tensor("fc_ params")
    weights_shape, biases_shape = reader.alias("fc_ weights"), reader.alias("fc_ biases")
    bias_mode = reader.integer("fc_ bias_mode")  # FC_HAS_BIAS 0, FC_NO_BIAS 1
    if bias_mode not in (0, 1):
        raise reader.error(f"fc_ bias_mode {bias_mode} is neither 0 (bias) nor 1 (no bias)")
    for name in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
        reader.float(f"fc_ {name} multiplier")
    use_bias = reader.boolean("fc_ use_bias") if version == "fc_3" else True
    has_bias = bias_mode == 0 and use_bias and math.prod(biases_shape) > 0
    shapes = [weights_shape] + ([biases_shape] if has_bias else [])
    arrays = _slices(reader, params, shapes, version, start)
    weights = arrays[0].reshape(weights_shape[0], -1)
    return FullyConnected(weights, arrays[1].reshape(-1) if has_bias else None)


def _layer(reader: Reader) -> Layer:
    """One layer's own fields, dispatched on its version string."""
    start = reader.offset
    version = reader.string("a layer's version string")
    if version in ("con_4", "con_5", "con_6"):
        return _conv(reader, version, start)
    if version in ("affine_", "affine_2"):
        return _affine(reader, version, start)
    if version in ("relu_", "relu_2"):
        return Relu(reader.boolean("relu_ disabled") if version == "relu_2" else False)
    if version in ("max_pool_2", "avg_pool_2"):
        return _pool(reader, version, start)
    if version == "add_prev_":
        return AddPrev()
    if version in ("fc_2", "fc_3"):
        return _fc(reader, version, start)
    raise reader.error(f"unsupported layer {version!r} (supported: con_, affine_, relu_, "
                       "max_pool_, avg_pool_, add_prev_, fc_)", start)


def _input(reader: Reader) -> InputRGB:
    start = reader.offset
    version = reader.string("the input layer's version string")
    if version != "input_rgb_image_sized":
        raise reader.error(f"unsupported input layer {version!r} (supported: "
                           "input_rgb_image_sized)", start)
    means = np.array([reader.float(f"the input's mean {c}") for c in ("red", "green", "blue")],
                     np.float32)
    return InputRGB(means, (reader.size("the input's nr"), reader.size("the input's nc")))


def _loss(reader: Reader) -> LossMetric:
    start = reader.offset
    version = reader.string("the loss's version string")
    if version == "loss_metric_":  # dlib's values before they were written out
        return LossMetric(0.1, 0.75)
    if version == "loss_metric_2":
        return LossMetric(reader.float("loss_metric_ margin"),
                          reader.float("loss_metric_ dist_thresh"))
    raise reader.error(f"unsupported loss {version!r} (supported: loss_metric_)", start)


def _bookkeeping(reader: Reader, tensors: int) -> None:
    """add_layer's fields after its layer's: three bools, then ``tensors`` tensors (the
    gradients and cached output of training, empty in a saved network)."""
    for name in ("this_layer_setup_called", "gradient_input_is_stale",
                 "get_output_and_gradient_input_disabled"):
        reader.boolean(f"add_layer {name}")
    for _ in range(tensors):
        reader.tensor("an add_layer training tensor")


def _is_input_next(reader: Reader) -> bool:
    """Whether the bytes at the offset are a string starting ``input_`` (an input layer)."""
    saved = reader.offset
    try:
        return reader.string().startswith("input_")
    except DlibFormatError:
        return False
    finally:
        reader.offset = saved


def parse_network(data: bytes, path: str | Path = "<bytes>") -> DlibNetwork:
    """The network serialized in ``data`` (the bytes of ``path``, named in errors)."""
    reader = Reader(data, path)
    reader._version(1, "add_loss_layer")
    loss = _loss(reader)
    wrappers: list[str] = []  # from the top down: "layer" (add_layer) or "marker" (tag, skip)
    while True:
        start = reader.offset
        version = reader.integer("a layer's version")
        if version == 3 or (version == 2 and _is_input_next(reader)):
            break  # the bottom add_layer, over the input layer
        if version == 2:
            wrappers.append("layer")
        elif version == 1:
            wrappers.append("marker")
        else:
            raise reader.error(f"a layer's version is {version}: not dlib's add_layer (2, or 3 "
                               "over the input), add_tag_layer or add_skip_layer (1)", start)
    net_input = _input(reader)
    layers: list[Layer] = [_layer(reader)]
    _bookkeeping(reader, 3)  # x_grad, cached_output, grad_final
    if version == 3:
        reader.size("add_layer sample_expansion_factor")
    for wrapper in reversed(wrappers):
        if wrapper == "marker":
            layers.append(Marker())
        else:
            layers.append(_layer(reader))
            _bookkeeping(reader, 3)  # x_grad, cached_output, params_grad
    if not reader.at_end():
        raise reader.error(f"{len(data) - reader.offset} bytes after the network")
    return DlibNetwork(Path(path), net_input, layers, loss)


def read_network(path: str | Path) -> DlibNetwork:
    """The network in dlib's file ``path`` (e.g. ``dlib_face_recognition_resnet_model_v1.dat``).

    Raises ``FileNotFoundError`` when it is missing, :class:`DlibFormatError` (naming the file
    and byte offset) when it is not a network of the supported layers.
    """
    return parse_network(Path(path).read_bytes(), path)

