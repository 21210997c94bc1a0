"""dlib's face-recognition ResNet read from its file and rebuilt in Keras: the reader on bytes
written by hand, the Keras network against dlib's own descriptor.

The reader's tests need nothing; those on the real weight file skip without the ``dlib``
extra, and those on ORL and celeb21 crops also when ../shared is absent.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_dataset_path
from PIL import Image

from facefold.embeddings import dlib128
from facefold.embeddings import dlib_format as fmt

EXTRA = "pip install 'facefold[dlib]'"

# ---------------------------------------------------------------- the encodings, by hand


@pytest.mark.parametrize(("raw", "value"), [
    (b"\x01\x02", 2),
    (b"\x02\x2c\x01", 300),  # 0x012C
    (b"\x81\x05", -5),  # bit 7: negative
    (b"\x04\x00\x00\x00\x01", 1 << 24),
])
def test_integers_by_hand(raw: bytes, value: int) -> None:
    reader = fmt.Reader(raw)
    assert reader.integer() == value and reader.at_end()


@pytest.mark.parametrize(("raw", "value"), [
    # loss_metric_'s margin as the real file holds it: mantissa 0xA3D70A = 10737418, exponent
    # -28; 10737418 / 2**28 = 0.0399999991 (0.04 as a float32)
    (b"\x03\x0a\xd7\xa3\x81\x1c", 10737418 / 2**28),
    (b"\x01\x03\x01\x00", 3.0),  # 3 * 2**0
    (b"\x81\x03\x81\x01", -1.5),  # -3 * 2**-1
    (b"\x01\x00\x02\x00\x7d", math.inf),  # exponent 32000 = 0x7D00
])
def test_floats_by_hand(raw: bytes, value: float) -> None:
    reader = fmt.Reader(raw)
    assert reader.float() == value and reader.at_end()


def test_strings_bools_and_a_tensor_by_hand() -> None:
    floats = struct.pack("<4f", 1.0, -2.0, 0.5, 3.0)
    raw = b"\x01\x05relu_" + b"1" + b"\x01\x02" + b"\x01\x01\x01\x02\x01\x01\x01\x02" + floats
    reader = fmt.Reader(raw)
    assert reader.string() == "relu_" and reader.boolean() is True
    tensor = reader.tensor()  # version 2, (num_samples, k, nr, nc) = (1, 2, 1, 2)
    assert tensor.shape == (1, 2, 1, 2) and tensor.dtype == np.float32
    np.testing.assert_array_equal(tensor.reshape(-1), [1.0, -2.0, 0.5, 3.0])
    assert reader.at_end()


# A whole network, top down as dlib writes it:
#   loss_metric<fc_no_bias<3, relu<tag1<con<2,1,1,1,1, input_rgb_image_sized<1>>>>>>
INT = {n: bytes([1, n]) for n in range(16)}  # small non-negative integers: 01 nn
EMPTY = b"\x01\x02" + b"\x01\x00" * 4  # an empty tensor: version 2, 0 x 0 x 0 x 0
BOOKKEEPING = b"000" + EMPTY * 3  # add_layer's three bools and three training tensors
ONE, HALF, TWO = b"\x01\x01\x01\x00", b"\x01\x01\x81\x01", b"\x01\x01\x01\x01"  # 1, 0.5, 2


def _tensor(shape: tuple[int, ...], values: list[float]) -> bytes:
    return INT[2] + b"".join(INT[n] for n in shape) + struct.pack(f"<{len(values)}f", *values)


def _str(text: str) -> bytes:
    return bytes([1, len(text)]) + text.encode()


CONV_VALUES = [1.0, 2.0, 3.0, -1.0, 0.0, 1.0, 0.5, -0.5]  # 2 filters x 3 channels, 2 biases
FC_VALUES = [1.0, 0.0, 2.0, 0.0, 1.0, -1.0]  # weights (2 inputs, 3 outputs)
HAND_NETWORK = b"".join([
    INT[1], _str("loss_metric_2"), b"\x03\x0a\xd7\xa3\x81\x1c", b"\x03\x9a\x99\x99\x81\x18",
    INT[2], INT[2], INT[1], INT[3],  # fc, relu (add_layer 2), tag (1), con over the input (3)
    _str("input_rgb_image_sized"), ONE, HALF, TWO, INT[1], INT[1],
    _str("con_4"), _tensor((8, 1, 1, 1), CONV_VALUES), INT[2], INT[1], INT[1],  # filters 1x1
    INT[1], INT[1], INT[0], INT[0],  # stride, padding
    INT[1] + INT[2] + INT[3] + INT[1] + INT[1], INT[1] + INT[1] + INT[2] + INT[1] + INT[1],
    ONE, ONE, ONE, b"\x01\x00\x01\x00",  # four multipliers (the last 0 * 2**0)
    BOOKKEEPING, INT[1],  # the input add_layer's sample_expansion_factor
    _str("relu_"), BOOKKEEPING,
    _str("fc_2"), INT[3], INT[2], _tensor((2, 3, 1, 1), FC_VALUES),
    INT[1] + INT[2] + INT[3] + INT[1] + INT[1], INT[1] + b"\x01\x00" * 4,  # weights, no biases
    INT[1], ONE, ONE, ONE, ONE, BOOKKEEPING,  # bias_mode 1: FC_NO_BIAS
])


def test_a_network_written_by_hand() -> None:
    net = fmt.parse_network(HAND_NETWORK, "hand.dat")
    assert net.loss == fmt.LossMetric(10737418 / 2**28, 10066330 / 2**24)
    np.testing.assert_array_equal(net.input.means, [1.0, 0.5, 2.0])
    assert net.input.size == (1, 1)
    conv, marker, relu, fc = net.layers
    assert isinstance(marker, fmt.Marker) and relu == fmt.Relu()
    assert conv.stride == (1, 1) and conv.padding == (0, 0) and not conv.relu
    np.testing.assert_array_equal(conv.filters[:, :, 0, 0], [[1, 2, 3], [-1, 0, 1]])
    np.testing.assert_array_equal(conv.biases, [0.5, -0.5])
    np.testing.assert_array_equal(fc.weights, [[1, 0, 2], [0, 1, -1]])
    assert fc.biases is None


def test_malformed_networks_name_the_file_and_offset() -> None:
    with pytest.raises(fmt.DlibFormatError, match=rf"hand\.dat: at byte {len(HAND_NETWORK) - 1}"
                       r": the file ends inside"):
        fmt.parse_network(HAND_NETWORK[:-1], "hand.dat")
    relu = HAND_NETWORK.index(b"relu_") - 2  # the string's control and length bytes
    with pytest.raises(fmt.DlibFormatError, match=rf"hand\.dat: at byte {relu}: unsupported "
                       "layer 'relx_'"):
        fmt.parse_network(HAND_NETWORK.replace(b"relu_", b"relx_"), "hand.dat")
    with pytest.raises(fmt.DlibFormatError, match="1 bytes after the network"):
        fmt.parse_network(HAND_NETWORK + b"\x00", "hand.dat")
    with pytest.raises(fmt.DlibFormatError,
                       match="at byte 0: add_loss_layer: version 7, expected 1"):
        fmt.parse_network(b"\x01\x07", "hand.dat")


def test_the_network_written_by_hand_in_keras(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Converted once (cached under the file's SHA-256), built, and run on one pixel whose
    descriptor is worked out by hand."""
    from facefold.embeddings import resnet

    dat = tmp_path / "hand.dat"
    dat.write_bytes(HAND_NETWORK)
    cached = resnet.cached_weights(dat, tmp_path / "cache")
    assert hashlib.sha256(HAND_NETWORK).hexdigest() in cached.name
    other = tmp_path / "other.dat"  # other weights: another entry
    other.write_bytes(HAND_NETWORK.replace(struct.pack("<f", 0.5), struct.pack("<f", 0.25), 1))
    assert resnet.cached_weights(other, tmp_path / "cache") != cached
    monkeypatch.setattr(resnet.fmt, "read_network", None)  # converting again would fail here
    model = resnet.load_descriptor(dat, tmp_path / "cache")

    pixel = np.array([3, 2, 6], np.uint8).reshape(1, 1, 1, 3)
    # input: (pixel - (1, 0.5, 2)) / 256 = (2, 1.5, 4) / 256
    # conv:  (1*2 + 2*1.5 + 3*4) / 256 + 0.5 = 17/256 + 0.5;  (-2 + 0 + 4) / 256 - 0.5 < 0
    # relu:  (17/256 + 0.5, 0);  fc: (a, 0, 2a) with a = 17/256 + 0.5
    a = 17 / 256 + 0.5
    np.testing.assert_allclose(np.asarray(model(pixel)), [[a, 0.0, 2 * a]], rtol=1e-6)


def test_pad_add_treats_missing_values_as_zero() -> None:
    """dlib's add_prev_ on tensors of different sizes (tt::add), by hand."""
    from facefold.embeddings.resnet import PadAdd

    a = np.array([1.0, 2.0], np.float32).reshape(1, 1, 2, 1)  # (B, H, W, C) = (1, 1, 2, 1)
    b = np.array([[10.0, 20.0], [30.0, 40.0]], np.float32).reshape(1, 2, 1, 2)  # (1, 2, 1, 2)
    out = np.asarray(PadAdd()([a, b]))
    expected = np.zeros((1, 2, 2, 2), np.float32)
    expected[0, 0, 0] = [1 + 10, 20]  # a's single channel adds to channel 0 only
    expected[0, 0, 1] = [2, 0]  # b has no column 1
    expected[0, 1, 0] = [30, 40]  # a has no row 1
    np.testing.assert_array_equal(out, expected)


# ---------------------------------------------------------------- the real weight file


@pytest.fixture(scope="module")
def weights() -> Path:
    pytest.importorskip("dlib", reason=f"the dlib extra is not installed ({EXTRA})")
    try:
        return dlib128.weights_dir()
    except ModuleNotFoundError as err:
        pytest.skip(str(err))


def test_the_real_file_is_dlibs_29_conv_resnet(weights: Path) -> None:
    net = fmt.read_network(weights / dlib128.DESCRIPTOR_FILE)
    convs = [layer for layer in net.layers if isinstance(layer, fmt.Conv)]
    assert len(convs) == 29
    assert sum(isinstance(layer, fmt.Affine) for layer in net.layers) == 29
    assert sum(isinstance(layer, fmt.AddPrev) for layer in net.layers) == 14
    assert convs[0].filters.shape == (32, 3, 7, 7) and convs[0].stride == (2, 2)
    assert convs[0].padding == (0, 0)  # dlib pads a conv only when its stride is 1
    assert {(c.stride, c.padding) for c in convs[1:]} == {((1, 1), (1, 1)), ((2, 2), (0, 0))}
    assert [c.filters.shape[0] for c in convs if c.stride == (2, 2)] == [32, 64, 128, 256, 256]
    np.testing.assert_array_equal(net.input.means,  # dlib's input_rgb_image defaults
                                  np.array([122.782, 117.001, 104.298], np.float32))
    assert net.input.size == (150, 150)
    fc = net.layers[-1]
    assert fc.weights.shape == (256, 128) and fc.biases is None
    assert net.loss.margin == pytest.approx(0.04)
    parameters = sum(c.filters.size + c.biases.size for c in convs) + fc.weights.size + sum(
        a.gamma.size * 2 for a in net.layers if isinstance(a, fmt.Affine))
    # The file is these floats (4 bytes each) plus a few kilobytes of structure.
    size = (weights / dlib128.DESCRIPTOR_FILE).stat().st_size
    assert 0 < size - 4 * parameters < 20_000


@pytest.fixture(scope="module")
def models(weights: Path) -> dict[str, dlib128.Dlib128]:
    """Both backends, loaded once for the module."""
    return {backend: dlib128.Dlib128(backend) for backend in dlib128.BACKENDS}


def _compare(models: dict[str, dlib128.Dlib128], images: np.ndarray) -> None:
    """Keras against dlib on the same chips: cosine >= 0.9999, max abs diff <= 1e-3."""
    keras_vectors, keras_fallback = models["keras"].embed(images)
    dlib_vectors, dlib_fallback = models["dlib"].embed(images)
    np.testing.assert_array_equal(keras_fallback, dlib_fallback)  # the same chips
    cosine = (keras_vectors * dlib_vectors).sum(axis=1) / (
        np.linalg.norm(keras_vectors, axis=1) * np.linalg.norm(dlib_vectors, axis=1))
    assert cosine.min() >= 0.9999
    assert np.abs(keras_vectors - dlib_vectors).max() <= 1e-3
    assert np.abs(dlib_vectors).max() > 0.05  # real descriptors, not zeros


def test_keras_equals_dlib_on_random_chips(models: dict[str, dlib128.Dlib128]) -> None:
    """Straight through the descriptor (no landmarks): noise exercises every channel."""
    chips = np.random.default_rng(0).integers(0, 256, (3, 150, 150, 3), np.uint8)
    np.testing.assert_allclose(models["keras"]._descriptors()(chips),
                               models["dlib"]._descriptors()(chips), atol=1e-5)


def test_keras_equals_dlib_on_synthetic_faces(
        models: dict[str, dlib128.Dlib128], tmp_path: Path) -> None:
    from facefold.data.synthetic import make_synthetic_faces

    faces = make_synthetic_faces(tmp_path / "faces", people=3, per_person=3, size=112)
    images = np.stack([np.asarray(Image.open(p).convert("RGB"))
                       for p in sorted(faces.rglob("*.png"))])
    _compare(models, images)
    _compare(models, images[:, :, ::-1])  # mirrors, as embed(mirror=True) makes them


@pytest.mark.parametrize("name", ["orl", "celeb21"])
def test_keras_equals_dlib_on_real_crops(models: dict[str, dlib128.Dlib128], name: str) -> None:
    """A dozen crops of each dataset (dlib's descriptor takes ~150 ms each): square, as a
    dataset stores them."""
    from facefold.data.images import load_rgb, square_crop

    folder = shared_dataset_path(name)
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".jpg", ".pgm"))[::37][:12]
    images = np.stack([np.asarray(square_crop(load_rgb(p.read_bytes(), str(p)), 112))
                       for p in files])
    _compare(models, images)


def test_backends_have_their_own_model_version(models: dict[str, dlib128.Dlib128]) -> None:
    keras_version, dlib_version = models["keras"].version, models["dlib"].version
    assert keras_version != dlib_version
    # dlib's backend keeps the version of the vectors dlib alone computed: their cache stays.
    from facefold.data.images import file_sha256

    folder = dlib128.weights_dir()
    before = {"embedding": "dlib128", "pipeline": 1, "chip": [150, 0.25],
              "check": [[0.15, 0.60], 30.0, [0.3, 1.5]],
              "weights": {f: file_sha256(folder / f) for f in (
                  "shape_predictor_5_face_landmarks.dat",
                  "dlib_face_recognition_resnet_model_v1.dat")}}
    assert dlib_version == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()
    assert dlib128.load("keras") is dlib128.load() and dlib128.load().backend == "keras"
    with pytest.raises(ValueError, match="backend must be one of keras, dlib; got 'tf'"):
        dlib128.Dlib128("tf")


def test_help_imports_no_tensorflow() -> None:
    """``facefold --help`` and the dlib128 module (a worker's first import) start fast."""
    code = ("import sys\nfrom facefold.embeddings import dlib128\nfrom facefold.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[1]).stdout
    assert out.splitlines()[-1] == "False False"


def test_bench_embedding_puts_the_backends_side_by_side(weights: Path) -> None:
    from facefold.bench import bench_embedding, format_bench_embedding

    result = bench_embedding(images=4, workers=1, log=lambda _: None)  # SYNTHETIC faces
    assert sorted(result["backends"]) == ["dlib", "keras"] and result["images"] == 4
    for backend in result["backends"].values():
        assert backend["same_vectors"]  # one worker: this process, the same batches
        assert backend["views_per_s_one_process"] > 0
    assert result["backends"]["keras"]["version"] != result["backends"]["dlib"]["version"]
    ratio = result["keras_over_dlib"]["one_process"]
    assert ratio == pytest.approx(result["backends"]["keras"]["views_per_s_one_process"]
                                  / result["backends"]["dlib"]["views_per_s_one_process"])
    text = format_bench_embedding(result)
    assert "keras / dlib" in text and f"{ratio:.1f}x" in text
