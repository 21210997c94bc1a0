"""Sparsity tracking during training, `analyze sparsity` and `analyze activations`."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import class_pattern, make_tiny_dataset, tiny_config
from PIL import Image

from facefold.cli import main
from facefold.config import Config, ModelSpec
from facefold.data.images import ImageError
from facefold.data.pipeline import concat, decode_shards, training_batches
from facefold.evaluate.cv import collect
from facefold.models.cnn import build_model, relu_layer_names
from facefold.report.activations import analyze_activations, dead_channels, prepare_image
from facefold.report.sparsity import analyze_sparsity, live_units
from facefold.runs import SPARSITY_FILE, latest_checkpoint, read_metrics, read_sparsity
from facefold.train import train
from facefold.train import trainer as trainer_module
from facefold.train.sparsity import SparsityMeter, SparsityTracker, zero_fraction

CONFIG = tiny_config(steps=10, eval_every=5, sparsity_every=5)


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The conftest tiny dataset (4 people, 3 shards of 8 each, 40x40), once for the module."""
    return make_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-step run measuring sparsity every 5 steps, as case 0 of a cross-validation folder."""
    out = tmp_path_factory.mktemp("cv") / "case-0"
    train(data, CONFIG, out, [0], log=quiet)
    return out


@pytest.fixture
def face(tmp_path: Path) -> Path:
    path = tmp_path / "face.png"
    Image.fromarray(class_pattern(2, np.random.default_rng(5), 40)).save(path)
    return path


def test_zero_fraction_counts_exact_zeros() -> None:
    assert zero_fraction(np.array([0.0, 1.0, -0.0, 2.0, np.nan, 0.0])) == 0.5
    acts = tf.nn.relu(tf.random.stateless_normal((4, 5, 6, 7), seed=(1, 2)))
    assert zero_fraction(acts) == pytest.approx(float((acts.numpy() == 0).mean()), abs=1e-7)
    assert math.isnan(zero_fraction(np.zeros((0, 3))))


def test_meter_on_hand_set_weights() -> None:
    spec = ModelSpec(conv_channels=(4, 6), dense_units=(8,), crop_size=16, input_size=16)
    model = build_model(spec, num_classes=3)
    # conv1: zero kernel, so its output is relu(bias): channels 0 and 2 exactly 0, 1 and 3 one.
    model.get_layer("conv1").set_weights(
        [np.zeros((3, 3, 3, 4), np.float32), np.array([-1.0, 1.0, -0.5, 1.0], np.float32)]
    )
    x = tf.random.stateless_uniform((5, 16, 16, 3), seed=(3, 4))
    fractions = SparsityMeter(model)(x)
    assert list(fractions) == ["conv1", "conv2", "fc1"]
    assert fractions["conv1"] == 0.5
    for name in ("conv2", "fc1"):  # independently: each layer through its own keras.Model
        acts = keras.Model(model.inputs, model.get_layer(name).output).predict(x, verbose=0)
        assert fractions[name] == pytest.approx(float((acts == 0).mean()), abs=1e-6)


def test_run_logs_sparsity_at_every_nth_step(run: Path) -> None:
    rows = read_sparsity(run)
    assert [r["step"] for r in rows] == [0, 5, 10]
    assert all(set(r) == {"step", "conv1", "conv2", "conv3", "conv4", "fc1", "fc2"} for r in rows)
    assert all(0.0 <= r[k] <= 1.0 for r in rows for k in r if k != "step")
    metrics = read_metrics(run)  # eval rows stay one per evaluation, each with its sparsity
    assert [m["step"] for m in metrics] == [0, 5, 10]
    assert [m["sparsity"] for m in metrics] == rows
    result = collect(run.parent, [0])  # the cross-validation still reads the metrics
    assert result.steps == [0, 5, 10] and not np.isnan(result.accuracy).any()
    tags = set()
    for events in (run / "tensorboard" / "train").iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            tags |= {(v.tag, event.step) for v in event.summary.value}
    assert {("conv1/sparsity", 5), ("fc2/sparsity", 10)} <= tags


def test_logged_sparsity_is_training_batch_s_after_s_updates(run: Path, data: Path) -> None:
    model = keras.models.load_model(run / "checkpoints" / "step-000005.keras")
    split = concat(decode_shards(data)[1:])  # the run holds out shard 0
    t = CONFIG.train
    x, _ = next(iter(training_batches(split, CONFIG.augment, 32, t.batch_size, t.seed, 5, 6)))
    logged = read_sparsity(run)[1]
    assert logged["step"] == 5
    for name in relu_layer_names(model):
        acts = keras.Model(model.inputs, model.get_layer(name).output).predict(x, verbose=0)
        assert logged[name] == pytest.approx(float((acts == 0).mean()), abs=1e-6), name


def test_resumed_run_logs_the_same_sparsity(
    run: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def killed(self, row, seconds):
        raise KeyboardInterrupt  # right after the step-5 checkpoint

    with monkeypatch.context() as patch:
        patch.setattr(trainer_module.Trainer, "_log_progress", killed)
        with pytest.raises(KeyboardInterrupt):
            train(data, CONFIG, tmp_path / "resumed", [0], log=quiet)
    assert latest_checkpoint(tmp_path / "resumed")[0] == 5
    train(data, CONFIG, tmp_path / "resumed", [0], log=quiet)
    assert read_sparsity(tmp_path / "resumed") == read_sparsity(run)


def test_sparsity_every_zero_is_inert(tmp_path: Path) -> None:
    config = tiny_config(sparsity_every=0)
    model = build_model(config.model, num_classes=2)
    tracker = SparsityTracker(tmp_path, model, config, make_batch=None)
    tracker.resume(0)
    assert tracker.chunks(0, 250) == [(0, 250)]  # one fit: nothing to measure between
    tracker.measure_if_due(100)
    assert tracker.annotate({"step": 0}) == {"step": 0}
    tracker.save()
    assert not (tmp_path / SPARSITY_FILE).exists()
    with pytest.raises(ValueError, match="sparsity tracking is off"):
        tracker.measure(100)
    with pytest.raises(ValueError, match=r"train\.sparsity_every must be >= 0"):
        tiny_config(sparsity_every=-1)


def test_training_is_cut_into_epochs_that_end_on_measurement_steps(tmp_path: Path) -> None:
    config = tiny_config(sparsity_every=100)
    tracker = SparsityTracker(tmp_path, build_model(config.model, 2), config, make_batch=None)
    assert tracker.chunks(0, 250) == [(0, 100), (100, 200), (200, 250)]
    assert tracker.chunks(150, 400) == [(150, 200), (200, 300), (300, 400)]  # after a resume
    assert tracker.chunks(100, 200) == [(100, 200)]
    with pytest.raises(ValueError, match="without make_batch"):
        tracker.measure(100)


def test_live_units_arithmetic() -> None:
    assert live_units(1024, 0.90625) == 96  # 1024 x 0.09375
    assert live_units(256, 0.5) == 128
    assert live_units(25, 0.5) == 13  # 12.5 rounds half up
    assert live_units(10, 1.0) == 0
    with pytest.raises(ValueError, match="sparsity must be in"):
        live_units(10, 1.5)


def _fake_run(folder: Path, dense: list[int], rows: list[dict]) -> Path:
    """A run folder holding only what `analyze sparsity` reads: config.json and sparsity.jsonl."""
    folder.mkdir(parents=True)
    config = Config().replace(model={"dense_units": dense})
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    (folder / SPARSITY_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_analyze_sparsity_reports_live_units_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    a = _fake_run(tmp_path / "a", [1024, 256], [
        {"step": 0, "conv1": 0.4, "fc1": 0.5, "fc2": 0.2},
        {"step": 100, "conv1": 0.6, "fc1": 0.90625, "fc2": 0.5},
    ])
    b = _fake_run(tmp_path / "b", [96, 128], [{"step": 50, "conv1": 0.3, "fc1": 0.25, "fc2": 0.0}])
    text = analyze_sparsity([a, b])
    table = {tuple(line.split()[:2]): line.split()[2:] for line in text.splitlines()[1:-1]}
    assert table == {
        ("a", "fc1"): ["1024", "100", "0.906", "96"],
        ("a", "fc2"): ["256", "100", "0.500", "128"],
        ("b", "fc1"): ["96", "50", "0.250", "72"],
        ("b", "fc2"): ["128", "50", "0.000", "128"],
    }
    assert Image.open(a / "sparsity.png").format == "PNG"
    assert main(["analyze", "sparsity", str(a), "--out", str(tmp_path / "s.png")]) == 0
    assert "1024" in capsys.readouterr().out and (tmp_path / "s.png").is_file()


def test_analyze_sparsity_bad_runs(tmp_path: Path, run: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope does not exist"):
        analyze_sparsity([run, tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"sparsity\.jsonl is missing"):
        analyze_sparsity([tmp_path / "empty"])
    assert not (run / "sparsity.png").exists()  # nothing written when any run is bad


def test_activation_grids_one_per_conv_layer(
    run: Path, face: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "grids"
    assert main(["analyze", "activations", str(run), str(face), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "checkpoint step 10" in printed and "dead on eval" in printed
    pngs = sorted(p.name for p in out.iterdir())
    assert pngs == [f"face-conv{i}.png" for i in range(1, 5)]
    assert all(Image.open(out / p).format == "PNG" for p in pngs)


def test_image_is_prepared_like_an_eval_crop() -> None:
    picture = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    rgb = prepare_image(Image.fromarray(picture), 40, 32, 3)
    assert rgb.shape == (1, 32, 32, 3) and rgb.dtype == np.float32 and rgb.max() <= 1.0
    gray = prepare_image(Image.fromarray(picture), 40, 32, 1)
    assert gray.shape == (1, 32, 32, 1)
    square = np.asarray(Image.fromarray(picture).crop((10, 0, 70, 60)).resize(
        (40, 40), Image.Resampling.LANCZOS), np.float32) / 255.0  # ImageOps.fit by hand
    np.testing.assert_allclose(rgb[0], square[4:36, 4:36], atol=1 / 255 + 1e-6)


def test_dead_channels_match_a_hand_computation(
    run: Path, data: Path, face: Path, tmp_path: Path
) -> None:
    # A copy of the run whose newest checkpoint has conv2 channels 3 and 7 switched off.
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("run.json", "config.json"):
        shutil.copy(run / name, copy / name)
    model = keras.models.load_model(run / "checkpoints" / "step-000010.keras", compile=False)
    kernel, bias = model.get_layer("conv2").get_weights()
    kernel[..., [3, 7]] = 0.0
    bias[[3, 7]] = 0.0
    model.get_layer("conv2").set_weights([kernel, bias])
    (copy / "checkpoints").mkdir()
    model.save(copy / "checkpoints" / "step-000010.keras")

    report = analyze_activations(copy, face, log=quiet)
    # By hand: conv2 outputs of every eval image (shard 0, central 32x32 crops) through Keras.
    eval_images = decode_shards(data)[0].images
    top = (40 - 32) // 2
    crops = eval_images[:, top : top + 32, top : top + 32].astype(np.float32) / 255.0
    acts = keras.Model(model.inputs, model.get_layer("conv2").output).predict(crops, verbose=0)
    by_hand = np.flatnonzero(~(acts != 0).any(axis=(0, 1, 2))).tolist()
    assert {3, 7} <= set(by_hand)
    assert report.dead_in_eval["conv2"] == by_hand
    assert {3, 7} <= set(report.dead_in_image["conv2"])
    untouched = dead_channels(
        keras.models.load_model(run / "checkpoints" / "step-000010.keras", compile=False),
        decode_shards(data)[0], 32, 256,
    )
    assert sorted({*untouched["conv2"], 3, 7}) == by_hand  # exactly those two were added
    assert report.eval_images == 32
    assert len(list((copy / "analysis" / "activations").glob("face-conv*.png"))) == 4


def test_activations_bad_inputs_change_nothing(
    run: Path, face: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    with pytest.raises(FileNotFoundError, match="not a facefold run folder"):
        analyze_activations(tmp_path / "nope", face, log=quiet)
    no_checkpoints = tmp_path / "fresh"
    no_checkpoints.mkdir()
    shutil.copy(run / "run.json", no_checkpoints / "run.json")
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        analyze_activations(no_checkpoints, face, log=quiet)
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    with pytest.raises(ImageError, match=r"notes\.jpg: not an image"):
        analyze_activations(run, text, log=quiet)
    assert main(["analyze", "activations", str(run), str(text)]) == 1
    assert "notes.jpg: not an image" in capsys.readouterr().err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    assert list(no_checkpoints.iterdir()) == [no_checkpoints / "run.json"]
