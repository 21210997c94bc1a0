"""Crop test-time augmentation (``model.tta_crops``): seven windows of each picture averaged.

The windows are checked against a hand count, the inference model against the network run
on each window separately, and a run trained with the option against a run trained without
it and evaluated with ``--tta-crops`` (the option changes inference only, so the two agree).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config
from PIL import Image

from facefold import runs
from facefold.bench import bench_model
from facefold.cli import main
from facefold.data.pipeline import decode_shards
from facefold.evaluate.cv import run_cv
from facefold.evaluate.heldout import InferenceOptions, evaluate_run
from facefold.export import export_run
from facefold.models.cnn import build_model
from facefold.models.inference import inference_model, tta_windows
from facefold.models.presets import get_preset
from facefold.predict import Predictor

QUIET = lambda _: None  # noqa: E731


def test_the_seven_windows_by_hand() -> None:
    # A 112 px image, 96 px crop: the centre window starts at 8; shifts of 4 either way; the
    # squares of 104 and 88 are centred (starts 4 and 12).
    assert tta_windows(112, 96) == [(96, 8, 8), (96, 4, 4), (96, 4, 12), (96, 12, 4),
                                    (96, 12, 12), (104, 4, 4), (88, 12, 12)]
    # 2 px of margin on each side: the shifts are cut to 2, the larger square to the image.
    assert tta_windows(44, 40) == [(40, 2, 2), (40, 0, 0), (40, 0, 4), (40, 4, 0), (40, 4, 4),
                                   (44, 0, 0), (32, 6, 6)]
    # No margin: every shift is the centre crop.
    assert tta_windows(40, 40)[:5] == [(40, 0, 0)] * 5


def test_the_inference_model_averages_the_network_over_the_windows() -> None:
    spec = dataclasses.replace(get_preset("fast-64-long").model, crop_size=40, input_size=40,
                               tta_crops=True)
    model = build_model(spec, 3, seed=2)
    images = np.random.default_rng(1).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    expected = []
    for size, top, left in tta_windows(48, 40):
        window = images[:, top:top + size, left:left + size].astype(np.float32) / 255.0
        if size != 40:  # resized to the crop as the trained network's antialiased resize does
            window = tf.image.resize(window, (40, 40), antialias=True).numpy()
        expected.append(model.predict(window, verbose=0))
    got = inference_model(model, spec, 48).predict(images, verbose=0)["logits"]
    np.testing.assert_allclose(got, np.mean(expected, axis=0), rtol=1e-4, atol=1e-4)
    plain = inference_model(model, dataclasses.replace(spec, tta_crops=False), 48)
    assert not np.allclose(plain.predict(images, verbose=0)["logits"], got, atol=1e-4)


@pytest.mark.slow
def test_crop_tta_in_training_is_crop_tta_at_evaluation(tiny_dataset: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    plain = tiny_config(8, 8, "fast-64-long", sparsity_every=0)
    cropped = plain.replace(model={"tta_crops": True})
    for name, config in (("plain", plain), ("cropped", cropped)):
        run_cv(tiny_dataset, config, tmp_path / name, "0", log=QUIET)
    trained = runs.read_predictions(runs.case_dir(tmp_path / "cropped", 0))
    # The option does not change training: the same weights, evaluated with the crops.
    evaluated = evaluate_run(runs.case_dir(tmp_path / "plain", 0),
                             InferenceOptions(crops=True), log=QUIET)
    np.testing.assert_allclose(evaluated.probabilities, trained["probabilities"], atol=1e-5)
    rows = runs.read_metrics(runs.case_dir(tmp_path / "cropped", 0))
    assert rows[-1]["eval_accuracy"] == pytest.approx(
        np.mean(trained["probabilities"].argmax(axis=1) == trained["labels"]))
    # The command line says what it applied.
    capsys.readouterr()
    assert main(["evaluate", str(runs.case_dir(tmp_path / "plain", 0)), "--tta-crops",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["options"]["crops"] is True
    assert all(applied["crops"] for applied in report["applied"].values())
    assert report["accuracy"] == pytest.approx(
        np.mean(trained["probabilities"].argmax(axis=1) == trained["labels"]))
    # An export holds the seven windows too, in every format (TFLite: slices and matrix
    # resizes only).
    images = [Image.fromarray(a) for a in decode_shards(tiny_dataset)[0].images]
    run = Predictor.load(runs.case_dir(tmp_path / "cropped", 0))
    np.testing.assert_allclose(run.predict_crops(images), trained["probabilities"], atol=1e-5)
    exported = export_run(runs.case_dir(tmp_path / "cropped", 0), "tflite", tmp_path / "lite")
    np.testing.assert_allclose(Predictor.load(exported).predict_crops(images),
                               trained["probabilities"], atol=1e-3)
    # And the per-face timing runs the same seven windows.
    timed = bench_model(runs.case_dir(tmp_path / "plain", 0), tiny_dataset, faces=3,
                        log=QUIET, crops=True)
    assert timed["tta_crops"] is True and timed["per_face_median_ms"] > 0


def test_crop_tta_is_refused_where_there_is_no_picture() -> None:
    with pytest.raises(ValueError, match="tta_crops crops the pictures a CNN reads"):
        get_preset("dlib128").replace(model={"tta_crops": True})
