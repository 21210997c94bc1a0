"""Weighted ensembles: weights chosen on an inner split of the training shards, never on the
held-out ones, and applied alike by the run, predict and export.

The weight choice is checked against hand computations and a brute-force loop; the training
tests run a tiny ``reduced`` + ``dlib128`` ensemble (:class:`conftest.FakeEmbedder`, no dlib
needed) on the 3-shard tiny dataset, held-out shard 0, inner shard 1.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import FakeEmbedder, make_tiny_dataset, tiny_config
from PIL import Image

from facefold import runs
from facefold.config import Config
from facefold.data.images import load_rgb
from facefold.data.records import read_shard
from facefold.evaluate.cv import run_cv
from facefold.evaluate.worker import train_in_worker
from facefold.export import export_run
from facefold.models.families import Ensemble
from facefold.models.inference import CombineMembers, ensemble_inference_model
from facefold.models.outputs import combine_outputs, ensemble_infer, softmax, weighted_mean
from facefold.models.presets import get_preset, member_configs
from facefold.predict import Predictor
from facefold.train import ensemble as ensemble_module
from facefold.train import train
from facefold.train.ensemble import (
    choose_weights,
    fit_weights,
    inner_shards,
    member_runs,
    simplex_grid,
)

QUIET = lambda _: None  # noqa: E731


def _probabilities(true: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, (M, N, 2))``: members whose probability of image i's class (0, 1, 0, …)
    is ``true[m][i]``."""
    labels = np.arange(len(true[0])) % 2
    p = np.array(true, np.float64)  # (M, N)
    probabilities = np.stack([1 - p, p], axis=-1)  # class 1's probability is p ...
    probabilities[:, labels == 0] = probabilities[:, labels == 0, ::-1]  # ... or class 0's
    return labels, probabilities


# ---------------------------------------------------------------- the optimizer


@pytest.mark.parametrize(("true", "expected"), [
    # Two classes, so an image is named right when its true class gets more than 1/2. With
    # weight w on a: image 0 is right for .3 + .6w > .5 (w > 1/3), image 1 for .4 + .5w > .5
    # (w > .2), image 2 for .8 - .7w > .5 (w < 3/7): all three on the grid points .35 and
    # .40, and the log-loss -[log(.3+.6w) + log(.4+.5w) + log(.8-.7w)] still falls at .40
    # (its derivative there: -.6/.54 - .5/.6 + .7/.52 = -0.60).
    ([[0.9, 0.9, 0.1], [0.3, 0.4, 0.8]], [0.40, 0.60]),
    # The least log-loss alone would give a no weight: -log(.44 + .11w) - 2 log(.95 - .5w)
    # rises from w = 0 on, where image 0 is wrong. Image 0 is right for w > 6/11, images 1
    # and 2 for .95 - .5w > .5 (w < .9); on .55 ... .85 the loss is least at .55.
    ([[0.55, 0.45, 0.45], [0.44, 0.95, 0.95]], [0.55, 0.45]),
    # a is perfect and b is not: every w >= .5 names all right; the loss falls to w = 1.
    ([[1.0, 1.0, 1.0], [0.6, 0.9, 0.3]], [1.0, 0.0]),
    # Two equal members: every weight ties on accuracy and loss; equal weights win.
    ([[0.7, 0.4], [0.7, 0.4]], [0.5, 0.5]),
])
def test_weights_match_a_hand_computation(true: list, expected: list) -> None:
    labels, probabilities = _probabilities(true)
    weights = fit_weights(labels, probabilities)
    np.testing.assert_allclose(weights, expected, atol=1e-9)
    assert (weights >= 0).all() and weights.sum() == pytest.approx(1.0, abs=1e-12)


def test_weights_are_the_best_grid_point_by_brute_force() -> None:
    """Against a plain loop over every 1/20 grid point of 3 members, image by image."""
    rng = np.random.default_rng(0)
    for _ in range(3):
        probabilities = rng.dirichlet(np.full(4, 0.5), size=(3, 40))  # 3 members, 40 images
        labels = rng.integers(0, 4, 40)
        best = None
        for i in range(21):
            for j in range(21 - i):
                w = np.array([i, j, 20 - i - j]) / 20
                right, loss = 0, 0.0
                for n in range(40):
                    mean = [sum(w[m] * probabilities[m, n, c] for m in range(3))
                            for c in range(4)]
                    right += int(np.argmax(mean) == labels[n])
                    loss -= np.log(mean[labels[n]]) / 40
                key = (right, -round(loss, 12), -np.abs(w - 1 / 3).sum())
                if best is None or key > best[0]:
                    best = (key, w)
        weights = fit_weights(labels, probabilities)
        np.testing.assert_allclose(weights, best[1], atol=1e-12)
        mean = weighted_mean(probabilities, weights)
        np.testing.assert_allclose(mean.sum(axis=1), 1.0, atol=1e-12)


def test_the_grid_covers_the_simplex_and_coarsens_for_many_members() -> None:
    grid = simplex_grid(3, 20)
    assert grid.shape == (231, 3)  # C(22, 2)
    np.testing.assert_allclose(grid.sum(axis=1), 1.0, atol=1e-12)
    assert ((grid * 20).round(9) % 1 == 0).all() and (grid >= 0).all()
    assert len({tuple(row) for row in grid}) == 231
    assert simplex_grid(2, 4).tolist() == [[0, 1], [.25, .75], [.5, .5], [.75, .25], [1, 0]]
    # Six members: the grid is coarsened to at most 5,000 points (1/11: C(16, 5) = 4,368).
    labels, probabilities = _probabilities([[0.6, 0.4]] * 6)
    weights = fit_weights(labels, probabilities)
    assert weights.sum() == pytest.approx(1.0) and ((weights * 11).round(9) % 1 == 0).all()


@pytest.mark.parametrize("shards", [3, 4, 6])
def test_the_inner_shard_is_a_training_shard_of_every_fold(shards: int) -> None:
    inner = [inner_shards([k], shards)[0] for k in range(shards)]
    assert all(j != k and 0 <= j < shards for k, j in enumerate(inner))
    assert sorted(inner) == list(range(shards))  # every fold weighs on another shard
    assert inner_shards([1, 2], 4) == [3] and inner_shards([2, 3], 4) == [0]
    with pytest.raises(ValueError, match="at least two training shards"):
        inner_shards([0], 2)


def test_ensemble_infer_applies_the_weights() -> None:
    members = [[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], [[0.5, 0.4, 0.1], [0.3, 0.3, 0.4]]]
    infers = [lambda x, p=p: {"logits": np.log(np.array(p)), "features": np.ones((2, 3))}
              for p in members]
    out = ensemble_infer(infers, [0.25, 0.75])(np.zeros((2, 4, 4, 3), np.uint8))
    by_hand = [[0.55, 0.35, 0.1], [0.25, 0.25, 0.5]]
    np.testing.assert_allclose(softmax(out["logits"]), by_hand, atol=1e-6)
    with pytest.raises(ValueError, match="1 weights for 2 ensemble members"):
        ensemble_infer(infers, [1.0])


@pytest.mark.parametrize("weights", [[0.25, 0.75], None])
def test_the_one_file_ensemble_combines_as_the_run(weights: list[float] | None) -> None:
    """The export's layer (float32, in the graph) against hand numbers and the run's
    combine_outputs (float64): probabilities .25/.75 (or .5/.5) of the members', features the
    members' unit features times sqrt(weight), side by side."""
    members = np.array([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]],
                        [[0.5, 0.4, 0.1], [0.3, 0.3, 0.4]]], np.float32)
    features = [np.array([[3.0, 4.0], [0.0, 2.0]], np.float32),
                np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], np.float32)]  # a zero row stays 0
    out = CombineMembers(weights)([np.log(m) for m in members], features)
    w = weights or [0.5, 0.5]
    np.testing.assert_allclose(softmax(out["logits"].numpy()),
                               w[0] * members[0] + w[1] * members[1], atol=1e-6)
    a, b = np.sqrt(w)
    by_hand = [[0.6 * a, 0.8 * a, b, 0, 0], [0, a, 0, 0, 0]]
    np.testing.assert_allclose(out["features"].numpy(), by_hand, atol=1e-6)
    run = combine_outputs([{"logits": np.log(m), "features": f}
                           for m, f in zip(members, features, strict=True)], weights)
    for key in ("logits", "features"):
        np.testing.assert_allclose(out[key].numpy(), run[key], atol=1e-6)


def test_members_that_cannot_share_an_input_make_no_one_file_model() -> None:
    def member(side: int) -> keras.Model:
        image = keras.Input((side, side, 1), dtype="uint8", name="image")
        x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(image))
        return keras.Model(image, {"logits": keras.layers.Dense(2)(x), "features": x})

    with pytest.raises(ValueError, match="member 'b' takes 'image' of shape"):
        ensemble_inference_model({"a": (member(4), "image"), "b": (member(5), "image")})
    with pytest.raises(ValueError, match="1 weights for 2 ensemble members"):
        ensemble_inference_model({"a": (member(4), "image"), "b": (member(4), "image")}, [1.0])
    shared = ensemble_inference_model({"a": (member(4), "image"), "b": (member(4), "image")})
    assert [t.name for t in shared.inputs] == ["image"]  # one input for both


@pytest.mark.parametrize("weights", [[0.5, 0.6], [1.5, -0.5], [1.0, None], [float("nan"), 1]])
def test_recorded_weights_are_checked(weights: list, tmp_path: Path) -> None:
    entries = [{"preset": p, "weight": w} for p, w in zip("ab", weights, strict=True)]
    with pytest.raises(ValueError, match="must sum to 1"):
        runs.check_member_weights(entries, tmp_path / "export.json")
    assert runs.check_member_weights([{"preset": "a"}, {"preset": "b"}], tmp_path) is None


# ---------------------------------------------------------------- config


def test_member_weights_config_and_presets() -> None:
    weighted = get_preset("ensemble-weighted")
    assert weighted.model.member_weights == "inner"
    assert weighted.model.members == ("fast", "dlib128") == get_preset("ensemble").model.members
    assert get_preset("ensemble").model.member_weights == "equal"  # the old preset is unchanged
    # Only the ensemble is weighted: its members are the experiment's ordinary runs.
    assert [m.model.member_weights for m in member_configs(weighted)] == ["equal", "equal"]
    assert member_configs(weighted) == member_configs(get_preset("ensemble"))
    with pytest.raises(ValueError, match="member_weights must be one of equal, inner"):
        weighted.replace(model={"member_weights": "stacked"})
    with pytest.raises(ValueError, match="applies to ensembles only"):
        get_preset("fast").replace(model={"member_weights": "inner"})
    old = get_preset("ensemble").to_dict()  # a config.json written before the key existed
    del old["model"]["member_weights"]
    assert Config.from_dict(old) == get_preset("ensemble")


# ---------------------------------------------------------------- training


def _config() -> Config:
    return tiny_config(steps=2, eval_every=2, preset="ensemble-weighted",
                       sparsity_every=0).replace(model={"members": ["reduced", "dlib128"]})


@pytest.fixture(scope="module")
def weighted(module_fake_embedder: FakeEmbedder,
             tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A cross-validation of the weighted ensemble, fold 0, through the executor; records
    what reached :func:`fit_weights` and what was logged."""
    root = tmp_path_factory.mktemp("weighted")
    data = make_tiny_dataset(root / "data")
    fitted, printed = [], []

    def spy(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        fitted.append(labels.copy())
        return fit_weights(labels, probabilities)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ensemble_module, "fit_weights", spy)
        run_cv(data, _config(), root / "cv", [0], log=printed.append)
    return {"data": data, "cv": root / "cv", "case": root / "cv" / "case-0", "fitted": fitted,
            "printed": "\n".join(printed), "root": root}


def _shard_labels(data: Path, k: int) -> np.ndarray:
    return np.array([r.label for r in read_shard(data / f"data-{k:02d}.tfrecords")])


def _crops(data: Path, k: int) -> list[Image.Image]:
    return [load_rgb(r.image_raw) for r in read_shard(data / f"data-{k:02d}.tfrecords")]


def test_weights_come_from_the_inner_split_only(weighted: dict) -> None:
    case, data = weighted["case"], weighted["data"]
    inner = runs.ensemble_inner_dirs(case)
    assert sorted(inner) == ["dlib128", "reduced"]
    for path in inner.values():  # each inner run: trained on shard 2, evaluated on shard 1
        assert path.parent == case / "inner"
        info = runs.read_run_info(path)
        assert (info["eval_shards"], info["excluded_shards"]) == ([1], [0])
    # What reached the weight fitting is shard 1, image for image; never shard 0.
    (labels,) = weighted["fitted"]
    np.testing.assert_array_equal(labels, _shard_labels(data, 1))
    assert not np.array_equal(labels, _shard_labels(data, 0))
    facts = json.loads((case / "ensemble.json").read_text())["inner"]
    assert (facts["eval_shards"], facts["excluded_shards"], facts["images"]) == ([1], [0], 32)
    for key in ("log_loss", "accuracy", "equal_log_loss", "equal_accuracy"):
        assert np.isfinite(facts[key])
    assert facts["accuracy"] >= facts["equal_accuracy"]  # equal weights are on the grid
    assert "weights reduced " in weighted["printed"] and "chosen on inner shard 1" in (
        weighted["printed"])


def test_the_held_out_predictions_are_the_weighted_mean(weighted: dict) -> None:
    case = weighted["case"]
    weights = runs.ensemble_weights(case)
    assert weights is not None and sorted(weights) == ["dlib128", "reduced"]
    assert all(w >= 0 for w in weights.values()) and sum(weights.values()) == pytest.approx(1)
    members = runs.ensemble_member_dirs(case)
    assert members == {p: case / "members" / p for p in ("reduced", "dlib128")}
    saved = runs.read_predictions(case)
    np.testing.assert_array_equal(saved["labels"], _shard_labels(weighted["data"], 0))
    expected = sum(w * runs.read_predictions(members[p])["probabilities"].astype(np.float64)
                   for p, w in weights.items())
    np.testing.assert_allclose(saved["probabilities"], expected, atol=1e-6)
    np.testing.assert_allclose(saved["probabilities"].sum(axis=1), 1.0, atol=1e-5)
    (row,) = runs.read_metrics(case)
    assert row["weights"] == weights and row["step"] == 2
    accuracy = float((saved["probabilities"].argmax(axis=1) == saved["labels"]).mean())
    assert row["eval_accuracy"] == pytest.approx(accuracy)


def test_the_weighing_rule_is_part_of_the_identity(weighted: dict) -> None:
    """A run weighed by another rule (say, the least log-loss alone) is not this one: its
    run.json would lack or differ in the rule, and it would be refused, not reused."""
    info = runs.read_run_info(weighted["case"])
    assert info["member_weights_rule"] == Ensemble.INNER_WEIGHTS_RULE
    assert "member_weights_rule" not in runs.read_run_info(
        runs.ensemble_member_dirs(weighted["case"])["reduced"])
    assert Ensemble().identity(get_preset("ensemble")) == {}
    older = {key: value for key, value in info.items() if key != "member_weights_rule"}
    assert runs.identity_differences(older, info)


def test_a_second_call_reuses_every_run(weighted: dict) -> None:
    printed = []
    run_cv(weighted["data"], _config(), weighted["cv"], [0], log=printed.append)
    assert [line for line in printed if "skipped" in line] == [
        f"[case-0/{name}] complete, skipped"
        for name in ("reduced", "dlib128", "inner/reduced", "inner/dlib128")]
    assert not any("training" in line or "step" in line for line in printed)


def test_inner_runs_that_saw_the_held_out_shard_are_refused(weighted: dict) -> None:
    case, data = weighted["case"], weighted["data"]
    outer = member_runs(_config(), case)  # evaluated on shard 0, trained on shards 1 and 2
    with pytest.raises(ValueError, match="is not a finished inner-split run"):
        choose_weights(runs.data_fingerprint(data), [0], outer)


def test_the_held_out_shard_does_not_change_the_weights(weighted: dict) -> None:
    """Another shard 0 (the held-out one), the same shards 1 and 2: through ``train`` (not the
    executor) the inner runs are trained again and choose the very same weights."""
    other = make_tiny_dataset(weighted["root"] / "other", seed=7)
    for k in (1, 2):
        shutil.copy(weighted["data"] / f"data-{k:02d}.tfrecords", other)
    assert not np.array_equal(_shard_labels(other, 0), _shard_labels(weighted["data"], 0))
    out = weighted["root"] / "other-run"
    train(other, _config(), out, [0], log=QUIET)
    assert runs.ensemble_weights(out) == runs.ensemble_weights(weighted["case"])
    inner = json.loads((out / "ensemble.json").read_text())["inner"]
    assert inner == json.loads((weighted["case"] / "ensemble.json").read_text())["inner"]
    assert not np.array_equal(runs.read_predictions(out)["labels"],
                              runs.read_predictions(weighted["case"])["labels"])


def test_predict_and_export_apply_the_weights(weighted: dict, tmp_path: Path) -> None:
    case, data = weighted["case"], weighted["data"]
    saved = runs.read_predictions(case)["probabilities"]
    predictor = Predictor.load(case)
    assert predictor.member_weights == runs.ensemble_weights(case)
    probabilities = predictor.predict_crops(_crops(data, 0))
    np.testing.assert_allclose(probabilities, saved, atol=1e-4)
    export = export_run(case, "keras", tmp_path / "export")
    entries = json.loads((export / "export.json").read_text())["ensemble"]["members"]
    assert {e["preset"]: e["weight"] for e in entries} == predictor.member_weights
    loaded = Predictor.load(export)
    assert loaded.member_weights == predictor.member_weights
    np.testing.assert_allclose(loaded.predict_crops(_crops(data, 0)), probabilities, atol=1e-6)


def test_a_ray_worker_trains_an_inner_run(tiny_dataset: Path) -> None:
    """The Ray side (called here without Ray): the excluded shard is neither trained nor
    evaluated on, and is part of the identity the driver checks."""
    config = tiny_config(steps=2, eval_every=2, preset="reduced", sparsity_every=0)
    dataset = {p.name: p.read_bytes() for p in tiny_dataset.iterdir()}
    files = train_in_worker(dataset, config.to_dict(), 1, {}, str(tiny_dataset), [0])
    info = json.loads(files["run.json"])
    assert (info["eval_shards"], info["excluded_shards"]) == ([1], [0])
    identity = runs.run_identity(runs.data_fingerprint(tiny_dataset), [1], config,
                                 excluded_shards=[0])
    assert not runs.identity_differences(info, identity)
    assert runs.identity_differences(info, runs.run_identity(
        runs.data_fingerprint(tiny_dataset), [1], config))  # without exclusion: another run


@pytest.mark.usefixtures("module_fake_embedder")
def test_too_few_shards_fail_before_any_training(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data", shards=2, per_shard=2)
    for run in (lambda: train(data, _config(), tmp_path / "run", [0], log=QUIET),
                lambda: run_cv(data, _config(), tmp_path / "cv", [0], log=QUIET)):
        with pytest.raises(ValueError, match="needs at least two training shards"):
            run()
    assert not (tmp_path / "run").exists() and not (tmp_path / "cv").exists()
