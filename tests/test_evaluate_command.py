"""`facefold evaluate`: a run again with other inference options, a model on new pictures.

Two tiny runs on SYNTHETIC faces (the same config but for the weight average and flip TTA)
and a folder of other pictures of the same people, one person they never saw and one file
that is no image.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeEmbedder, tiny_config
from scipy import stats

from facefold import runs
from facefold.atomic import write_json_atomic
from facefold.cli import main, parse_args
from facefold.data.build import build_dataset
from facefold.data.images import load_rgb
from facefold.data.pipeline import decode_shards
from facefold.data.records import read_labels, read_shard
from facefold.data.synthetic import make_synthetic_faces, person_name
from facefold.evaluate.generalization import (
    EVALUATION_FILE,
    evaluate_folder,
    evaluate_model,
    recorded_estimate,
)
from facefold.evaluate.heldout import (
    Accuracy,
    HeldOutEvaluation,
    InferenceOptions,
    evaluate_run,
    held_out,
)
from facefold.evaluate.stats import wilson_interval
from facefold.models.outputs import softmax
from facefold.predict import Predictor, load_model_folder
from facefold.train import train

PEOPLE, TRAINED, EXTRA = 5, 12, 4  # the last person is never trained on
STRANGER = person_name(PEOPLE - 1, PEOPLE)


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``data`` (4 people x 12 faces, 3 shards), ``extra`` (4 other faces of each of them, all
    16 of a fifth person and ``synthetic_00/broken.jpg``), and two runs holding out shard 0:
    ``plain`` (no weight average, no TTA) and ``averaged`` (weight average and flip TTA)."""
    root = tmp_path_factory.mktemp("evaluate")
    src, extra = root / "src", root / "extra"
    make_synthetic_faces(src, people=PEOPLE, per_person=TRAINED + EXTRA, size=40, seed=0)
    for person in range(PEOPLE):
        name = person_name(person, PEOPLE)
        (extra / name).mkdir(parents=True)
        for path in sorted((src / name).iterdir()):
            if person == PEOPLE - 1 or int(path.stem) >= TRAINED:
                path.rename(extra / name / path.name)
    (src / STRANGER).rmdir()
    (extra / person_name(0, PEOPLE) / "broken.jpg").write_bytes(b"not a picture at all")
    data = root / "data"
    build_dataset(src, data, shards=3, per_class=TRAINED, size=40, near_duplicates=0,
                  log=_quiet)
    base = tiny_config(steps=20, eval_every=20, sparsity_every=0)
    train(data, base, root / "plain", [0], log=_quiet)
    averaged = base.replace(model={"tta_flip": True}, train={"ema_decay": 0.9})
    train(data, averaged, root / "averaged", [0], log=_quiet)
    return {"root": root, "data": data, "extra": extra, "plain": root / "plain",
            "averaged": root / "averaged"}


# ---------------------------------------------------------------- the interval


def test_accuracy_and_wilson_interval_by_hand() -> None:
    answers = [True] * 17 + [False] * 3  # 17 right of 20
    z = 1.959963984540054  # the two-sided 95 % normal quantile
    p, n = 17 / 20, 20
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    assert (round(centre - half, 4), round(centre + half, 4)) == (0.6396, 0.9476)
    accuracy = Accuracy.of(answers)
    assert (accuracy.correct, accuracy.total, accuracy.value) == (17, 20, 0.85)
    assert accuracy.interval == pytest.approx((centre - half, centre + half), abs=1e-12)
    ci = stats.binomtest(17, 20).proportion_ci(0.95, method="wilson")
    assert accuracy.interval == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert accuracy.text() == "0.8500 (17/20), 95 % Wilson interval [0.6396, 0.9476]"
    assert accuracy.contains(0.64) and not accuracy.contains(0.95)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0
    # Exact at 0 % and 100 % for every size (10 of 10 and 531 of 531 rounded below 1 once, 0
    # of 100 above 0), so an estimate of 1.0 lies inside the interval of a perfect score.
    for n in (1, 10, 100, 531, 1042, 3240):
        assert wilson_interval(n, n)[1] == 1.0 and wilson_interval(0, n)[0] == 0.0
        low = wilson_interval(n, n)[0]
        assert low == pytest.approx(stats.binomtest(n, n).proportion_ci(0.95, "wilson").low)
    with pytest.raises(ValueError, match="total >= 1"):
        wilson_interval(0, 0)


# ---------------------------------------------------------------- a run, other options


def test_as_trained_reproduces_the_recorded_predictions(world: dict[str, Path]) -> None:
    result = evaluate_run(world["plain"], log=_quiet)
    recorded = runs.read_predictions(world["plain"])
    np.testing.assert_array_equal(result.labels, recorded["labels"])
    np.testing.assert_allclose(result.probabilities, recorded["probabilities"], atol=1e-5)
    assert result.accuracy == result.recorded_accuracy
    assert result.accuracy.total == 4 * TRAINED // 3  # shard 0: 4 faces of each of 4 people
    assert result.mcnemar() == (0, 0, 1.0)
    assert result.accuracy.value == pytest.approx(runs.read_metrics(world["plain"])[-1][
        "eval_accuracy"])
    assert len(result.rows()) == result.accuracy.total
    assert result.rows()[0]["image"] == "data-00.tfrecords record 0"


def test_no_ema_on_a_run_without_average_is_the_recorded_accuracy(world) -> None:
    result = evaluate_run(world["plain"], InferenceOptions(ema=False), log=_quiet)
    assert result.accuracy == result.recorded_accuracy
    np.testing.assert_allclose(result.probabilities, result.recorded, atol=1e-5)
    assert result.applied == {str(world["plain"]): {"tta": False, "crops": False,
                                                    "weights": "raw", "average_kept": False}}
    assert "raw weights; the run keeps no average" in result.text()


def test_raw_weights_are_the_weights_trained_without_the_average(world) -> None:
    # The average is kept beside the training, never fed back: without it (and without the
    # TTA the averaged run adds) the network is the plain run's, to rounding.
    raw = evaluate_run(world["averaged"], InferenceOptions(tta=False, ema=False), log=_quiet)
    plain = runs.read_predictions(world["plain"])["probabilities"]
    np.testing.assert_allclose(raw.probabilities, plain, atol=1e-5)
    averaged = evaluate_run(world["averaged"], InferenceOptions(tta=False), log=_quiet)
    assert np.abs(averaged.probabilities - raw.probabilities).max() > 1e-3
    assert raw.applied[str(world["averaged"])] == {"tta": False, "crops": False,
                                                   "weights": "raw", "average_kept": True}


def test_tta_on_is_the_mean_of_the_image_and_its_mirror(world) -> None:
    on = evaluate_run(world["averaged"], InferenceOptions(tta=True), log=_quiet)
    as_trained = evaluate_run(world["averaged"], log=_quiet)  # trained with TTA
    np.testing.assert_allclose(on.probabilities, as_trained.recorded, atol=1e-5)
    images = decode_shards(world["data"])[0].images
    no_tta = Predictor(load_model_folder(world["averaged"], tta=False))
    logits = [no_tta.outputs_for_arrays(x)["logits"] for x in (images, images[:, :, ::-1])]
    np.testing.assert_allclose(on.probabilities, softmax(np.mean(logits, axis=0)), atol=1e-5)
    off = evaluate_run(world["averaged"], InferenceOptions(tta=False), log=_quiet)
    np.testing.assert_allclose(off.probabilities, softmax(logits[0]), atol=1e-5)
    assert "TTA off, weight average" in off.text()


def test_raw_weights_that_are_not_stored_are_refused(world, monkeypatch) -> None:
    import facefold.evaluate.heldout as heldout

    monkeypatch.setattr(heldout, "keeps_average", lambda model: False)
    with pytest.raises(ValueError, match="raw weights are not stored anywhere") as info:
        evaluate_run(world["averaged"], InferenceOptions(ema=False), log=_quiet)
    assert str(world["averaged"]) in str(info.value)


def test_what_is_not_a_finished_run_with_held_out_shards_is_named(world, tmp_path) -> None:
    fit_like = tmp_path / "fit"
    shutil.copytree(world["plain"], fit_like)
    info = runs.read_run_info(fit_like)
    write_json_atomic(fit_like / runs.RUN_FILE, {**info, "eval_shards": []})
    with pytest.raises(ValueError, match="trained on every shard"):
        evaluate_run(fit_like, log=_quiet)
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        evaluate_run(world["extra"], log=_quiet)


def test_an_open_set_runs_held_out_pictures_are_its_own_people(world) -> None:
    splits = decode_shards(world["data"])
    labels = read_labels(world["data"])
    people = [labels[3], labels[1]]  # a run trained on two of the four, in its own order
    split, where = held_out(splits, world["data"], [0, 2], people)
    expected = [(k, i, people.index(labels[y])) for k in (0, 2)
                for i, y in enumerate(splits[k].labels) if labels[y] in people]
    assert where == [f"data-{k:02d}.tfrecords record {i}" for k, i, _ in expected]
    assert split.labels.tolist() == [label for _, _, label in expected]
    np.testing.assert_array_equal(split.images[0], splits[0].images[expected[0][1]])


# ---------------------------------------------------------------- a model, other pictures


def _predicted_directly(model: Path, images: list) -> list[str]:
    return [face.top[0][0] for face in Predictor.load(model).recognize(images, top_k=1)]


def test_a_folder_of_other_faces_agrees_with_the_predictor(world) -> None:
    result = evaluate_folder(world["plain"], world["extra"], log=_quiet)
    known = [r for r in result.results if r["known_person"]]
    paths = [world["extra"] / r["image"] for r in known]
    assert [r["answer"] for r in known] == _predicted_directly(
        world["plain"], [load_rgb(p) for p in paths])
    right = sum(r["answer"] == r["person"] for r in known)
    assert (result.accuracy.correct, result.accuracy.total) == (right, 4 * EXTRA)
    assert sum(p["images"] for p in result.per_person()) == 4 * EXTRA
    assert sum(p["correct"] for p in result.per_person()) == right
    # The person it never saw: reported apart, never in the accuracy.
    assert result.unknown_people()[0]["person"] == STRANGER
    assert result.unknown_people()[0]["images"] == TRAINED + EXTRA
    # The file that is no image: named, counted, skipped.
    assert [u["image"] for u in result.unreadable] == [f"{person_name(0, PEOPLE)}/broken.jpg"]
    assert "not an image" in result.unreadable[0]["error"]
    assert result.open_set() is None  # no threshold: nothing must be "unknown"
    held_out = runs.read_metrics(world["plain"])[-1]["eval_accuracy"]
    assert result.estimate["accuracy"] == pytest.approx(held_out)
    assert "held-out accuracy of this run on shard(s) 0" in result.estimate["what"]
    assert result.estimate["inside"] == result.accuracy.contains(held_out)


def test_a_dataset_of_other_faces_agrees_with_the_predictor(world, tmp_path) -> None:
    other = tmp_path / "other"
    build_dataset(world["extra"], other, shards=2, per_class=EXTRA, size=40, near_duplicates=0,
                  log=_quiet)
    result = evaluate_folder(world["averaged"], other, log=_quiet)
    assert result.kind == "shards"
    crops = [load_rgb(r.image_raw) for shard in ("data-00", "data-01")
             for r in read_shard(other / f"{shard}.tfrecords")]
    assert [r["answer"] for r in result.results] == _predicted_directly(world["averaged"], crops)
    assert result.accuracy.total == 4 * EXTRA
    assert [p["person"] for p in result.unknown_people()] == [STRANGER]


def test_the_training_data_means_the_held_out_shards(world) -> None:
    result = evaluate_model(world["plain"], world["data"], log=_quiet)
    assert isinstance(result, HeldOutEvaluation) and result.shards == [0]
    with pytest.raises(ValueError, match=r"the dataset .* was trained on"):
        evaluate_folder(world["plain"], world["data"], log=_quiet)


def test_with_a_threshold_unknown_people_must_be_unknown(world, tmp_path) -> None:
    model = tmp_path / "open"
    shutil.copytree(world["plain"], model)
    runs.write_threshold(model, {"score": "msp", "threshold": 0.6, "thresholds": {"msp": 0.6}})
    result = evaluate_folder(model, world["extra"], log=_quiet)
    faces = Predictor.load(model).recognize(
        [load_rgb(world["extra"] / r["image"]) for r in result.results])
    open_set = result.open_set()
    strangers = [f for f, r in zip(faces, result.results, strict=True) if not r["known_person"]]
    assert open_set["unknown_rejected"]["correct"] == sum(not f.known for f in strangers)
    assert open_set["unknown_rejected"]["images"] == TRAINED + EXTRA
    named_right = sum(f.name == r["person"] for f, r in zip(faces, result.results, strict=True))
    assert open_set["known_named_right"]["correct"] == named_right
    assert result.accuracy.total == 4 * EXTRA  # the closed-set accuracy stays the same
    assert "answered 'unknown'" in result.text()


def test_the_estimate_each_kind_of_model_folder_records(world, tmp_path) -> None:
    from facefold.export import export_run

    held_out = runs.read_metrics(world["plain"])[-1]["eval_accuracy"]
    export = export_run(world["plain"], "keras", tmp_path / "export")
    with pytest.raises(ValueError, match="is an export"):
        evaluate_model(export, world["extra"], InferenceOptions(tta=True), log=_quiet)
    estimate = recorded_estimate(export)
    assert estimate["accuracy"] == pytest.approx(held_out)
    assert estimate["what"].endswith("of the run it was exported from")
    # A case of a cross-validation: the mean over its cases.
    cv = tmp_path / "cv"
    for k, run in enumerate(("plain", "averaged")):
        shutil.copytree(world[run], runs.case_dir(cv, k))
    runs.write_cv_info(cv, {"cases": [0, 1]})
    estimate = recorded_estimate(runs.case_dir(cv, 1))
    finals = [runs.read_metrics(world[r])[-1]["eval_accuracy"] for r in ("plain", "averaged")]
    assert estimate["accuracy"] == pytest.approx(np.mean(finals))
    assert estimate["what"] == f"cross-validation mean over 2 case(s) of {cv}"
    # A `facefold fit` model: its model card's calibration.
    fit = runs.case_dir(cv, 0)
    runs.write_model_card(fit, {"calibration": {
        "groups": 2, "closed_set_accuracy": 0.5, "far": 0.01, "score": "msp",
        "scores": {"msp": {"known_accuracy": 0.4}}}}, "# card\n")
    estimate = recorded_estimate(fit)
    assert (estimate["accuracy"], estimate["known_named_right"]) == (0.5, 0.4)
    assert "leave-people-out calibration" in estimate["what"]


# ---------------------------------------------------------------- the command


def test_the_command_prints_and_writes_the_numbers(world, tmp_path, capsys) -> None:
    assert main(["evaluate", str(world["averaged"]), "--no-tta", "--no-ema"]) == 0
    out = capsys.readouterr().out
    raw = evaluate_run(world["averaged"], InferenceOptions(False, False), log=_quiet)
    assert f"accuracy  {raw.accuracy.text()}" in out
    assert "TTA off, raw weights" in out and "recorded  " in out

    table = tmp_path / "rows.csv"
    assert main(["evaluate", str(world["plain"]), str(world["extra"]), "--out",
                 str(tmp_path / "result"), "--csv", str(table)]) == 0
    captured = capsys.readouterr()
    result = evaluate_folder(world["plain"], world["extra"], log=_quiet)
    assert f"accuracy  {result.accuracy.text()}" in captured.out
    assert "broken.jpg" in captured.out and STRANGER in captured.out
    saved = json.loads((tmp_path / "result" / EVALUATION_FILE).read_text())
    assert (saved["correct"], saved["images"]) == (result.accuracy.correct, 4 * EXTRA)
    assert saved["interval"] == pytest.approx(list(result.accuracy.interval))
    with table.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 * EXTRA + TRAINED + EXTRA + 1  # every picture, the broken one too
    assert sum(row["error"] != "" for row in rows) == 1


def test_the_command_names_what_it_cannot_evaluate(world, capsys) -> None:
    assert main(["evaluate", str(world["extra"])]) == 1
    err = capsys.readouterr().err
    assert err.startswith("facefold: error: ") and "not a run folder" in err
    assert main(["evaluate", str(world["plain"]), str(world["root"] / "nothing")]) == 1
    assert "is not a folder" in capsys.readouterr().err


def test_the_command_refuses_contradicting_options(capsys) -> None:
    with pytest.raises(SystemExit):
        parse_args(["evaluate", "run", "--tta", "--no-tta"])
    assert "not allowed with argument" in capsys.readouterr().err
    assert parse_args(["evaluate", "run"]).data is None


# ---------------------------------------------------------------- embedding head, ensemble


def test_an_ensemble_with_an_embedding_head_is_evaluated_member_by_member(
    fake_embedder: FakeEmbedder, tiny_dataset: Path, tmp_path: Path
) -> None:
    config = tiny_config(steps=6, eval_every=6, preset="ensemble").replace(
        model={"members": ["reduced", "dlib128"]})
    run = tmp_path / "ensemble"
    train(tiny_dataset, config, run, [0], log=_quiet)
    result = evaluate_run(run, log=_quiet)
    np.testing.assert_allclose(result.probabilities, result.recorded, atol=1e-5)
    assert sorted(result.members) == ["dlib128", "reduced"]
    head = runs.ensemble_member_dirs(run)["dlib128"]
    assert result.applied[str(head)]["tta"]  # dlib128 averages the image and its mirror
    # The head without TTA is the head on the image's embedding alone.
    member = evaluate_run(head, InferenceOptions(tta=False), log=_quiet)
    crops = np.stack([np.asarray(load_rgb(r.image_raw))
                      for r in read_shard(tiny_dataset / "data-00.tfrecords")])
    embeddings = fake_embedder.embed(crops)[0][:, None]  # (N, 1 view, D)
    single = Predictor.load(head).outputs_for_model_inputs(embeddings)["logits"]
    np.testing.assert_allclose(member.probabilities, softmax(single), atol=1e-5)
