"""Every registered preset builds, runs forward with the right shape, and has the closed-form size.
"""

from __future__ import annotations

import numpy as np
import pytest

from facefold.config import ModelSpec
from facefold.models.cnn import build_model, relu_layer_names
from facefold.models.presets import get_preset, list_presets


def closed_form_parameters(spec: ModelSpec, classes: int) -> int:
    """Weights + biases of conv (k*k*in*out + out) and dense layers, counted by hand."""
    total, channels_in, side = 0, spec.channels, spec.input_size
    for width in spec.conv_channels:
        total += spec.kernel_size**2 * channels_in * width + width
        channels_in, side = width, -(-side // 2)  # SAME pooling with stride 2: ceil(side / 2)
    units_in = side * side * channels_in
    for units in (*spec.dense_units, classes):
        total += units_in * units + units
        units_in = units
    return total


def test_parameter_counts_of_the_2016_models() -> None:
    # Numbers from the issue, for 40 people; also checked against the closed form.
    assert build_model(get_preset("seed").model, 40).count_params() == 4_371_052
    assert build_model(get_preset("reduced").model, 40).count_params() == 359_176
    # Hand count of the seed model: convs 896 + 13,872 + 31,176 + 70,092; dense 6*6*108*1024 + 1024,
    # 1024*256 + 256, 256*40 + 40.
    assert 896 + 13_872 + 31_176 + 70_092 + 3_982_336 + 262_400 + 10_280 == 4_371_052


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_builds_and_runs(name: str) -> None:
    spec = get_preset(name).model
    model = build_model(spec, 7)
    assert model.count_params() == closed_form_parameters(spec, 7)
    batch = np.random.default_rng(0).random((2, spec.crop_size, spec.crop_size, spec.channels))
    logits = model.predict(batch.astype("float32"), verbose=0)
    assert logits.shape == (2, 7)
    assert np.isfinite(logits).all()
    assert relu_layer_names(model) == [
        *(f"conv{i}" for i in range(1, len(spec.conv_channels) + 1)),
        *(f"fc{i}" for i in range(1, len(spec.dense_units) + 1)),
    ]


def test_bfloat16_keeps_logits_in_float32() -> None:
    spec = get_preset("reduced").model
    model = build_model(spec, 5, precision="bfloat16")
    assert model.get_layer("conv1").compute_dtype == "bfloat16"
    assert model.get_layer("conv1").variable_dtype == "float32"
    out = model(np.zeros((1, 96, 96, 3), "float32"))
    assert str(out.dtype) == "float32" or out.dtype.name == "float32"


def test_same_seed_same_weights_other_seed_differs() -> None:
    spec = get_preset("reduced").model
    a, b, c = (build_model(spec, 5, seed=s) for s in (1, 1, 2))
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


def test_standardization_is_per_image() -> None:
    """The model's first step equals tf.image.per_image_standardization by hand."""
    from facefold.models.cnn import PerImageStandardization

    x = np.random.default_rng(1).random((2, 4, 4, 3)).astype("float32")
    got = PerImageStandardization()(x).numpy()
    for i in range(2):
        n = x[i].size
        expected = (x[i] - x[i].mean()) / max(x[i].std(), 1 / np.sqrt(n))
        np.testing.assert_allclose(got[i], expected, rtol=1e-5, atol=1e-5)


def test_too_few_classes_is_an_error() -> None:
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        build_model(get_preset("seed").model, 1)
