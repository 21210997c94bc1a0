"""From a dataset to a recognizer: fit on everything, calibrate "unknown" by leave-people-out,
enroll a stranger without retraining, identify and verify, from Python and the command line.

The embedding family runs on the fake embedder (no dlib needed), whose embeddings separate
the tiny dataset's people, so names and decisions can be checked exactly.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeEmbedder, class_pattern, make_tiny_dataset, tiny_config
from PIL import Image

from facefold import runs
from facefold.cli import main
from facefold.embeddings import dlib128
from facefold.evaluate.openset_cv import CaseScores
from facefold.fit import _pooled, _verification, fit, people_groups
from facefold.predict import UNKNOWN

QUIET = {"log": lambda _: None}


def _pictures(folder: Path, label: int, count: int, seed: int) -> list[Path]:
    """``count`` PNG pictures of tiny-dataset person ``label`` (not in any shard)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"{label}-{i}.png"
        Image.fromarray(class_pattern(label, rng, 40)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def fitted_once(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(dataset, model)``: 5 people, a dlib128 head fit on every shard, calibrated over 2
    groups at 10 % false accepts; fit once for the module (on a fake embedder like the one
    of :func:`fitted`, which gives the same vectors)."""
    root = tmp_path_factory.mktemp("fitted")
    embedder = FakeEmbedder()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dlib128, "load", lambda: embedder)
        patch.setenv("FACEFOLD_CACHE", str(root / "embedding-cache"))
        data = make_tiny_dataset(root / "data", classes=5, shards=3, per_shard=6)
        config = tiny_config(steps=60, eval_every=60, preset="dlib128")
        fit(data, config, root / "model", groups=2, far=0.1, **QUIET)
    return data, root / "model"


@pytest.fixture
def fitted(fitted_once: tuple[Path, Path], fake_embedder: FakeEmbedder,
           tmp_path: Path) -> tuple[Path, Path]:
    """:func:`fitted_once` with a copy of the model of its own: tests enroll people into it."""
    data, model = fitted_once
    return data, Path(shutil.copytree(model, tmp_path / "model"))


def test_people_groups_cover_everyone_once() -> None:
    groups = people_groups(10, 4, seed=0)
    assert sorted(i for g in groups for i in g) == list(range(10))
    assert sorted(len(g) for g in groups) == [2, 2, 3, 3]
    assert people_groups(10, 4, seed=0) == groups  # the seed fixes them
    with pytest.raises(ValueError, match="use fewer --groups"):
        people_groups(3, 2, seed=0)  # a group of 2 leaves 1 known


def test_pooled_thresholds_and_verification_by_hand() -> None:
    part = CaseScores(
        known={"msp": np.array([0.9, 0.8, 0.3])}, unknown={"msp": np.array([0.5, 0.2])},
        correct=np.array([True, False, True]), nearest_correct=np.array([True, True, True]),
        centroids=np.eye(2, dtype=np.float32),
        unknown_features=np.array([[1, 0], [1, 0.1], [0, 1]], np.float32),
        unknown_labels=np.array([7, 7, 8]))
    report = _pooled([part], far=0.4)["msp"]
    # floor(0.4 * 2) = 0 strangers accepted: the threshold lies just above the best, 0.5.
    assert report["threshold"] == pytest.approx(np.nextafter(0.5, 1))
    assert report["far"] == 0.0 and report["accepted"] == pytest.approx(2 / 3)
    assert report["known_accuracy"] == pytest.approx(1 / 3)  # 0.9 right, 0.8 wrong, 0.3 out
    assert report["auroc"] == pytest.approx(5 / 6)  # 0.9, 0.8 beat both; 0.3 beats 0.2
    verify = _verification([part], far=0.0)
    # Pairs: (0,1) same with similarity ~0.995; (0,2) and (1,2) different, ~0 and ~0.0995.
    assert (verify["same_pairs"], verify["other_pairs"]) == (1, 2)
    assert verify["threshold"] > 0.0995 and verify["true_accepts"] == 1.0


def test_fit_writes_a_calibrated_model_and_its_card(fitted: tuple[Path, Path]) -> None:
    data, model = fitted
    info = runs.read_run_info(model)
    assert info["eval_shards"] == [] and info["data"] == runs.data_fingerprint(data)
    assert not (model / runs.PREDICTIONS_FILE).exists()  # nothing was held out
    card = json.loads((model / runs.MODEL_CARD_JSON).read_text())
    calibration = card["calibration"]
    scores = calibration["scores"]
    best = max(scores, key=lambda n: (scores[n]["known_accuracy"], scores[n]["auroc"]))
    assert calibration["score"] == best and set(scores) == {"msp", "max_logit", "energy",
                                                            "cosine"}
    assert all(r["far"] <= 0.1 for r in scores.values())
    # Groups of 3 and 2 of the 5 people: every picture of a group's people is a stranger's
    # (5 x 18), and the known people's pictures of one held-out shard are known (2x6 + 3x6).
    assert (calibration["unknown_images"], calibration["known_images"]) == (90, 30)
    threshold = json.loads((model / runs.THRESHOLD_FILE).read_text())
    assert threshold["score"] == best
    assert threshold["threshold"] == pytest.approx(scores[best]["threshold"])
    assert threshold["verify_threshold"] == calibration["verification"]["threshold"]
    assert np.load(model / runs.CENTROIDS_FILE).shape == (5, 128)
    text = (model / runs.MODEL_CARD_MD).read_text()
    assert f"Chosen: **{best}**" in text and "person_0" in text
    assert [runs.is_run(runs.calibration_dir(model, g)) for g in (0, 1)] == [True, True]


def test_known_people_are_named_strangers_are_unknown_and_enrolled_ones_named(
        fitted: tuple[Path, Path], tmp_path: Path) -> None:
    from facefold import Recognizer

    _, model = fitted
    recognizer = Recognizer.load(model)
    assert recognizer.people == [f"person_{i}" for i in range(5)]
    known = _pictures(tmp_path / "known", 2, 6, seed=11)
    named = [recognizer.recognize(p, detect=False)[0].name for p in known]
    assert named.count("person_2") >= 5
    stranger = _pictures(tmp_path / "stranger", 7, 12, seed=12)
    before = [recognizer.recognize(p, detect=False)[0] for p in stranger[5:]]
    assert sum(face.name == UNKNOWN for face in before) >= 5  # of 7
    # Enrolled from 5 photos, without retraining: named on their other pictures.
    assert recognizer.enroll("newcomer", stranger[:5], detect=False) == 5
    again = Recognizer.load(model)  # the gallery lives in the model folder
    assert again.people[-1] == "newcomer"
    after = [again.recognize(p, detect=False)[0] for p in stranger[5:]]
    assert sum(face.name == "newcomer" for face in after) >= 6
    assert [again.recognize(p, detect=False)[0].name for p in known].count("person_2") >= 5
    with pytest.raises(ValueError, match="one of the people the model was trained on"):
        again.enroll("person_1", stranger[:1], detect=False)
    with pytest.raises(ValueError, match="control character"):
        again.enroll("new\x85line", stranger[:1], detect=False)
    # Verification: two pictures of one person pass, two people do not.
    same = again.verify(known[0], known[1], detect=False)
    assert same.same and same.similarity >= same.threshold
    other = again.verify(known[0], stranger[0], detect=False)
    assert not other.same and other.similarity < other.threshold


def test_the_cli_fits_enrolls_identifies_and_verifies(
        fake_embedder: FakeEmbedder, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_tiny_dataset(tmp_path / "data", classes=5, shards=3, per_shard=6)
    toml = tmp_path / "tiny.toml"
    toml.write_text('preset = "dlib128"\n[model]\ncrop_size = 32\ninput_size = 32\n'
                    '[train]\nsteps = 60\neval_every = 60\nbatch_size = 16\n')
    model = tmp_path / "model"
    assert main(["fit", str(data), "--out", str(model), "--config", str(toml), "--groups", "2",
                 "--far", "0.1"]) == 0
    people = tmp_path / "people"
    _pictures(people / "newcomer", 7, 5, seed=3)
    assert main(["enroll", str(model), str(people / "newcomer"), "--crops"]) == 0
    assert "enrolled newcomer: 5 picture(s)" in capsys.readouterr().out
    photos = tmp_path / "photos"
    _pictures(photos / "a", 2, 2, seed=4)
    _pictures(photos / "b", 7, 2, seed=5)
    (photos / "broken.jpg").write_bytes(b"not a picture")
    table = tmp_path / "faces.csv"
    # Exit status 1: one file could not be read (its row says why); the others are named.
    with pytest.raises(SystemExit) as exited:
        main(["identify", str(model), str(photos), "--crops", "--csv", str(table)])
    assert exited.value.code == 1
    rows = list(csv.DictReader(table.open()))
    by_file = {Path(r["file"]).name: r for r in rows}
    assert by_file["broken.jpg"]["error"]
    assert [by_file[f"2-{i}.png"]["name"] for i in range(2)] == ["person_2", "person_2"]
    assert [by_file[f"7-{i}.png"]["name"] for i in range(2)] == ["newcomer", "newcomer"]
    capsys.readouterr()
    a, b = photos / "a" / "2-0.png", photos / "a" / "2-1.png"
    assert main(["verify", str(model), str(a), str(b), "--crops"]) == 0
    assert capsys.readouterr().out.startswith("same person: similarity")
    assert main(["verify", str(model), str(a), str(photos / "b" / "7-0.png"), "--crops",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["same"] is False


def test_bench_times_a_model_per_face(fitted: tuple[Path, Path]) -> None:
    from facefold.bench import bench_model, format_bench_model

    data, model = fitted
    result = bench_model(model, data, faces=4, log=lambda _: None)
    assert result["faces"] == 4 and result["family"] == "embedding"
    assert 0 < result["per_face_median_ms"] <= result["per_face_p95_ms"]
    assert "one face per call" in format_bench_model(result)


def test_serve_enrolls_behind_a_flag(fitted: tuple[Path, Path], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    import facefold.predict.predictor as predictor_module
    from facefold.predict import Predictor
    from facefold.serve import create_app

    monkeypatch.setattr(predictor_module, "load_detector", lambda: None)  # crops taken whole
    _, model = fitted
    stranger = _pictures(tmp_path / "stranger", 7, 4, seed=21)

    def post(client: TestClient, url: str, path: Path):
        return client.post(url, files={"file": (path.name, path.read_bytes(), "image/png")})

    closed = TestClient(create_app(Predictor.load(model)), base_url="http://127.0.0.1")
    assert post(closed, "/api/enroll?name=newcomer", stranger[0]).status_code in (404, 405)
    assert closed.get("/api/info").json()["enroll"] is False
    client = TestClient(create_app(Predictor.load(model), allow_enroll=True),
                        base_url="http://127.0.0.1")
    assert post(client, "/api/predict", stranger[3]).json()["faces"][0]["name"] == UNKNOWN
    for i, path in enumerate(stranger[:3], start=1):
        answer = post(client, "/api/enroll?name=newcomer", path)
        assert answer.status_code == 200 and answer.json()["pictures"] == i
    assert client.get("/api/info").json()["people"][-1] == "newcomer"
    assert post(client, "/api/predict", stranger[3]).json()["faces"][0]["name"] == "newcomer"
    bad = post(client, "/api/enroll?name=person_0", stranger[0])
    assert bad.status_code == 400 and "trained on" in bad.json()["error"]
    assert "newcomer" in Predictor.load(model).people  # written to the model folder
