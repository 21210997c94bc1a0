"""Prediction, export, open-set scores: a tiny trained run, every export format, hand examples."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import make_tiny_dataset, shared_dataset_path, tiny_config
from PIL import Image
from scipy.stats import mannwhitneyu

import facefold.predict.files as files_module
import facefold.predict.predictor as predictor_module
from facefold.cli import main
from facefold.data.images import NotAnImageError, load_rgb
from facefold.data.pipeline import decode_shards
from facefold.evaluate.openset import open_set_report
from facefold.evaluate.openset_cv import choose_unknown_people, split_people
from facefold.export import export_run
from facefold.models.inference import MatrixResize
from facefold.models.scores import (
    NEAREST_AT_LEAST,
    NEAREST_SHARE,
    SCORES,
    auroc,
    class_centroids,
    nearest_similarity,
    open_set_scores,
    person_pictures,
    person_similarity,
    threshold_at_far,
)
from facefold.predict import (
    UNKNOWN,
    NoFaceError,
    Predictor,
    load_detector,
    predict_files,
)
from facefold.train import train


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(dataset, run)``: 4 people, 40x40 images, 32x32 crops, trained 40 steps on shards 1-2."""
    root = tmp_path_factory.mktemp("predict")
    data = make_tiny_dataset(root / "data")
    run = root / "run"
    train(data, tiny_config(steps=40, eval_every=40, sparsity_every=0), run, [0],
          log=lambda _: None)
    return data, run


@pytest.fixture(scope="module")
def predictor(tiny_run: tuple[Path, Path]) -> Predictor:
    return Predictor.load(tiny_run[1])


def shard_images(data: Path, shard: int = 0) -> tuple[list[Image.Image], np.ndarray]:
    split = decode_shards(data)[shard]
    return [Image.fromarray(im) for im in split.images], split.labels


# ---------------------------------------------------------------- prediction


def test_predict_crops_agrees_with_the_runs_own_evaluation(tiny_run, predictor):
    data, run = tiny_run
    images, _ = shard_images(data)
    probabilities = predictor.predict_crops(images)
    evaluated = np.load(run / "predictions.npz")  # the trainer's evaluation of shard 0
    assert predictor.info.image_size == 40  # read from the dataset's first shard (no manifest)
    np.testing.assert_array_equal(probabilities.argmax(1), evaluated["probabilities"].argmax(1))
    np.testing.assert_allclose(probabilities, evaluated["probabilities"], atol=1e-5)
    faces = predictor.recognize(images[:3], top_k=3)
    for face, probs in zip(faces, probabilities[:3], strict=True):
        assert [n for n, _ in face.top] == [predictor.labels[c] for c in np.argsort(-probs)[:3]]
        assert face.name == face.top[0][0] and face.known and face.score is None


def test_predict_files_batches_and_names_bad_files(tiny_run, predictor, tmp_path, monkeypatch):
    images, _ = shard_images(tiny_run[0])
    paths = []
    for i, image in enumerate(images[:5]):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    (tmp_path / "notes.txt").write_text("not a picture")
    paths.insert(2, tmp_path / "notes.txt")
    whole = predict_files(predictor, paths, top_k=2)
    monkeypatch.setattr(files_module, "FILES_PER_CHUNK", 2)  # several model calls
    chunked = predict_files(predictor, paths, top_k=2)
    assert [r["image"] for r in whole] == [str(p) for p in paths]
    assert "notes.txt" in whole[2]["error"] and not whole[2]["faces"]
    for a, b in zip(whole, chunked, strict=True):
        assert [f["name"] for f in a["faces"]] == [f["name"] for f in b["faces"]]
        for fa, fb in zip(a["faces"], b["faces"], strict=True):
            assert fa["top"][0]["probability"] == pytest.approx(fb["top"][0]["probability"],
                                                                abs=1e-6)
    assert all(len(r["faces"]) == 1 and len(r["faces"][0]["top"]) == 2
               for r in whole if not r["error"])


def test_cli_predict_prints_json_and_fails_on_a_bad_file(tiny_run, tmp_path, capsys):
    images, _ = shard_images(tiny_run[0])
    images[0].save(tmp_path / "face.png")
    assert main(["predict", str(tiny_run[1]), str(tmp_path / "face.png"), "--json",
                 "--top-k", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result[0]["faces"][0]["top"]) == 3
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(SystemExit):
        main(["predict", str(tiny_run[1]), str(tmp_path / "bad.jpg")])
    assert "bad.jpg" in capsys.readouterr().out


def test_threshold_turns_low_scores_into_unknown(predictor):
    image = Image.fromarray(np.full((40, 40, 3), 128, np.uint8))
    (sure,) = predictor.recognize([image], score="msp", threshold=0.0)
    (unsure,) = predictor.recognize([image], score="msp", threshold=1.01)
    assert sure.known and sure.name != UNKNOWN
    assert not unsure.known and unsure.name == UNKNOWN and unsure.top == sure.top
    with pytest.raises(ValueError, match=r"centroids\.npy"):  # a plain run has no centroids
        predictor.recognize([image], score="cosine", threshold=0.5)
    with pytest.raises(ValueError, match="unknown score"):
        predictor.recognize([image], score="nope", threshold=0.5)


# ---------------------------------------------------------------- photos and the fallback rule


def test_fallback_rule_takes_only_crop_like_pictures(predictor, monkeypatch):
    monkeypatch.setattr(predictor_module, "load_detector", lambda: None)
    crop = Image.new("RGB", (120, 116), (90, 80, 70))
    assert predictor.face_crops(crop) == [(None, crop)]
    with pytest.raises(NoFaceError, match="not installed"):
        predictor.face_crops(Image.new("RGB", (300, 200)))
    with pytest.raises(NoFaceError):
        predictor.face_crops(Image.new("RGB", (800, 800)))  # square but too big


def test_detected_faces_are_aligned_to_the_image_size(predictor, monkeypatch):
    calls = []

    def detect_faces(image, min_score=0.9):
        return [SimpleNamespace(box=(10, 20, 50, 60), landmarks=np.zeros((5, 2)), score=0.99),
                SimpleNamespace(box=(100, 20, 30, 30), landmarks=np.ones((5, 2)), score=0.95)]

    def align_face(image, landmarks, size=112):
        calls.append(size)
        return Image.new("RGB", (size, size), (200, 50, 50))

    fake = SimpleNamespace(detect_faces=detect_faces, align_face=align_face)
    monkeypatch.setattr(predictor_module, "load_detector", lambda: fake)
    faces = predictor.recognize_photo(Image.new("RGB", (400, 300)), top_k=3)
    assert [f.box for f in faces] == [(10.0, 20.0, 50.0, 60.0), (100.0, 20.0, 30.0, 30.0)]
    assert calls == [predictor.info.image_size] * 2
    monkeypatch.setattr(fake, "detect_faces", lambda image, min_score=0.9: [])
    with pytest.raises(NoFaceError, match="no face found"):
        predictor.recognize_photo(Image.new("RGB", (400, 300)))


def test_real_detector_finds_pasted_faces(predictor):
    """Runs only when facefold.faces.detect is installed and the celeb21 crops are present."""
    if load_detector() is None:
        pytest.skip("facefold.faces.detect is not installed")
    folder = shared_dataset_path("celeb21")
    people = sorted(p for p in folder.iterdir() if p.is_dir())[:2]
    photo = Image.new("RGB", (480, 260), (235, 235, 230))
    for i, person in enumerate(people):
        face = Image.open(sorted(person.glob("*.jpg"))[0]).convert("RGB").resize((180, 180))
        photo.paste(face, (40 + i * 220, 40))
    faces = predictor.recognize_photo(photo, top_k=3)
    assert len(faces) == 2 and all(f.box is not None for f in faces)


def test_image_bytes_errors_name_the_upload():
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="PNG")
    assert load_rgb(buffer.getvalue(), "ok.png").size == (64, 64)
    with pytest.raises(NotAnImageError, match=r"x\.png: not an image"):
        load_rgb(b"hello", "x.png")
    with pytest.raises(ValueError, match=r"t\.png: corrupt or truncated"):
        load_rgb(buffer.getvalue()[:60], "t.png")


# ---------------------------------------------------------------- export


@pytest.mark.parametrize("fmt, tolerance", [("keras", 1e-5), ("savedmodel", 1e-5),
                                            ("tflite", 1e-3)])
def test_export_round_trip_gives_the_same_answers(tiny_run, predictor, tmp_path, fmt, tolerance):
    data, run = tiny_run
    images, _ = shard_images(data)
    out = export_run(run, fmt, tmp_path / "export")
    meta = json.loads((out / "export.json").read_text())
    assert meta["labels"] == predictor.labels and meta["format"] == fmt
    assert (meta["image_size"], meta["crop_size"], meta["channels"]) == (40, 32, 3)
    assert meta["facefold_version"] and meta["input"]["dtype"] == "uint8"
    exported = Predictor.load(out)
    expected, got = predictor.predict_crops(images), exported.predict_crops(images)
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))
    np.testing.assert_allclose(got, expected, atol=tolerance)
    assert predict_files(exported, [], top_k=1) == []


@pytest.fixture(scope="module")
def modern_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(dataset, run)`` of the modern preset (batch norm, residual blocks, dropout, flip TTA,
    weight average) on the tiny data, 20 steps; the average moves fast enough to matter."""
    root = tmp_path_factory.mktemp("modern")
    data = make_tiny_dataset(root / "data")
    config = tiny_config(steps=20, eval_every=20, preset="modern", warmup_steps=2,
                         ema_decay=0.9, sparsity_every=0)
    train(data, config, root / "run", [0], log=lambda _: None)
    return data, root / "run"


def test_modern_run_predicts_and_exports_what_it_evaluated(modern_run, tmp_path):
    """predict and every export use the averaged weights and the flip TTA, as evaluation did."""
    data, run = modern_run
    images, _ = shard_images(data)
    predictor = Predictor.load(run)
    expected = predictor.predict_crops(images)
    evaluated = np.load(run / "predictions.npz")["probabilities"]
    np.testing.assert_allclose(expected, evaluated, atol=1e-5)
    features = predictor.outputs(images)["features"]
    assert features.shape == (len(images), 96)  # global pooling of the last stage
    for fmt, tolerance in (("keras", 1e-5), ("savedmodel", 1e-5), ("tflite", 1e-3)):
        exported = Predictor.load(export_run(run, fmt, tmp_path / fmt))
        np.testing.assert_allclose(exported.predict_crops(images), expected, atol=tolerance)
        np.testing.assert_allclose(exported.outputs(images)["features"], features,
                                   atol=tolerance * 10)


@pytest.mark.parametrize("method", ["antialias", "bilinear", "area"])
@pytest.mark.parametrize("size_out", [24, 16, 10])
def test_matrix_resize_is_the_training_resize(size_out, method):
    import keras

    from facefold.models.cnn import RESIZE_ARGS

    interpolation, antialias = RESIZE_ARGS[method]
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
    expected = keras.layers.Resizing(size_out, size_out, interpolation=interpolation,
                                     antialias=antialias)(x).numpy()
    np.testing.assert_allclose(MatrixResize(32, size_out, method)(x).numpy(), expected,
                               atol=1e-6)


def test_matrix_resize_area_by_hand():
    x = np.random.default_rng(1).random((1, 32, 32, 1)).astype(np.float32)
    block_mean = x.reshape(1, 16, 2, 16, 2, 1).mean(axis=(2, 4))
    np.testing.assert_allclose(MatrixResize(32, 16, "area")(x).numpy(), block_mean, atol=1e-6)


def test_tflite_export_of_a_model_that_resizes(tiny_run, tmp_path):
    """TFLite has no antialiased-resize op; the export's matrix resize stands in for it."""
    data, _ = tiny_run
    config = tiny_config(steps=2, eval_every=2, sparsity_every=0).replace(model={"input_size": 16})
    train(data, config, tmp_path / "run", [0], log=lambda _: None)
    images, _ = shard_images(data)
    expected = Predictor.load(tmp_path / "run").predict_crops(images)
    evaluated = np.load(tmp_path / "run" / "predictions.npz")["probabilities"]
    np.testing.assert_allclose(expected, evaluated, atol=1e-5)  # same as keras.layers.Resizing
    got = Predictor.load(export_run(tmp_path / "run", "tflite", tmp_path / "export"))
    np.testing.assert_allclose(got.predict_crops(images), expected, atol=1e-3)


def test_cli_export_refuses_a_used_folder(tiny_run, tmp_path, capsys):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    assert main(["export", str(tiny_run[1]), "--out", str(tmp_path / "used")]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main(["export", str(tiny_run[1]), "--format", "keras",
                 "--out", str(tmp_path / "new")]) == 0
    assert (tmp_path / "new" / "model.keras").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".new")]  # no leftovers


# ---------------------------------------------------------------- bad model folders


def test_missing_labels_names_the_file(tiny_run, tmp_path):
    run = shutil.copytree(tiny_run[1], tmp_path / "run")
    (run / "labels.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"run/labels\.txt is missing"):
        Predictor.load(run)


def test_export_from_another_version_is_refused(tiny_run, tmp_path):
    out = export_run(tiny_run[1], "keras", tmp_path / "export")
    meta = json.loads((out / "export.json").read_text())
    meta.update(export_format=0, facefold_version="0.0.1")
    (out / "export.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"written by facefold 0\.0\.1.*export the run again"):
        Predictor.load(out)


def test_run_from_another_version_is_refused(tiny_run, tmp_path):
    run = shutil.copytree(tiny_run[1], tmp_path / "run")
    info = json.loads((run / "run.json").read_text())
    info["config"]["model"]["attention_heads"] = 4  # a key this version does not know
    (run / "run.json").write_text(json.dumps(info))
    (run / "versions.json").write_text(json.dumps({"facefold": "9.9.9"}))
    with pytest.raises(ValueError, match=r"made by facefold 9\.9\.9.*attention_heads"):
        Predictor.load(run)


def test_not_a_model_folder(tmp_path):
    (tmp_path / "cv").mkdir()
    (tmp_path / "cv" / "cv.json").write_text("{}")
    with pytest.raises(ValueError, match="case-0"):
        Predictor.load(tmp_path / "cv")
    with pytest.raises(FileNotFoundError, match="neither a run folder"):
        Predictor.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Predictor.load(tmp_path / "nowhere")


# ---------------------------------------------------------------- open-set pure functions


def test_auroc_hand_example_and_ties():
    # Pairs (known > unknown): 0.9 beats both, 0.8 both, 0.4 one -> 5 of 6.
    assert auroc([0.9, 0.8, 0.4], [0.5, 0.1]) == pytest.approx(5 / 6)
    assert auroc([1, 1], [1, 1]) == 0.5  # ties count one half
    assert auroc([2, 3], [0, 1]) == 1.0 and auroc([0, 1], [2, 3]) == 0.0
    with pytest.raises(ValueError, match="known and unknown"):
        auroc([], [1.0])


def test_auroc_equals_mann_whitney_u():
    rng = np.random.default_rng(0)
    known = np.round(rng.normal(1.0, 1.0, 300), 1)  # rounding makes ties
    unknown = np.round(rng.normal(0.0, 1.0, 200), 1)
    u = mannwhitneyu(known, unknown).statistic
    assert auroc(known, unknown) == pytest.approx(u / (len(known) * len(unknown)), abs=1e-12)


def test_threshold_at_far_hand_example():
    unknown = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert threshold_at_far(unknown, 0.2) == pytest.approx(0.85)  # accepts 0.9 and 1.0
    assert threshold_at_far(unknown, 0.1) == pytest.approx(0.95)  # accepts 1.0
    assert threshold_at_far(unknown, 0.05) > 1.0  # floor(0.5) = 0: accepts none
    # Ties at the boundary: accept fewer rather than more than far.
    tied = [0.5, 0.5, 0.5, 0.2]
    assert np.mean(np.asarray(tied) >= threshold_at_far(tied, 0.5)) == 0.0
    with pytest.raises(ValueError, match="far"):
        threshold_at_far(unknown, 1.0)


def test_open_set_report_hand_example():
    known = {"s": np.array([0.9, 0.8, 0.3, 0.95])}
    unknown = {"s": np.array([0.1, 0.2, 0.85, 0.4])}
    correct = np.array([True, False, True, True])
    row = open_set_report(known, unknown, correct, far=0.25)["s"]
    # One unknown of four may be accepted: the threshold lies between 0.85 and 0.4.
    assert row["threshold"] == pytest.approx(0.625)
    assert row["far"] == 0.25
    assert row["accepted"] == 0.75  # 0.3 is rejected
    assert row["known_accuracy"] == 0.5  # 0.9 right, 0.8 wrong, 0.3 rejected, 0.95 right
    assert row["auroc"] == pytest.approx(13 / 16)


def test_scores_and_centroids():
    logits = np.array([[4.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    features = np.array([[2.0, 0.0], [0.0, 3.0]])
    centroids = class_centroids(np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
                                np.array([0, 0, 1, 2]), 3)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-6)
    scores = open_set_scores(logits, features, centroids)
    assert scores["msp"][1] == pytest.approx(1 / 3)
    assert scores["max_logit"].tolist() == [4.0, 1.0]
    assert scores["energy"][1] == pytest.approx(1.0 + np.log(3))
    assert scores["cosine"].tolist() == pytest.approx([1.0, 1.0])
    assert "cosine" not in open_set_scores(logits)
    with pytest.raises(ValueError, match="class 1 has no training image"):
        class_centroids(features, np.array([0, 0]), 2)


def test_nearest_score_averages_each_persons_most_similar_pictures():
    # Angles in degrees from the x axis; the face lies at 0 degrees. Person 0's five pictures
    # fall in two looks (0-10 and 150-160 degrees), person 1's two near 40.
    degrees = [0.0, 5.0, 10.0, 150.0, 160.0, 30.0, 45.0]
    owners = np.array([0, 0, 0, 0, 0, 1, 1])
    angles = np.radians(degrees)
    pictures = person_pictures(np.stack([np.cos(angles), np.sin(angles)], axis=1) * 5.0,
                               owners, 2)  # lengths do not matter: unit rows are kept
    face = np.array([[2.0, 0.0]])
    cos = np.cos(angles)
    # The default: the top 2 % of a person's pictures but at least 3 (all of fewer).
    assert (NEAREST_SHARE, NEAREST_AT_LEAST) == (0.02, 3)
    by_hand = [(cos[0] + cos[1] + cos[2]) / 3, (cos[5] + cos[6]) / 2]
    assert nearest_similarity(face, pictures)[0].tolist() == pytest.approx(by_hand)
    # A share of 0.7 takes 3.5 of person 0's five: the fourth most similar at half weight.
    wide = nearest_similarity(face, pictures, share=0.7)[0]
    assert wide[0] == pytest.approx((cos[0] + cos[1] + cos[2] + 0.5 * cos[3]) / 3.5)
    assert wide[1] == pytest.approx(by_hand[1])
    centroids = class_centroids(pictures.features, owners, 2)
    scores = open_set_scores(np.zeros((1, 2)), face, centroids, pictures)
    assert scores["nearest"].tolist() == pytest.approx([by_hand[0]])
    # Person 0's centroid lies between the two looks (43 degrees), farther from the face
    # than person 1's (37.5): the cosine score names person 1, the nearest pictures person 0.
    assert person_similarity("cosine", face, centroids, None).argmax() == 1
    assert person_similarity("nearest", face, centroids, pictures).argmax() == 0
    with pytest.raises(ValueError, match="needs the people's pictures"):
        person_similarity("nearest", face, centroids, None)
    with pytest.raises(ValueError, match="every person needs a picture"):
        person_pictures(np.eye(2), np.array([0, 0]), 2)


def test_the_score_registry_is_what_the_cli_offers_and_what_is_computed(capsys):
    logits, features = np.array([[4.0, 0.0], [1.0, 1.0]]), np.array([[2.0, 0.0], [0.0, 3.0]])
    centroids = np.eye(2)
    pictures = person_pictures(np.eye(2), np.array([0, 1]), 2)
    assert list(open_set_scores(logits, features, centroids, pictures)) == list(SCORES)
    assert list(open_set_scores(logits, features, centroids)) == [
        name for name, score in SCORES.items() if not score.uses_pictures]
    assert list(open_set_scores(logits)) == [
        name for name, score in SCORES.items() if not score.uses_centroids]
    with pytest.raises(SystemExit):
        main(["predict", "MODEL", "face.png", "--score", "no-such-score"])
    offered = capsys.readouterr().err.split("choose from ")[1]
    assert offered.strip().rstrip(")") == ", ".join(f"'{name}'" for name in SCORES)


def test_unknown_people_are_chosen_with_the_seed_and_relabelled():
    names = [f"p{i}" for i in range(6)]
    assert choose_unknown_people(names, 2, 0) == choose_unknown_people(names, 2, 0)
    with pytest.raises(ValueError, match="between 1 and 4"):
        choose_unknown_people(names, 5, 0)
    from facefold.data.pipeline import Split

    split = Split(np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1), np.arange(6, dtype=np.int32))
    (known,), (unknown,) = split_people([split], [1, 4], 6)
    assert known.labels.tolist() == [0, 1, 2, 3] and known.images.ravel().tolist() == [0, 2, 3, 5]
    assert unknown.labels.tolist() == [1, 4]


def test_open_set_cv_stores_a_threshold_that_predict_uses(tmp_path, capsys):
    data = make_tiny_dataset(tmp_path / "data", classes=6)
    config = tmp_path / "tiny.toml"
    config.write_text("[model]\ncrop_size = 32\ninput_size = 32\n[train]\nsparsity_every = 0\n")
    out = tmp_path / "cv"
    assert main(["cv", str(data), "--folds", "0", "--unknown-people", "2", "--steps", "30",
                 "--eval-every", "30", "--batch-size", "16", "--precision", "float32",
                 "--config", str(config), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "AUROC" in printed and "cosine" in printed
    summary = json.loads((out / "openset.json").read_text())
    report = json.loads((out / "case-0" / "openset.json").read_text())
    unknown = summary["unknown_people"]
    predictor = Predictor.load(out / "case-0")
    assert len(predictor.labels) == 4 and not set(unknown) & set(predictor.labels)
    assert predictor.rejection()[0] == summary["default_score"]
    # predict rejects exactly the unknowns the evaluation counted as rejected
    names = (data / "labels.txt").read_text().split()
    images, labels = shard_images(data)
    strangers = [im for im, y in zip(images, labels, strict=True) if names[y] in unknown]
    accepted = np.mean([f.known for f in predictor.recognize(strangers)])
    assert accepted == pytest.approx(report["scores"][summary["default_score"]]["far"])
    assert accepted <= 0.05


@pytest.mark.parametrize("method", ["bilinear", "area"])
def test_inference_model_resizes_as_the_trained_model(method):
    """The deployable wrapper (uint8 image in, matrix resize) computes the trained model's
    logits for every resize method, not only the default one."""
    import dataclasses

    from facefold.models.cnn import build_model
    from facefold.models.inference import inference_model
    from facefold.models.presets import get_preset

    spec = dataclasses.replace(get_preset("size32").model, crop_size=40, input_size=20,
                               resize=method, dense_units=(16,))
    model = build_model(spec, 3, seed=4)
    images = np.random.default_rng(6).integers(0, 256, (2, 44, 44, 3), dtype=np.uint8)
    crops = images[:, 2:42, 2:42].astype(np.float32) / 255.0
    wrapped = inference_model(model, spec, 44)
    np.testing.assert_allclose(wrapped.predict(images, verbose=0)["logits"],
                               model.predict(crops, verbose=0), rtol=1e-4, atol=1e-4)
    other = dataclasses.replace(spec, resize="antialias")  # and the method is what differs
    assert not np.allclose(inference_model(model, other, 44).predict(images, verbose=0)[
        "logits"], model.predict(crops, verbose=0), atol=1e-4)
