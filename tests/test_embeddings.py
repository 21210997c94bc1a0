"""The pretrained-embedding family (dlib128) and ensembles.

Most tests use :class:`conftest.FakeEmbedder` (no dlib needed); the tests that run dlib itself
skip when the ``dlib`` extra is not installed, and the ORL test also when ../shared is absent.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeEmbedder, make_tiny_dataset, shared_dataset_path, tiny_config
from PIL import Image

from facefold.cli import main
from facefold.data.images import load_rgb
from facefold.data.records import Record, read_shard, write_shard
from facefold.embeddings import dlib128
from facefold.embeddings.cache import EmbeddingCache, content_hash
from facefold.embeddings.shards import embed_shards
from facefold.export import export_run
from facefold.models.outputs import ensemble_infer
from facefold.models.outputs import softmax as _softmax
from facefold.models.presets import member_configs
from facefold.predict import Predictor
from facefold.runs import read_metrics
from facefold.train import train
from facefold.train.ensemble import average_predictions

EXTRA = "pip install 'facefold[dlib]'"


def _held_out_crops(data: Path, shard: int = 0) -> list[Image.Image]:
    return [load_rgb(r.image_raw) for r in read_shard(data / f"data-{shard:02d}.tfrecords")]


def _reencode(record: Record, quality: int) -> Record:
    """The same picture as other JPEG bytes."""
    buffer = io.BytesIO()
    load_rgb(record.image_raw).save(buffer, format="JPEG", quality=quality)
    return Record(record.label, buffer.getvalue())


# ---------------------------------------------------------------- the cache


def test_cache_is_keyed_by_image_bytes_and_model_version(
    fake_embedder: FakeEmbedder, tmp_path: Path
) -> None:
    data = make_tiny_dataset(tmp_path / "data", classes=3, shards=2, per_shard=2)
    first = embed_shards(data, "dlib128", 2, log=lambda _: None)
    assert fake_embedder.calls == 24  # 12 images x (image, mirror)
    again = embed_shards(data, "dlib128", 2, log=lambda _: None)
    assert fake_embedder.calls == 24  # all cached
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.images, b.images)

    # New bytes for one image of shard 0: only its two views are computed again.
    shard = data / "data-00.tfrecords"
    records = list(read_shard(shard))
    records[1] = _reencode(records[1], quality=70)
    write_shard(shard, records)
    changed = embed_shards(data, "dlib128", 2, log=lambda _: None)
    assert fake_embedder.calls == 26
    assert not np.array_equal(changed[0].images[1], first[0].images[1])
    np.testing.assert_array_equal(np.delete(changed[0].images, 1, 0),
                                  np.delete(first[0].images, 1, 0))

    # Another model version: every entry is ignored, recomputed and replaced.
    fake_embedder.version = "fake-2"
    embed_shards(data, "dlib128", 2, log=lambda _: None)
    assert fake_embedder.calls == 26 + 24
    root = tmp_path / "embedding-cache"
    key = content_hash(records[0].image_raw)
    assert EmbeddingCache(root, "dlib128", "fake-1").get(key) is None
    assert EmbeddingCache(root, "dlib128", "fake-2").get(key) is not None


def test_cache_entries_of_another_version_or_unreadable_are_not_used(tmp_path: Path) -> None:
    old, new = EmbeddingCache(tmp_path, "dlib128", "v1"), EmbeddingCache(tmp_path, "dlib128", "v2")
    key = content_hash(b"jpeg bytes")
    old.put(key, False, np.ones(128), True)
    vector, fallback = old.get(key)
    assert fallback and vector.dtype == np.float32 and vector.sum() == 128
    assert new.get(key) is None and old.get(key, mirror=True) is None
    new.put(key, False, np.zeros(128), False)  # replaces the v1 entry
    assert old.get(key) is None and new.get(key)[0].sum() == 0
    new.path(key).write_bytes(b"half an entry")
    assert new.get(key) is None
    assert [p.name for p in new.path(key).parent.iterdir()] == [f"{key}.npz"]  # no temp files


# ---------------------------------------------------------------- the extra


def test_missing_extra_names_the_pip_command(
    monkeypatch: pytest.MonkeyPatch, tiny_dataset: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` now fails
    with pytest.raises(ModuleNotFoundError, match=EXTRA.replace("[", r"\[").replace("]", r"\]")):
        dlib128.Dlib128()
    monkeypatch.setattr(dlib128, "load", functools.cache(dlib128.Dlib128))  # no loaded model
    out = tmp_path / "run"
    assert main(["train", str(tiny_dataset), "--preset", "dlib128", "--steps", "2",
                 "--out", str(out)]) == 1
    assert EXTRA in capsys.readouterr().err
    assert not out.exists()  # refused before any training
    assert main(["train", str(tiny_dataset), "--preset", "ensemble", "--steps", "2",
                 "--out", str(out)]) == 1  # before its first member (fast) trains
    assert EXTRA in capsys.readouterr().err
    assert not out.exists()


def test_missing_weights_name_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dlib128.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="face_recognition_models") as err:
        dlib128.weights_dir()
    assert EXTRA in str(err.value)


def test_landmark_check_by_hand() -> None:
    """dlib's order: image-right eye (outer, inner), image-left eye (outer, inner), nose."""
    face = np.array([[80, 52], [66, 53], [28, 54], [44, 54], [58, 79]], float)  # a celeb21 crop
    assert dlib128.landmarks_plausible(face, 112)
    shifted = face + np.array([40, 0])  # a point outside the image
    assert not dlib128.landmarks_plausible(shifted, 112)
    small = (face - 56) * 0.3 + 56  # eyes 12 px apart: 11 % of the side
    assert not dlib128.landmarks_plausible(small, 112)
    tilted = face.copy()
    tilted[:2, 1] -= 40  # one eye 40 px higher: the eye line is tilted ~37 degrees
    assert not dlib128.landmarks_plausible(tilted, 112)
    flat = face.copy()
    flat[4, 1] = 56  # the nose on the eye line
    assert not dlib128.landmarks_plausible(flat, 112)


# ---------------------------------------------------------------- a dlib128 run


def test_dlib128_run_counts_fallbacks_predicts_and_exports(
    fake_embedder: FakeEmbedder, tiny_dataset: Path, tmp_path: Path
) -> None:
    fake_embedder.fallback_below = 2.0  # every image "fails" its landmark fit
    logged: list[str] = []
    run = tmp_path / "run"
    rows = train(tiny_dataset, tiny_config(steps=30, eval_every=15, preset="dlib128"), run, [0],
                 log=logged.append)
    assert rows[-1]["eval_accuracy"] > 0.9  # the fake embedding separates the 4 classes
    info = json.loads((run / "run.json").read_text())
    assert info["landmark_fallbacks"] == {"train": 64, "eval": 32}
    assert info["embedding"] == {"name": "dlib128", "model_version": "fake-1"}
    assert any("landmark fit failed on 64 of 64 training and 32 of 32 held-out" in line
               for line in logged)

    predictor = Predictor.load(run)
    probabilities = predictor.predict_crops(_held_out_crops(tiny_dataset))
    with np.load(run / "predictions.npz") as saved:
        np.testing.assert_allclose(probabilities, saved["probabilities"], atol=1e-5)
    export = export_run(run, "savedmodel", tmp_path / "export")
    meta = json.loads((export / "export.json").read_text())
    # The export holds the (fake) embedding's network: it takes each crop's chip and its
    # mirror's, (N, 2, 40, 40, 3), and gives the run's numbers from them.
    assert meta["input"]["name"] == "chips" and meta["input"]["shape"] == [None, 2, 40, 40, 3]
    assert meta["embedding"] == {"name": "dlib128", "model_version": "fake-1", "views": 2,
                                 "dim": 128, "input": "chips", "chip_size": 40}
    exported = Predictor.load(export)
    crops = _held_out_crops(tiny_dataset)
    np.testing.assert_allclose(exported.predict_crops(crops), probabilities, atol=1e-5)
    chips = exported.chips(crops)
    arrays = np.stack([exported.to_array(c) for c in crops])
    np.testing.assert_array_equal(chips, np.stack([arrays, arrays[:, :, ::-1]], axis=1))
    np.testing.assert_allclose(_softmax(exported.outputs_for_model_inputs(chips)["logits"]),
                               probabilities, atol=1e-5)
    with pytest.raises(ValueError, match="does not take chips"):
        predictor.chips(crops)

    # An export written before heads held their network (the head alone, embeddings in) still
    # loads and embeds the pictures itself.
    old = tmp_path / "old-export"
    old.mkdir()
    predictor.keras_model.save(old / "model.keras")
    old_meta = {**meta, "format": "keras", "model_file": "model.keras",
                "embedding": {"name": "dlib128", "model_version": "fake-1", "views": 2,
                              "dim": 128},
                "input": {"name": "embedding", "dtype": "float32", "shape": [None, 2, 128]}}
    (old / "export.json").write_text(json.dumps(old_meta))
    np.testing.assert_allclose(Predictor.load(old).predict_crops(crops), probabilities,
                               atol=1e-5)

    fake_embedder.version = "fake-2"  # other weights installed: the head would be meaningless
    with pytest.raises(ValueError, match="train the head again"):
        Predictor.load(run)
    # The export holds its own network: it loads and takes chips, but refuses to cut chips
    # from pictures with other installed weights.
    exported = Predictor.load(export)
    np.testing.assert_allclose(_softmax(exported.outputs_for_model_inputs(chips)["logits"]),
                               probabilities, atol=1e-5)
    for cut_chips in (exported.predict_crops, exported.chips):
        with pytest.raises(ValueError, match="train the head again"):
            cut_chips(crops)


def test_serve_names_a_face_with_a_dlib128_run(
    fake_embedder: FakeEmbedder, tiny_dataset: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
    pytest.importorskip("python_multipart", reason="the serve extra is missing")
    pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
    with warnings.catch_warnings():  # Starlette nudges from httpx to httpx2; both work
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    import facefold.predict.predictor as predictor_module
    from facefold.serve import create_app

    monkeypatch.setattr(predictor_module, "load_detector", lambda: None)  # the whole-picture rule
    run = tmp_path / "run"
    train(tiny_dataset, tiny_config(steps=20, eval_every=20, preset="dlib128"), run, [0],
          log=lambda _: None)
    predictor = Predictor.load(run)
    client = TestClient(create_app(predictor), base_url="http://127.0.0.1")  # the Host check
    crop = _held_out_crops(tiny_dataset)[0]
    buffer = io.BytesIO()
    crop.save(buffer, format="PNG")
    response = client.post("/api/predict", files={"file": ("face.png", buffer.getvalue(),
                                                           "image/png")})
    assert response.status_code == 200
    (face,) = response.json()["faces"]
    expected = predictor.predict_crops([crop])[0]
    assert face["name"] == predictor.labels[int(expected.argmax())]
    assert face["top"][0]["probability"] == pytest.approx(float(expected.max()), abs=1e-6)


def test_commands_that_need_conv_layers_refuse_other_presets() -> None:
    from facefold.bench import bench_config

    with pytest.raises(ValueError, match="CNN presets only; preset 'dlib128' is an embedding"):
        bench_config("dlib128", None, 8)
    with pytest.raises(ValueError, match="preset 'ensemble' is an ensemble"):
        bench_config("ensemble", None, 8)


# ---------------------------------------------------------------- ensembles


def test_ensemble_probabilities_are_the_mean_of_the_members(tmp_path: Path) -> None:
    labels = np.array([0, 2])
    members = {"a": [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], "b": [[0.5, 0.4, 0.1], [0.3, 0.3, 0.4]]}
    for name, probabilities in members.items():
        (tmp_path / name).mkdir()
        np.savez(tmp_path / name / "predictions.npz", step=1, labels=labels,
                 probabilities=np.array(probabilities, np.float32))
    y, mean = average_predictions([tmp_path / "a", tmp_path / "b"])
    by_hand = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    np.testing.assert_allclose(mean, by_hand, atol=1e-7)
    np.testing.assert_allclose(mean.sum(axis=1), 1.0, atol=1e-7)
    np.testing.assert_array_equal(y, labels)

    # predict's ensemble: the mean of the members' softmax, as logits whose softmax gives it back.
    infers = [lambda x, p=p: {"logits": np.log(np.array(p)), "features": np.ones((2, 3))}
              for p in members.values()]
    out = ensemble_infer(infers)(np.zeros((2, 4, 4, 3), np.uint8))
    np.testing.assert_allclose(_softmax(out["logits"]), by_hand, atol=1e-6)
    assert out["features"].shape == (2, 6)

    np.savez(tmp_path / "b" / "predictions.npz", step=1, labels=labels[::-1],
             probabilities=np.array(members["b"], np.float32))
    with pytest.raises(ValueError, match="other held-out labels"):
        average_predictions([tmp_path / "a", tmp_path / "b"])


def test_ensemble_reuses_a_handed_member_run_and_predicts_the_mean(
    fake_embedder: FakeEmbedder, tiny_dataset: Path, tmp_path: Path
) -> None:
    config = tiny_config(steps=6, eval_every=6, preset="ensemble").replace(
        model={"members": ["reduced", "dlib128"]})
    reduced, head = member_configs(config)
    assert (reduced.preset, reduced.train.steps, reduced.model.crop_size) == ("reduced", 6, 32)
    assert head.model.embedding == "dlib128" and head.train.learning_rate == 1e-2
    out = tmp_path / "experiment"
    train(tiny_dataset, reduced, out / "reduced" / "case-0", [0], log=lambda _: None)
    case = out / "ensemble" / "case-0"
    # The caller hands the ensemble its member's folder; nothing is guessed.
    rows = train(tiny_dataset, config, case, [0], log=lambda _: None,
                 member_dirs={"reduced": out / "reduced" / "case-0"})

    ensemble = json.loads((case / "ensemble.json").read_text())["members"]
    assert [(m["preset"], m["run"], m["reused"]) for m in ensemble] == [
        ("reduced", "../../reduced/case-0", True), ("dlib128", "members/dlib128", False)]
    assert not (case / "members" / "reduced").exists()
    assert [r["step"] for r in read_metrics(case)] == [6]
    runs = [case / m["run"] for m in ensemble]
    member_probabilities = [np.load(r / "predictions.npz")["probabilities"] for r in runs]
    with np.load(case / "predictions.npz") as saved:
        mean = saved["probabilities"]
        np.testing.assert_allclose(mean, np.mean(member_probabilities, axis=0), atol=1e-6)
        np.testing.assert_allclose(mean.sum(axis=1), 1.0, atol=1e-5)
        accuracy = float((mean.argmax(axis=1) == saved["labels"]).mean())
    assert rows[-1]["eval_accuracy"] == pytest.approx(accuracy)

    predictor = Predictor.load(case)
    assert sorted(predictor.members) == ["dlib128", "reduced"]
    probabilities = predictor.predict_crops(_held_out_crops(tiny_dataset))
    np.testing.assert_allclose(probabilities, mean, atol=1e-4)
    export = export_run(case, "keras", tmp_path / "export")
    assert sorted(p.name for p in export.iterdir()) == ["export.json", "model.keras"]
    np.testing.assert_allclose(
        Predictor.load(export).predict_crops(_held_out_crops(tiny_dataset)), probabilities,
        atol=1e-6)


@pytest.mark.slow
def test_experiment_compares_an_ensemble_that_reuses_its_members(
    fake_embedder: FakeEmbedder, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = make_tiny_dataset(tmp_path / "data", classes=3, shards=2, per_shard=6)
    toml = tmp_path / "small.toml"
    toml.write_text('[model]\ncrop_size = 32\ninput_size = 32\n'
                    '[train]\nbatch_size = 12\nprecision = "float32"\n')
    out = tmp_path / "out"
    assert main(["experiment", str(data), "--presets", "ensemble,fast,dlib128", "--folds", "0",
                 "--steps", "4", "--eval-every", "2", "--config", str(toml),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "member fast: reusing the finished run" in printed
    assert "member dlib128: reusing the finished run" in printed
    assert not (out / "ensemble" / "case-0" / "members").exists()  # nothing trained twice
    rows = {r["preset"]: r for r in csv.DictReader((out / "comparison.csv").open())}
    assert rows["ensemble"]["cases"] == "0" and rows["ensemble"]["mcnemar_p"] != ""
    assert 0 < float(rows["ensemble"]["accuracy_mean"]) <= 1
    assert int(rows["ensemble"]["parameters"]) == (
        int(rows["fast"]["parameters"]) + int(rows["dlib128"]["parameters"]))
    assert rows["ensemble"]["seconds_per_step"] == ""  # its members trained, not it ...
    ensemble_line = next(line for line in printed.splitlines() if line.startswith("ensemble  "))
    assert "nan" not in ensemble_line and "  -  " in ensemble_line  # ... shown as "-"
    assert (out / "ensemble" / "per_person.csv").is_file() and (out / "report.html").is_file()


@pytest.mark.slow
def test_a_later_experiment_reuses_finished_member_runs_it_was_not_asked_for(
    fake_embedder: FakeEmbedder, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Members left finished in OUT by an earlier experiment are reused although they are
    not presets of this one; an unfinished one is trained into the ensemble's members/."""
    data = make_tiny_dataset(tmp_path / "data", classes=3, shards=2, per_shard=6)
    toml = tmp_path / "small.toml"
    toml.write_text('[model]\ncrop_size = 32\ninput_size = 32\n'
                    '[train]\nbatch_size = 12\nprecision = "float32"\n')
    out = tmp_path / "out"
    common = ["--steps", "4", "--eval-every", "2", "--config", str(toml), "--out", str(out)]
    assert main(["experiment", str(data), "--baseline", "fast", "--presets", "dlib128",
                 "--folds", "0,1", *common]) == 0
    shutil.rmtree(out / "fast" / "case-1" / "checkpoints")  # case 1 of fast: unfinished
    (out / "fast" / "case-1" / "predictions.npz").unlink()
    capsys.readouterr()
    assert main(["experiment", str(data), "--baseline", "dlib128", "--presets", "ensemble",
                 "--folds", "0,1", *common]) == 0
    printed = capsys.readouterr().out
    case0, case1 = out / "ensemble" / "case-0", out / "ensemble" / "case-1"
    assert not (case0 / "members").exists()
    members = json.loads((case0 / "ensemble.json").read_text())["members"]
    assert {m["preset"]: Path(m["run"]).parts[-2:] for m in members} == {
        "fast": ("fast", "case-0"), "dlib128": ("dlib128", "case-0")}
    assert f"member fast: reusing the finished run {out / 'fast' / 'case-0'}" in printed
    assert (case1 / "members" / "fast" / "predictions.npz").is_file()
    assert not (case1 / "members" / "dlib128").exists()  # a preset of this experiment


def test_an_ensembles_time_to_accuracy_is_its_members_training_time(tmp_path: Path) -> None:
    from facefold.atomic import write_json_atomic, write_rows_atomic
    from facefold.evaluate.cv import CVResult
    from facefold.evaluate.experiment import time_to_accuracy

    case = tmp_path / "ensemble" / "case-0"
    intervals = {"a": [(10, 0.5), (20, 1.0)], "b": [(5, 2.0)]}  # (step, seconds per step)
    for name, rows in intervals.items():
        write_rows_atomic(case / "members" / name / "metrics.jsonl", [
            {"step": 0, "eval_accuracy": 0.1, "seconds_per_step": 0.0},
            *({"step": s, "eval_accuracy": 0.5, "seconds_per_step": t} for s, t in rows)])
    write_json_atomic(case / "ensemble.json", {"members": [
        {"preset": name, "run": f"members/{name}", "reused": False} for name in intervals]})
    write_rows_atomic(case / "metrics.jsonl",
                      [{"step": 20, "eval_accuracy": 0.9, "seconds_per_step": None}])
    curve = CVResult([20], [0], np.array([[0.9]]))
    # a: 20 steps x median(0.5, 1.0) s = 15 s; b: 5 x 2.0 = 10 s
    assert time_to_accuracy(tmp_path / "ensemble", curve, [0], 0.8) == (20, 25.0)


# ---------------------------------------------------------------- real dlib on real faces


@pytest.mark.slow
def test_dlib128_on_orl_matches_a_nearest_centroid_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 people, 2 training and 2 held-out images each (one view: 160 embeddings, ~15 s)."""
    pytest.importorskip("dlib", reason=f"the dlib extra is not installed ({EXTRA})")
    orl = shared_dataset_path("orl")
    from facefold.data.build import build_dataset

    monkeypatch.setenv("FACEFOLD_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "orl"
    build_dataset(orl, data, shards=2, per_class=4, size=112, seed=0, log=lambda _: None)
    config = tiny_config(steps=300, eval_every=300, preset="dlib128").replace(
        model={"tta_flip": False}, augment={"flip": False}, train={"batch_size": 32})
    rows = train(data, config, tmp_path / "run", [0], log=lambda _: None)
    assert rows[-1]["eval_images"] == 80

    # The reference: nearest class centroid (cosine) on the same, now cached, embeddings.
    monkeypatch.setattr(dlib128.Dlib128, "embed", None)  # a cache miss would fail here
    held_out, trained = embed_shards(data, "dlib128", 1, log=lambda _: None)
    x_train, x_test = trained.images[:, 0], held_out.images[:, 0]
    centroids = np.stack([x_train[trained.labels == c].mean(axis=0) for c in range(40)])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    reference = float(((x_test @ centroids.T).argmax(axis=1) == held_out.labels).mean())
    accuracy = rows[-1]["eval_accuracy"]
    assert reference >= 0.95  # dlib's embedding tells ORL's 40 people apart ...
    assert accuracy >= reference - 0.025  # ... and the trained head does as well, within 2 images


# ---------------------------------------------------------------- embedding in parallel


def test_workers_give_the_same_vectors_and_cache_as_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two worker processes (real dlib) against this process alone, on SYNTHETIC faces in
    chunks of 3 so that results from both workers interleave: the very same numbers, the same
    cache entries under each image's content hash, and nothing recomputed afterwards."""
    pytest.importorskip("dlib", reason=f"the dlib extra is not installed ({EXTRA})")
    from facefold.data.build import build_dataset
    from facefold.data.synthetic import make_synthetic_faces
    from facefold.embeddings import shards

    faces = make_synthetic_faces(tmp_path / "faces", people=2, per_person=6, size=112)
    data = tmp_path / "data"
    build_dataset(faces, data, shards=2, per_class=6, size=112, log=lambda _: None)
    monkeypatch.setattr(shards, "CHUNK", 3)
    one = embed_shards(data, "dlib128", 2, cache_dir=tmp_path / "one", log=lambda _: None,
                       workers=1)
    lines: list[str] = []
    two = embed_shards(data, "dlib128", 2, cache_dir=tmp_path / "two", log=lines.append,
                       workers=2)
    assert any("2 worker(s)" in line for line in lines)
    for a, b in zip(one, two, strict=True):
        assert a.images.shape == (6, 2, 128)
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.fallback, b.fallback)

    def entries(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*.npz"))

    assert entries(tmp_path / "one") == entries(tmp_path / "two")
    version = dlib128.load().version
    cache = EmbeddingCache(tmp_path / "two", "dlib128", version)
    for k, split in enumerate(two):
        for i, record in enumerate(read_shard(data / f"data-{k:02d}.tfrecords")):
            for view in (0, 1):
                vector, _ = cache.get(content_hash(record.image_raw), bool(view))
                np.testing.assert_array_equal(vector, split.images[i, view])
    # Cached now: no worker starts and nothing is embedded.
    monkeypatch.setattr(shards, "ProcessPoolExecutor", None)
    lines.clear()
    again = embed_shards(data, "dlib128", 2, cache_dir=tmp_path / "two", log=lines.append,
                         workers=2)
    assert not any("embedding" in line for line in lines)
    np.testing.assert_array_equal(again[0].images, two[0].images)


def test_a_bad_record_in_a_worker_is_named(tmp_path: Path) -> None:
    pytest.importorskip("dlib", reason=f"the dlib extra is not installed ({EXTRA})")
    from facefold.data.images import ImageError
    from facefold.embeddings.shards import EmbeddingWorkers

    with EmbeddingWorkers("dlib128", 2) as pool, pytest.raises(
            ImageError, match=r"data-03\.tfrecords record 7"):
        list(pool.map([([(b"not a picture", "data-03.tfrecords record 7")], False)] * 2))
