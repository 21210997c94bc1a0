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
from facefold.config import Config
from facefold.data.pipeline import decode_shards
from facefold.data.records import read_labels
from facefold.embeddings import dlib128
from facefold.evaluate.openset_cv import CaseScores
from facefold.fitting import _pooled, _verification, fit, people_groups
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
    return _fit_tiny(tmp_path_factory.mktemp("fitted"),
                     tiny_config(steps=60, eval_every=60, preset="dlib128"))


def _fit_tiny(root: Path, config: Config) -> tuple[Path, Path]:
    """``(dataset, model)``: ``config`` fit on a tiny dataset of 5 people in 3 shards under
    ``root`` and calibrated over 2 groups at 10 % false accepts, on a fake embedder."""
    embedder = FakeEmbedder()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dlib128, "load", lambda: embedder)
        patch.setenv("FACEFOLD_CACHE", str(root / "embedding-cache"))
        data = make_tiny_dataset(root / "data", classes=5, shards=3, per_shard=6)
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
    with pytest.raises(ValueError, match="use at most 2 --groups"):
        people_groups(5, 5, seed=0)  # one stranger per group: no pair for verification


def test_pooled_thresholds_and_verification_by_hand() -> None:
    part = CaseScores(
        known={"msp": np.array([0.9, 0.8, 0.3])}, unknown={"msp": np.array([0.5, 0.2, 0.1])},
        correct=np.array([True, False, True]), nearest_correct=np.array([True, True, True]),
        centroids=np.eye(2, dtype=np.float32),
        unknown_features=np.array([[1, 0], [1, 0.1], [0, 1]], np.float32),
        unknown_labels=np.array([7, 7, 8]))
    report = _pooled([part], far=0.3)["msp"]
    # floor(0.3 * 3) = 0 strangers accepted: the threshold lies just above the best, 0.5.
    assert report["threshold"] == pytest.approx(np.nextafter(0.5, 1))
    assert report["far"] == 0.0 and report["accepted"] == pytest.approx(2 / 3)
    assert report["known_accuracy"] == pytest.approx(1 / 3)  # 0.9 right, 0.8 wrong, 0.3 out
    assert report["auroc"] == pytest.approx(8 / 9)  # 0.9, 0.8 beat all 3; 0.3 beats 2
    assert report["identities"]["rates"] == {"7": 0.0, "8": 0.0}  # by label, without names
    # Strangers 7 (0.5, 0.2) and 8 (0.1) by the upper bound at 0.6: accepting 7's 0.5 (7 at
    # 1/2, 8 at 0) gives an upper bound of 1/2 (7 drawn twice: 1/4 > 2.5 %), which holds;
    # accepting 0.2 too (7 at 1) gives 1, which does not: the threshold is (0.2 + 0.5) / 2.
    upper = _pooled([part], far=0.6, bound="upper")["msp"]
    assert upper["threshold"] == pytest.approx(0.35)
    assert upper["by_bound"]["pooled"]["threshold"] == pytest.approx(0.35)  # floor(1.8) = 1
    assert upper["identities"]["rates"] == {"7": 0.5, "8": 0.0}
    assert upper["identities"]["upper"] == 0.5 and upper["far"] == pytest.approx(1 / 3)
    # By the worst stranger: 7 may keep floor(0.6 * 2) = 1 picture, 8 floor(0.6) = 0, so the
    # threshold lies above 7's 0.2 (and 8's 0.1): halfway to 0.5.
    assert upper["by_bound"]["worst"]["threshold"] == pytest.approx(0.35)
    assert _pooled([part], far=0.1, bound="worst")["msp"]["threshold"] == np.nextafter(0.5, 1)
    verify = _verification([part], far=0.0)
    # Pairs: (0,1) same with similarity ~0.995; (0,2) and (1,2) different, ~0 and ~0.0995.
    assert (verify["same_pairs"], verify["other_pairs"]) == (1, 2)
    assert verify["threshold"] > 0.0995 and verify["true_accepts"] == 1.0


def test_the_calibration_chooses_nearest_over_cosine_and_else_the_most_named_right() -> None:
    from facefold.fitting import choose_score

    def report(**accuracy: tuple[float, float]) -> dict:
        return {n: {"auroc": a, "by_bound": {"upper": {"known_accuracy": k}}}
                for n, (k, a) in accuracy.items()}

    # cosine names more known faces right, but nearest is there: nearest.
    assert choose_score(report(msp=(0.80, 0.97), cosine=(0.95, 0.99), nearest=(0.94, 0.99)),
                        "upper") == "nearest"
    assert choose_score(report(msp=(0.96, 0.97), cosine=(0.95, 0.99), nearest=(0.94, 0.99)),
                        "upper") == "msp"
    # A report without nearest (an older facefold's): cosine competes; AUROC breaks a tie.
    assert choose_score(report(msp=(0.90, 0.97), cosine=(0.90, 0.99)), "upper") == "cosine"


def test_fit_writes_a_calibrated_model_and_its_card(fitted: tuple[Path, Path]) -> None:
    data, model = fitted
    info = runs.read_run_info(model)
    assert info["eval_shards"] == [] and info["data"] == runs.data_fingerprint(data)
    assert not (model / runs.PREDICTIONS_FILE).exists()  # nothing was held out
    card = json.loads((model / runs.MODEL_CARD_JSON).read_text())
    calibration = card["calibration"]
    scores = calibration["scores"]
    # The most known faces accepted and named right, AUROC breaking a tie; cosine is only
    # reported (nearest names faces alike, and holds for look-alikes: choose_score).
    best = max((n for n in scores if n != "cosine"),
               key=lambda n: (scores[n]["known_accuracy"], scores[n]["auroc"]))
    assert calibration["score"] == best and set(scores) == {"msp", "max_logit", "energy",
                                                            "cosine", "nearest"}
    assert all(r["far"] <= 0.1 for r in scores.values())
    # Groups of 3 and 2 of the 5 people: every picture of a group's people is a stranger's
    # (5 x 18), and the known people's pictures of one held-out shard are known (2x6 + 3x6).
    assert (calibration["unknown_images"], calibration["known_images"]) == (90, 30)
    threshold = json.loads((model / runs.THRESHOLD_FILE).read_text())
    assert threshold["score"] == best
    assert threshold["threshold"] == pytest.approx(scores[best]["threshold"])
    assert threshold["verify_threshold"] == calibration["verification"]["threshold"]
    assert np.load(model / runs.CENTROIDS_FILE).shape == (5, 128)
    # Every training picture's unit feature, for the nearest score: 5 people x 3 shards x 6.
    features, owners = runs.read_pictures(model, 5)
    assert features.shape == (90, 128) and np.bincount(owners).tolist() == [18] * 5
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    text = (model / runs.MODEL_CARD_MD).read_text()
    assert f"Chosen: **{best}**" in text and "person_0" in text
    assert [runs.is_run(runs.calibration_dir(model, g)) for g in (0, 1)] == [True, True]


def test_the_nearest_score_names_and_decides_by_the_training_pictures(
        fitted: tuple[Path, Path], tmp_path: Path) -> None:
    from facefold.models.scores import nearest_similarity
    from facefold.predict import Predictor

    _, model = fitted
    predictor = Predictor.load(model)
    known = [Image.open(p) for p in _pictures(tmp_path / "known", 3, 4, seed=21)]
    faces = predictor.recognize(known, score="nearest", threshold=0.5, top_k=5)
    # By hand: the features' similarity to each person's training pictures, by the module's
    # own function checked against a hand computation in test_predict.
    by_hand = nearest_similarity(predictor.outputs(known)["features"], predictor.info.pictures)
    for face, row in zip(faces, by_hand, strict=True):
        assert face.score_name == "nearest" and face.score == pytest.approx(row.max())
        assert [name for name, _ in face.top] == [
            f"person_{i}" for i in np.argsort(-row, kind="stable")]
        assert face.name == ("person_3" if row.max() >= 0.5 else UNKNOWN)
    assert [face.name for face in faces].count("person_3") >= 3
    (model / runs.PICTURES_FILE).unlink()  # a model fit before pictures were kept
    with pytest.raises(ValueError, match=r"needs .*pictures\.npz"):
        Predictor.load(model).recognize(known, score="nearest")


def test_fit_again_with_another_bound_reuses_the_runs_beside_the_tflite_copy(
        fitted: tuple[Path, Path], fake_embedder: FakeEmbedder) -> None:
    # The calibration reads the model's features of its own inputs (embeddings), which the
    # kept TFLite copy (taking face chips) cannot compute: it must load the checkpoint.
    data, model = fitted
    assert runs.lite_dir(model).is_dir()
    fit(data, tiny_config(steps=60, eval_every=60, preset="dlib128"), model, groups=2,
        far=0.1, far_bound="upper", **QUIET)
    threshold = json.loads((model / runs.THRESHOLD_FILE).read_text())
    assert threshold["far_bound"] == "upper"


def test_fit_without_people_holds_out_a_test_shard_with_more_groups_than_shards(
        tmp_path: Path, fake_embedder: FakeEmbedder) -> None:
    from facefold.fitting import fit_without_people

    data = make_tiny_dataset(tmp_path / "data", classes=6, shards=3, per_shard=8)
    # 5 known people in 4 groups, 2 shards left after the test shard: group 2 and 3 hold
    # out shards 0 and 1 of those two (the dataset's shard index 2 would not exist).
    fitted = fit_without_people(data, tiny_config(steps=20, eval_every=20, preset="dlib128"),
                                tmp_path / "model", [5], groups=4, far=0.1, test_shard=1,
                                **QUIET)
    assert fitted.calibration["groups"] == 4 and len(fitted.known_names) == 5
    infos = [runs.read_run_info(runs.calibration_dir(tmp_path / "model", g)) for g in range(4)]
    assert [info["eval_shards"] for info in infos] == [[0], [1], [0], [1]]


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


def test_a_loaded_model_sees_and_keeps_what_others_enrolled(
        fitted: tuple[Path, Path], tmp_path: Path) -> None:
    """A server's predictor loaded before another process enrolls alice: its own enroll of bob
    keeps alice, and it names alice without being reloaded; the same photo twice counts
    once."""
    from facefold.predict import Predictor

    _, model = fitted
    server, other = Predictor.load(model), Predictor.load(model)
    alice = [Image.open(p) for p in _pictures(tmp_path / "alice", 7, 4, seed=41)]
    bob = [Image.open(p) for p in _pictures(tmp_path / "bob", 8, 3, seed=42)]
    assert other.enroll("alice", alice[:3]) == 3
    assert server.enroll("bob", bob) == 3
    assert server.gallery_names == other.gallery_names == ["alice", "bob"]
    assert server.recognize(alice[3:])[0].name == "alice"
    assert other.enroll("alice", alice[:3]) == 3  # the same photos: nothing added
    with pytest.raises(ValueError, match="already enrolled as 'alice'"):
        server.enroll("mallory", alice[:1])
    assert Predictor.load(model).gallery_names == ["alice", "bob"]


def test_a_model_calibrated_on_msp_names_its_enrolled_people_by_the_cosine_score(
        fitted: tuple[Path, Path], tmp_path: Path) -> None:
    """fit keeps the score its calibration found best (here msp, as on a small ORL fit);
    enrolled people are named by the nearest centroid, so the cosine threshold decides: the
    old code raised "decides by the cosine score, not 'msp'" (HTTP 500 in serve)."""
    from facefold.predict import Predictor

    _, model = fitted
    stored = json.loads((model / runs.THRESHOLD_FILE).read_text())
    assert "msp" in stored["thresholds"]
    stored.update(score="msp", threshold=stored["thresholds"]["msp"], naming="classifier")
    (model / runs.THRESHOLD_FILE).write_text(json.dumps(stored))
    newcomer = [Image.open(p) for p in _pictures(tmp_path / "newcomer", 7, 8, seed=43)]
    predictor = Predictor.load(model)
    assert predictor.recognize(newcomer[:1])[0].score_name == "msp"  # nobody enrolled yet
    predictor.enroll("newcomer", newcomer[:5])
    faces = predictor.recognize(newcomer[5:])
    assert {face.score_name for face in faces} == {"cosine"}
    assert [face.name for face in faces].count("newcomer") >= 2


def test_enrolled_names_are_checked_and_taken_in_nfc(
        fitted: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The names that would hijack an answer or a path are refused, the NFD spelling of a
    name enrolls the NFC one, and `enroll MODEL photo.png` does not enroll "photo.png"."""
    from facefold import Recognizer

    _, model = fitted
    recognizer = Recognizer.load(model)
    stranger = _pictures(tmp_path / "stranger", 7, 3, seed=12)
    for name in ("unknown", "Unknown", "../x", "/etc/passwd", ".", "a/b", "x" * 101):
        with pytest.raises(ValueError, match="person name"):
            recognizer.enroll(name, stranger[:1], detect=False)
    assert recognizer.people == [f"person_{i}" for i in range(5)]  # nothing enrolled
    assert recognizer.enroll("Zoe\u0308", stranger[:2], detect=False) == 2  # e + diaeresis
    assert recognizer.enroll("Zo\u00eb", stranger[2:], detect=False) == 3  # the same person
    assert Recognizer.load(model).people[-1] == "Zo\u00eb"
    capsys.readouterr()
    assert main(["enroll", str(model), str(stranger[0]), "--crops"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("facefold: error: person name '7-0.png' looks like a picture file: "
                          "the name comes first") and err.count("\n") == 1
    assert Recognizer.load(model).people[-1] == "Zo\u00eb"


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
    # The exit status is the answer (0 same, 1 different), so that a script can branch on it.
    assert main(["verify", str(model), str(a), str(photos / "b" / "7-0.png"), "--crops",
                 "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["same"] is False


def test_verify_exits_2_on_an_error_not_1_which_means_different_people(
        fitted: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, model = fitted
    (a,) = _pictures(tmp_path, 2, 1, seed=4)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a picture")
    for other in (tmp_path / "missing.png", broken):
        capsys.readouterr()
        assert main(["verify", str(model), str(a), str(other), "--crops"]) == 2
        error = capsys.readouterr().err
        assert error.startswith("facefold: error: ") and other.name in error
        assert error.count("\n") == 1
    # Other commands keep exit status 1 for an error.
    assert main(["identify", str(tmp_path / "no-model"), str(a)]) == 1


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


def test_combine_outputs_by_hand() -> None:
    """An ensemble's features: each member's unit features times the root of its weight, so
    the cosine of two pictures is the weighted mean of the members' cosines."""
    from facefold.models.outputs import combine_outputs

    a = {"logits": np.log(np.array([[0.5, 0.5], [0.9, 0.1]])),
         "features": np.array([[3.0, 4.0], [4.0, 3.0]])}
    b = {"logits": np.log(np.array([[0.1, 0.9], [0.3, 0.7]])),
         "features": np.array([[0.0, 2.0, 0.0], [0.0, 0.0, 5.0]])}
    out = combine_outputs([a, b], [0.25, 0.75])
    np.testing.assert_allclose(np.exp(out["logits"]), [[0.2, 0.8], [0.45, 0.55]], atol=1e-6)
    np.testing.assert_allclose(out["features"][0],
                               [0.5 * 0.6, 0.5 * 0.8, 0, np.sqrt(0.75), 0], atol=1e-6)
    # cos_a = (0.6*0.8 + 0.8*0.6) = 0.96, cos_b = 0: weighted mean 0.25 * 0.96
    cosine = out["features"][0] @ out["features"][1]
    assert cosine == pytest.approx(0.24, abs=1e-6)
    assert np.linalg.norm(out["features"], axis=1) == pytest.approx([1.0, 1.0])
    equal = combine_outputs([a, b])
    assert equal["features"][0] @ equal["features"][1] == pytest.approx(0.48, abs=1e-6)


@pytest.fixture(scope="module")
def fitted_ensemble(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(dataset, model)``: a weighted ensemble of a small CNN and a dlib128 head (on the fake
    embedder), fit on 5 people and calibrated over 2 groups at 10 % false accepts."""
    config = tiny_config(steps=60, eval_every=60, preset="ensemble-weighted").replace(
        model={"members": ["reduced", "dlib128"]})
    return _fit_tiny(tmp_path_factory.mktemp("fitted-ensemble"), config)


def test_fit_makes_a_calibrated_weighted_ensemble(
        fitted_ensemble: tuple[Path, Path], fake_embedder: FakeEmbedder,
        tmp_path: Path) -> None:
    from facefold.export import export_run
    from facefold.models.outputs import softmax
    from facefold.predict import Predictor

    data, model = fitted_ensemble
    members = runs.ensemble_member_dirs(model)
    assert members == {"reduced": model / "members" / "reduced",
                       "dlib128": model / "members" / "dlib128"}
    assert all(runs.read_run_info(path)["eval_shards"] == [] for path in members.values())
    card = json.loads((model / runs.MODEL_CARD_JSON).read_text())
    weights = runs.ensemble_weights(model)
    assert weights == card["calibration"]["weights"] and sum(weights.values()) == 1.0
    assert "weighted mean probabilities of reduced" in (model / runs.MODEL_CARD_MD).read_text()

    # The weights name the most held-out known pictures of the calibration models right, of
    # every weight on a 1/20 grid, and of those have the least log-loss (computed here from
    # the groups' member runs themselves).
    def held_out_probabilities(group: int) -> tuple[np.ndarray, list[np.ndarray]]:
        run_dir = runs.calibration_dir(model, group)
        k = runs.read_run_info(run_dir)["eval_shards"][0]
        people = runs.read_run_labels(run_dir)
        split = decode_shards(data)[k]
        names = read_labels(data)
        keep = np.isin([names[i] for i in split.labels], people)
        labels = np.array([people.index(names[i]) for i in split.labels[keep]])
        probabilities = [softmax(Predictor.load(run_dir / "members" / m).outputs_for_arrays(
            split.images[keep])["logits"]) for m in ("reduced", "dlib128")]
        return labels, probabilities

    right, loss = np.zeros(21), np.zeros(21)
    for group in (0, 1):
        labels, (cnn, head) = held_out_probabilities(group)
        for i, w in enumerate(np.linspace(0, 1, 21)):
            mean = w * cnn + (1 - w) * head
            right[i] += (mean.argmax(axis=1) == labels).sum()
            loss[i] -= np.log(mean[np.arange(len(labels)), labels]).sum()
    best = max(range(21), key=lambda i: (right[i], -loss[i]))
    assert weights["reduced"] == pytest.approx(best / 20, abs=1e-9)
    assert np.ptp(loss) > 0  # the log-loss decides: a wrong choice would be seen

    # predict averages the members' probabilities with those weights; the features are the
    # members' unit features side by side, weighed, so the centroids have both widths.
    ensemble, cnn, head = (Predictor.load(p) for p in (model, *members.values()))
    pictures = np.stack([class_pattern(i % 5, np.random.default_rng(i), 40) for i in range(8)])
    pictures = np.stack([ensemble.to_array(Image.fromarray(p)) for p in pictures])
    out = ensemble.outputs_for_arrays(pictures)
    parts = [p.outputs_for_arrays(pictures) for p in (cnn, head)]
    expected = (weights["reduced"] * softmax(parts[0]["logits"])
                + weights["dlib128"] * softmax(parts[1]["logits"]))
    np.testing.assert_allclose(softmax(out["logits"]), expected, atol=1e-5)
    unit = [f / np.linalg.norm(f, axis=1, keepdims=True) for f in
            (parts[0]["features"], parts[1]["features"])]
    cosines = weights["reduced"] * unit[0] @ unit[0].T + weights["dlib128"] * unit[1] @ unit[1].T
    np.testing.assert_allclose(out["features"] @ out["features"].T, cosines, atol=1e-5)
    centroids = np.load(model / runs.CENTROIDS_FILE)
    assert centroids.shape == (5, parts[0]["features"].shape[1] + 128)
    threshold = json.loads((model / runs.THRESHOLD_FILE).read_text())
    assert ensemble.info.threshold == threshold and ensemble.info.centroids is not None
    assert (ensemble.outputs_for_arrays(pictures)["logits"].argmax(axis=1)
            == np.arange(8) % 5).mean() >= 0.75

    # The recognizer ranks a known person first by the ensemble's cosine score and enrolls a
    # newcomer into it. (Whether it accepts them depends on the threshold, which on this
    # tiny data is 0.9999: the 60-step CNN won all the weight, and its features are close.)
    from facefold import Recognizer

    recognizer = Recognizer.load(model)
    known = _pictures(tmp_path / "known", 3, 4, seed=31)
    faces = [recognizer.recognize(p, detect=False)[0] for p in known]
    assert all(f.score_name == threshold["score"] for f in faces)
    assert [f.top[0][0] for f in faces].count("person_3") >= 3
    assert recognizer.enroll("newcomer", _pictures(tmp_path / "new", 7, 3, seed=32),
                             detect=False) == 3

    # The export carries the members, the weights, the threshold and the centroids.
    exported = Predictor.load(export_run(model, "keras", tmp_path / "export"))
    assert exported.info.threshold == threshold and exported.member_weights == weights
    np.testing.assert_allclose(exported.info.centroids, centroids)
    np.testing.assert_allclose(exported.outputs_for_arrays(pictures)["logits"], out["logits"],
                               atol=1e-4)
    # Without the picture path: one model file takes the pictures as "image" (the CNN
    # member's input) and the head's chips as "chips".
    given = exported.model_inputs([Image.fromarray(p) for p in pictures])
    assert sorted(given) == ["chips", "image"]
    np.testing.assert_array_equal(given["image"], pictures)
    np.testing.assert_allclose(exported.outputs_for_model_inputs(given)["logits"],
                               out["logits"], atol=1e-4)
    names = [f.name for f in exported.recognize_model_inputs(given, top_k=1)]
    assert names == [f.name for f in exported.recognize([Image.fromarray(p) for p in pictures],
                                                        top_k=1)]
    with pytest.raises(ValueError, match=r"its model file by name \(image, chips\), got one"):
        exported.outputs_for_model_inputs(pictures)
    with pytest.raises(ValueError, match=r"\(image, chips\), got image$"):
        exported.outputs_for_model_inputs({"image": pictures})
    with pytest.raises(ValueError, match=r"of each member by name \(reduced, dlib128\)"):
        ensemble.outputs_for_model_inputs(pictures)  # the run takes them by member


def test_enrollment_test_counts_newcomers_and_strangers_as_by_hand(
        fake_embedder: FakeEmbedder, tmp_path: Path) -> None:
    """``fit --enrollment-test``: its rates, recomputed here from the saved model and every
    picture of the people it left out, through the model's own picture path."""
    from facefold.fitting import measure_enrollment
    from facefold.models.scores import unit_rows
    from facefold.predict import Predictor
    from facefold.predict.gallery import Gallery

    data = make_tiny_dataset(tmp_path / "data", classes=8, shards=3, per_shard=6)
    model = tmp_path / "model"
    result = measure_enrollment(data, tiny_config(steps=60, eval_every=60, preset="dlib128"),
                                model, newcomers=2, strangers=2, shots=3, groups=2, far=0.1,
                                **QUIET)
    names = read_labels(data)
    new, strange = result["newcomers"], result["strangers"]
    assert len({*new, *strange}) == 4 and {*new, *strange} <= set(names)
    predictor = Predictor.load(model)
    assert predictor.labels == [n for n in names if n not in new + strange]
    assert predictor.gallery_names == new and result["trained_people"] == 4
    written = json.loads((model / runs.ENROLLMENT_TEST_FILE).read_text())
    for key in ("newcomers", "strangers", "newcomers_named_right", "strangers_accepted"):
        assert written[key] == result[key], key

    splits = decode_shards(data)
    person = np.array([names[i] for s in splits for i in s.labels])
    features = unit_rows(predictor.outputs_for_arrays(
        np.concatenate([s.images for s in splits]))["features"])
    similarity = features @ predictor.all_centroids().T
    accepted = similarity.max(axis=1) >= result["threshold"]
    strangers = np.isin(person, strange)
    assert result["stranger_pictures"] == strangers.sum() == 2 * 18
    assert result["strangers_accepted"] == pytest.approx(accepted[strangers].mean())
    assert result["stranger_rates"] == pytest.approx(
        {name: accepted[person == name].mean() for name in strange})
    # Decided at the threshold recalibrated for the 2 enrolled people, which it states.
    stated = predictor.enrolled_calibration()
    assert result["threshold"] == stated["threshold"] == predictor.rejection()[1]
    assert result["stated"]["upper"] == stated["strangers"]["upper"]
    assert result["stated"]["held_out"]["mean"] == stated["strangers"]["held_out"]["mean"]
    assert result["calibrated_threshold"] == result["calibration"]["scores"]["cosine"][
        "threshold"]

    # The gallery holds each newcomer's 3 shots; the rest of their 18 pictures are named. The
    # fake embedder gives one person's pictures nearly the same feature, so every picture of
    # a newcomer gets the same decision, and which 3 were the shots changes no count.
    enrolled = Gallery(model, predictor.info.centroids.shape[1]).read()
    assert enrolled.names == new and enrolled.counts.tolist() == [3, 3]
    named = tests = 0
    for name in new:
        own = np.flatnonzero(person == name)
        right = [predictor.people[similarity[i].argmax()] == name and accepted[i] for i in own]
        assert len(set(right)) == 1
        named += right[0] * (len(own) - 3)
        tests += len(own) - 3
    assert result["newcomer_pictures"] == tests == 2 * 15
    assert result["newcomers_named_right"] == pytest.approx(named / tests)
    assert result["newcomers_named_right"] >= 0.8  # the fake embedder separates people


def test_fit_without_a_preset_fits_the_recommended_dlib128(
        fake_embedder: FakeEmbedder, tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data", classes=5, shards=3, per_shard=6)
    toml = tmp_path / "tiny.toml"  # no preset: the tiny dataset's 40-pixel pictures only
    toml.write_text("[model]\ncrop_size = 32\ninput_size = 32\n")
    model = tmp_path / "model"
    assert main(["fit", str(data), "--out", str(model), "--config", str(toml), "--steps", "30",
                 "--eval-every", "30", "--batch-size", "16", "--groups", "2", "--far",
                 "0.1"]) == 0
    card = json.loads((model / runs.MODEL_CARD_JSON).read_text())
    assert (card["preset"], card["family"]) == ("dlib128", "embedding")


def test_fit_without_a_preset_and_without_dlib_refuses_naming_the_choice(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    def missing() -> None:
        raise ModuleNotFoundError(f"dlib is not installed: {dlib128.INSTALL_HINT}")

    monkeypatch.setattr(dlib128, "load", missing)
    data = make_tiny_dataset(tmp_path / "data", classes=5, shards=3, per_shard=6)
    model = tmp_path / "model"
    assert main(["fit", str(data), "--out", str(model), "--steps", "2"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "fit without --preset trains the recommended dlib128" in error
    assert dlib128.INSTALL_HINT in error and "--preset fast-nogap" in error
    assert not model.exists()  # refused before any training
    # A preset named by the user is theirs: the extra's own message, no choice offered.
    assert main(["fit", str(data), "--out", str(model), "--preset", "dlib128"]) == 1
    error = capsys.readouterr().err
    assert dlib128.INSTALL_HINT in error and "fast-nogap" not in error


def test_enrolling_the_same_folder_twice_counts_its_pictures_once(
        fitted: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, model = fitted
    folder = tmp_path / "newcomer"
    _pictures(folder, 7, 5, seed=3)
    for _ in range(2):
        assert main(["enroll", str(model), str(folder), "--crops"]) == 0
        assert capsys.readouterr().out.splitlines()[0] == "enrolled newcomer: 5 picture(s)"
    _pictures(folder, 7, 6, seed=3)[-1].rename(folder / "extra.png")  # one new picture
    assert main(["enroll", str(model), str(folder), "--crops"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "enrolled newcomer: 6 picture(s)"


def test_similarities_are_labelled_as_similarities_in_the_json_and_csv(
        fitted: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from facefold.predict import Predictor

    _, model = fitted
    assert main(["enroll", str(model), str(_pictures(tmp_path / "newcomer", 7, 5, 3)[0].parent),
                 "--crops"]) == 0  # enrolled people: named by the nearest person's centroid
    (photo,) = _pictures(tmp_path / "photos", 7, 1, seed=9)
    capsys.readouterr()
    assert main(["identify", str(model), str(photo), "--crops", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    # By hand: the cosine of the photo's feature with each person's mean feature.
    predictor = Predictor.load(model)
    feature = predictor.outputs([Image.open(photo)])["features"][0]
    centroids = predictor.all_centroids()
    cosine = centroids @ feature / np.linalg.norm(centroids, axis=1) / np.linalg.norm(feature)
    assert row["top_kind"] == "similarity" and row["name"] == "newcomer"
    assert [set(t) for t in row["top"]] == [{"name", "similarity"}] * len(row["top"])
    assert row["top"][0]["similarity"] == pytest.approx(cosine.max(), abs=1e-5)
    table = tmp_path / "faces.csv"
    assert main(["identify", str(model), str(photo), "--crops", "--csv", str(table)]) == 0
    (line,) = csv.DictReader(table.open())
    assert line["top_kind"] == "similarity"
    assert line["top"].startswith(f"newcomer:{cosine.max():.3f}")


def test_fit_refuses_a_batch_size_above_a_calibration_groups_images_before_training(
        fake_embedder: FakeEmbedder, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # 5 people x 6 pictures in each of 3 shards; 2 groups: group 0 leaves 3 people out and
    # holds out shard 0, so it trains on 2 people x 2 shards x 6 = 24 pictures; group 1 on
    # 3 x 2 x 6 = 36; the model on all 90.
    data = make_tiny_dataset(tmp_path / "data", classes=5, shards=3, per_shard=6)
    assert [len(g) for g in people_groups(5, 2, seed=0)] == [3, 2]
    toml = tmp_path / "tiny.toml"  # crops that fit the tiny dataset's 40-pixel pictures
    toml.write_text("[model]\ncrop_size = 32\ninput_size = 32\n")
    model = tmp_path / "model"
    assert main(["fit", str(data), "--out", str(model), "--preset", "dlib128", "--groups", "2",
                 "--config", str(toml), "--batch-size", "25", "--seed", "0"]) == 1
    error = capsys.readouterr().err
    assert error == ("facefold: error: batch size 25 exceeds the 24 training images of "
                     "calibration group 0 (the smallest of the 3 runs this command trains): "
                     "give --batch-size 24 or less (nothing was trained)\n")
    assert not model.exists() and fake_embedder.calls == 0


def test_fit_logs_the_time_left_in_all_early(fake_embedder: FakeEmbedder,
                                             tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data", classes=5, shards=3, per_shard=6)
    lines: list[str] = []
    fit(data, tiny_config(steps=60, eval_every=60, preset="dlib128"), tmp_path / "model",
        groups=2, far=0.1, log=lines.append)
    # The model and 2 calibration groups, 60 steps each: 180 steps, told after the first 21.
    plan = [i for i, line in enumerate(lines) if "of training left in all" in line]
    assert len(plan) == 1 and "180 steps in 3 run(s)" in lines[plan[0]]
    first_step_line = next(i for i, line in enumerate(lines) if "step 60/60" in line)
    assert plan[0] < first_step_line
    seconds_per_step = float(lines[plan[0]].split(" at ")[1].split(" s/step")[0])
    assert seconds_per_step > 0


def test_fit_refuses_pictures_smaller_than_the_crop_before_training(
        fake_embedder: FakeEmbedder, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # The tiny dataset's pictures are 40 px; dlib128's crop is 96. The head would train on
    # them, and its model could then not be loaded (at the first calibration group).
    data = make_tiny_dataset(tmp_path / "data", classes=5, shards=3, per_shard=6)
    model = tmp_path / "model"
    assert main(["fit", str(data), "--out", str(model), "--preset", "dlib128", "--groups", "2",
                 "--batch-size", "16"]) == 1
    error = capsys.readouterr().err
    assert error == (f"facefold: error: {data}: its pictures are 40x40 px, smaller than the "
                     "96x96 crop of dlib128: set [model] crop_size (and input_size) to 40 or "
                     "less in --config, or build the dataset with --size 96 or more (nothing "
                     "was trained)\n")
    assert not model.exists() and fake_embedder.calls == 0
