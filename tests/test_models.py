"""Every registered preset builds, runs forward with the right shape, has the closed-form size
and trains (an embedding head on random embeddings, an ensemble member by member); the modern
building blocks (TTA, fused batch norm, dropout state, cosine head) by hand.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import pytest

from facefold.config import EMBEDDING_DIMS, EMBEDDING_TOPS, Config, ModelSpec
from facefold.data.pipeline import Split, embedding_training_batches, training_batches
from facefold.embeddings.shards import EmbeddingSplit
from facefold.models.cnn import FusedBatchNorm, build_model, relu_layer_names
from facefold.models.families import family_of, leaf_configs
from facefold.models.head import build_head
from facefold.models.presets import get_preset, list_presets
from facefold.train.optim import compile_model


def closed_form_parameters(spec: ModelSpec, classes: int) -> int:
    """Weights + biases counted by hand: a conv has k*k*in*out weights plus a bias per output,
    or with batch norm 4 per output (scale, offset, moving mean and variance) and no bias;
    residual stages (from the second) add a second conv and, where the width changes, a 1x1
    projection; dense layers in*out + out, their input the flattened last pool or, with global
    pooling, its channels; cosine logits have no bias."""
    per_output = 4 if spec.batch_norm else 1

    def conv(kernel: int, channels_in: int, width: int) -> int:
        return kernel**2 * channels_in * width + per_output * width

    total, channels_in, side = 0, spec.channels, spec.input_size
    for i, width in enumerate(spec.conv_channels, start=1):
        total += conv(spec.kernel_size, channels_in, width)
        if spec.residual and i > 1:
            total += conv(spec.kernel_size, width, width)
            total += conv(1, channels_in, width) if channels_in != width else 0
        channels_in, side = width, -(-side // 2)  # SAME pooling with stride 2: ceil(side / 2)
    units_in = channels_in if spec.global_pool else side * side * channels_in
    for units in spec.dense_units:
        total += units_in * units + units
        units_in = units
    return total + units_in * classes + (0 if spec.cosine_scale else classes)  # cosine: no bias


def test_parameter_counts_of_the_2016_models() -> None:
    # Numbers from the issue, for 40 people; also checked against the closed form.
    assert build_model(get_preset("seed").model, 40).count_params() == 4_371_052
    assert build_model(get_preset("reduced").model, 40).count_params() == 359_176
    # Hand count of the seed model: convs 896 + 13,872 + 31,176 + 70,092; dense 6*6*108*1024 + 1024,
    # 1024*256 + 256, 256*40 + 40.
    assert 896 + 13_872 + 31_176 + 70_092 + 3_982_336 + 262_400 + 10_280 == 4_371_052


def test_parameter_count_of_the_modern_model() -> None:
    # 18 people. Stem conv1a 3*3*3*16 + 4*16 (batch norm, no bias) = 496. A residual stage
    # C_in -> C: conv a 9*C_in*C + 4C, conv b 9*C*C + 4C, 1x1 projection C_in*C + 4C:
    # stage 2 4,736 + 9,344 + 640, stage 3 14,016 + 20,928 + 1,728, stage 4 41,856 + 83,328
    # + 4,992. Global pooling leaves 96 features; logits 96*18 + 18 = 1,746.
    by_hand = 496 + (4_736 + 9_344 + 640) + (14_016 + 20_928 + 1_728) + (
        41_856 + 83_328 + 4_992) + 1_746
    assert by_hand == 183_810
    assert build_model(get_preset("modern").model, 18).count_params() == by_hand


def _tiny_split(spec: ModelSpec, rng: np.random.Generator, classes: int = 3) -> Split:
    """Eight random images a little larger than the crop, labels 0..classes-1."""
    side = spec.crop_size + 4
    images = rng.integers(0, 256, (8, side, side, spec.channels), dtype=np.uint8)
    return Split(images, (np.arange(8) % classes).astype(np.int32))


def _head_parameters(spec: ModelSpec, classes: int) -> int:
    """An embedding head by hand: the pretrained top of a cut embedding in*out (no bias), dense
    layers in*out + out from the embedding's size; cosine logits have no bias."""
    total, units_in = 0, EMBEDDING_DIMS[spec.embedding]
    if spec.embedding in EMBEDDING_TOPS:
        units = EMBEDDING_TOPS[spec.embedding]["units"]
        total, units_in = units_in * units, units
    for units in spec.dense_units:
        total, units_in = total + units_in * units + units, units
    return total + units_in * classes + (0 if spec.cosine_scale else classes)


def _check_cnn_builds_and_runs(spec: ModelSpec, rng: np.random.Generator):
    """Closed-form size, finite logits of the right shape, the ReLU layer names; returns
    ``(model, batch, training split)``."""
    model = build_model(spec, 7)
    assert model.count_params() == closed_form_parameters(spec, 7)
    batch = rng.random((2, spec.crop_size, spec.crop_size, spec.channels)).astype("float32")
    assert relu_layer_names(model) == [
        *(f"conv{i}" for i in range(1, len(spec.conv_channels) + 1)),
        *(f"fc{i}" for i in range(1, len(spec.dense_units) + 1)),
    ]
    return model, batch, _tiny_split(spec, rng)


def _check_head_builds_and_runs(spec: ModelSpec, rng: np.random.Generator):
    """The same for an embedding head, on random embeddings (no embedding model needed)."""
    model = build_head(spec, 7)
    assert model.count_params() == _head_parameters(spec, 7)
    dim = EMBEDDING_DIMS[spec.embedding]
    batch = rng.normal(size=(2, 2, dim)).astype("float32")  # two images, two views each
    embeddings = rng.normal(size=(8, 2, dim)).astype("float32")
    return model, batch, EmbeddingSplit(embeddings, (np.arange(8) % 3).astype(np.int32),
                                        np.zeros(8, bool))


# Trained in graph mode, as the trainer trains: tracing a preset's training step costs 4-15 s
# on a 2-core CPU, most of the time of this file when every preset was traced. Together these
# switch every option any preset uses both on and off (checked by
# test_the_compiled_presets_switch_every_option_on_and_off); every other preset takes the same
# three steps eagerly, through the same layers, optimizer, loss and augmentation code.
COMPILED = ("seed", "grayscale", "size32-area", "modern", "fast-cosface", "fast-droppath",
            "fast-mixup", "fast-cutmix", "dlib128", "dlib128-single")
# Options that draw other numbers through the same graph, for any value; a teacher's, which
# only change the targets (the graph then takes soft targets as with mixup, fast-mixup above;
# tests/test_distill.py trains distilled runs end to end); and crop TTA, which only changes
# the inference model around the trained network (tests/test_crop_tta.py).
SAME_GRAPH_FOR_ANY_VALUE = {("train", "seed"), ("train", "teacher"), ("train", "teacher_weight"),
                            ("train", "teacher_views"), ("model", "tta_crops")}


def _as_trained_here(cfg: Config) -> Config:
    """``cfg`` as this file trains it: batches of 4 and a warm-up of at most one step."""
    return cfg.replace(train={"batch_size": 4, "warmup_steps": min(cfg.train.warmup_steps, 1)})


def _options(cfg: Config) -> set[tuple[str, str, bool]]:
    """``(section, option, set)`` for every option of ``cfg``'s model, augmentation and
    training: ``set`` is True where the value is not the default one."""
    default = Config()
    return {(section, f.name, getattr(ours, f.name) != getattr(theirs, f.name))
            for section in ("model", "augment", "train")
            for ours, theirs in [(getattr(cfg, section), getattr(default, section))]
            for f in dataclasses.fields(ours)
            if (section, f.name) not in SAME_GRAPH_FOR_ANY_VALUE}


def _leaf_presets() -> list[Config]:
    return [_as_trained_here(leaf) for name in list_presets()
            for leaf in leaf_configs(get_preset(name))]


def test_the_compiled_presets_switch_every_option_on_and_off() -> None:
    """Every option some preset sets, and every option some preset leaves at its default, is
    also set (resp. left) by one of the presets trained in graph mode."""
    assert set(COMPILED) <= set(list_presets())
    used = set().union(*(_options(cfg) for cfg in _leaf_presets()))
    compiled = set().union(*(_options(_as_trained_here(get_preset(n))) for n in COMPILED))
    assert used - compiled == set()
    # Not trivially: some options are switched both ways, and both model families are there.
    assert ("model", "batch_norm", True) in compiled and ("model", "batch_norm", False) in compiled
    assert {bool(get_preset(n).model.embedding) for n in COMPILED} == {True, False}


def _check_trains(cfg: Config, compiled: bool) -> None:
    """Build, run forward, and train three steps of ``cfg``'s own recipe on a tiny batch: in
    graph mode when ``compiled``, else eagerly."""
    spec, rng = cfg.model, np.random.default_rng(0)
    if spec.embedding:
        model, batch, split = _check_head_builds_and_runs(spec, rng)
        batches = embedding_training_batches(split, cfg.augment.flip, 4, 0, 0, 3)
    else:
        model, batch, split = _check_cnn_builds_and_runs(spec, rng)
        batches = training_batches(split, cfg.augment, spec.crop_size, 4, 0, 0, 3, num_classes=7)
    compile_model(model, cfg)
    model.run_eagerly = not compiled  # predict and fit alike
    logits = model.predict(batch, verbose=0)
    assert logits.shape == (2, 7)
    assert np.isfinite(logits).all()
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(batches, epochs=1, steps_per_epoch=3, shuffle=False, verbose=0)
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"]).all()
    assert np.isfinite(model.predict(batch, verbose=0)).all()
    changed = [not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True)]
    assert any(changed)


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_builds_runs_and_trains(name: str) -> None:
    """Every preset: closed-form size, finite logits of the right shape, the ReLU layer names,
    and three training steps of its own recipe (optimizer, loss, augmentation) on a tiny batch,
    in graph mode for the presets in :data:`COMPILED`, eagerly for the others.
    An ensemble's members are registered presets unchanged, each trained under its own name
    here, so for an ensemble that is what is checked (training them again took 80 s)."""
    cfg = get_preset(name)
    if cfg.model.members:
        assert leaf_configs(cfg) == [get_preset(m) for m in cfg.model.members]
        assert set(cfg.model.members) <= set(list_presets())
        return
    for member in leaf_configs(cfg):
        _check_trains(_as_trained_here(member), compiled=name in COMPILED)


@pytest.mark.parametrize(("name", "networks", "dependencies"), [
    ("seed", ["seed"], []),
    ("dlib128", ["dlib128"], []),
    ("fast-64-distilled", ["fast-64-distilled"], ["fast-64-long", "fast-64-wide"]),
    ("ensemble-weighted", ["fast", "dlib128"], ["fast", "dlib128"]),
])
def test_a_family_names_the_runs_a_model_is_made_of(name: str, networks: list[str],
                                                    dependencies: list[str]) -> None:
    """What trains a network, and which same-fold runs of other presets a run needs (the
    teacher fast-64-duo is an ensemble: its members teach)."""
    config = get_preset(name)
    family = family_of(config)
    assert [c.preset for c in family.networks(config)] == networks
    assert [c.preset for c in family.dependencies(config)] == dependencies


@pytest.mark.parametrize(("name", "kind", "soft"), [
    ("seed", None, False),
    ("fast-mixup", None, True),
    ("fast-64-distilled", None, True),
    ("dlib128", "embedding head", False),
    ("ensemble-weighted", "ensemble", False),
])
def test_a_family_answers_for_its_network(name: str, kind: str | None, soft: bool) -> None:
    """Conv layers (what activations, sparsity and the bench need) and soft training targets
    (mixup, a teacher), asked of the family."""
    config = get_preset(name)
    family = family_of(config)
    if kind is None:
        family.require_conv_layers(config, "analyze activations")
    else:
        with pytest.raises(ValueError, match=rf"^bench works on CNN presets only; preset "
                           rf"'{name}' is an {kind}$"):
            family.require_conv_layers(config, "bench")
    if name != "ensemble-weighted":  # an ensemble trains no network of its own
        assert family.soft_targets(config) is soft


def test_cosine_head_logits_are_scaled_cosines() -> None:
    spec = dataclasses.replace(get_preset("dlib128").model, cosine_scale=10.0, tta_flip=False)
    model = build_head(spec, 3, seed=1)
    x = np.random.default_rng(3).normal(size=(4, 1, 128)).astype("float32")
    kernel = model.get_layer("logits").kernel.numpy()
    features = x[:, 0] / np.linalg.norm(x[:, 0], axis=1, keepdims=True)
    expected = 10.0 * features @ (kernel / np.linalg.norm(kernel, axis=0, keepdims=True))
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    two_views = np.concatenate([x, -x], axis=1)  # the mean of x and -x is 0 ...
    assert np.allclose(model.get_layer("view_mean")(two_views), 0.0)  # ... averaged before logits


def test_cosine_cnn_logits_are_scaled_cosines_of_the_features() -> None:
    spec = dataclasses.replace(get_preset("fast-nogap").model, crop_size=32, input_size=32,
                               cosine_scale=16.0, tta_flip=False)
    model = build_model(spec, 4, seed=2)
    assert model.count_params() == closed_form_parameters(spec, 4)
    x = np.random.default_rng(5).random((3, 32, 32, 3)).astype("float32")
    features = keras.Model(model.input, model.get_layer("logits").input).predict(x, verbose=0)
    kernel = model.get_layer("logits").kernel.numpy()
    cosines = (features / np.linalg.norm(features, axis=1, keepdims=True)) @ (
        kernel / np.linalg.norm(kernel, axis=0, keepdims=True))
    logits = model.predict(x, verbose=0)
    np.testing.assert_allclose(logits, 16.0 * cosines, rtol=1e-5, atol=1e-5)
    assert np.abs(logits).max() <= 16.0 + 1e-4


def test_drop_path_drops_whole_residual_branches_per_image() -> None:
    spec = dataclasses.replace(get_preset("fast-droppath").model, crop_size=16, input_size=16,
                               drop_path=0.6, tta_flip=False)
    model = build_model(spec, 3, seed=1)
    assert model.count_params() == closed_form_parameters(spec, 3)  # it adds no weights
    layers = [model.get_layer(f"conv{i}_drop_path") for i in (2, 3, 4)]
    assert [round(layer.rate, 6) for layer in layers] == [0.2, 0.4, 0.6]  # linear to the last
    gamma = model.get_layer("conv4b_bn").gamma  # zero at init (a block starts as identity)
    gamma.assign(np.ones(gamma.shape, "float32"))
    probe = keras.Model(model.input, [layers[-1].input, layers[-1].output])
    x = np.random.default_rng(0).random((64, 16, 16, 3)).astype("float32")
    branch, dropped = (t.numpy() for t in probe(x, training=True))
    kept = np.array([np.allclose(d, b / 0.4, rtol=1e-5, atol=1e-6) for b, d in
                     zip(branch, dropped, strict=True)])
    zeroed = np.array([not d.any() for d in dropped])
    assert (kept ^ zeroed).all()  # each image keeps its whole branch, scaled, or none of it
    assert 10 < zeroed.sum() < 60  # about 60 % of 64 dropped
    branch, dropped = (t.numpy() for t in probe(x, training=False))
    np.testing.assert_array_equal(branch, dropped)  # inference keeps every branch


def test_flip_tta_is_the_mean_over_the_image_and_its_mirror() -> None:
    spec = dataclasses.replace(get_preset("modern").model, crop_size=32, input_size=32)
    tta = build_model(spec, 5, seed=3)
    plain = build_model(dataclasses.replace(spec, tta_flip=False), 5, seed=3)
    plain.set_weights(tta.get_weights())  # TTA adds no weights
    x = np.random.default_rng(2).random((3, 32, 32, 3)).astype("float32")
    expected = (plain.predict(x, verbose=0) + plain.predict(x[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_allclose(tta.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    # Training sees each image once, as the plain model does (BN then uses batch statistics).
    np.testing.assert_allclose(tta(x, training=True), plain(x, training=True), atol=1e-6)
    assert not np.allclose(plain.predict(x, verbose=0), expected, atol=1e-4)  # the flip matters


def test_fused_batch_norm_trains_like_keras_batch_norm() -> None:
    """Same outputs, same moving statistics (Keras's biased variance) after one training call."""
    x = np.random.default_rng(4).normal(2.0, 3.0, (6, 5, 5, 4)).astype("float32")
    ours, keras_bn = FusedBatchNorm(momentum=0.9), keras.layers.BatchNormalization(momentum=0.9)
    out_ours, out_keras = ours(x, training=True), keras_bn(x, training=True)
    np.testing.assert_allclose(out_ours, out_keras, atol=1e-4)
    for a, b in zip(ours.weights, keras_bn.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    mean = x.mean(axis=(0, 1, 2))
    np.testing.assert_allclose(ours.moving_mean.numpy(), 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(ours.moving_variance.numpy(), 0.9 + 0.1 * x.var(axis=(0, 1, 2)),
                               rtol=1e-5)
    np.testing.assert_allclose(ours(x, training=False), keras_bn(x, training=False), atol=1e-5)


def test_dropout_state_is_saved_with_the_model(tmp_path: Path) -> None:
    """Keras does not save a Dropout's seed state; ours does, so masks continue after a resume."""
    spec = dataclasses.replace(get_preset("modern").model, crop_size=32, input_size=32)
    model = build_model(spec, 3)
    x = np.random.default_rng(5).random((2, 32, 32, 3)).astype("float32")
    model(x, training=True)  # draws a mask: the state moves
    state = model.get_layer("dropout").seed_generator.state.numpy()
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.get_layer("dropout").seed_generator.state.numpy(), state)
    np.testing.assert_array_equal(loaded(x, training=True), model(x, training=True))


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
