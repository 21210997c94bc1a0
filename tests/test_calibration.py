"""``facefold fit``'s calibration, stranger by stranger: the interval over strangers on the
model card, ``--far-bound upper``, ``--strangers DIR``, and the plan check that refuses a
calibration with groups of one person before any training.

The embedding family runs on the fake embedder (no dlib needed), which gives every picture of
one tiny-dataset pattern nearly the same embedding: a "stranger" drawn with a known person's
pattern is a perfect look-alike.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    FakeEmbedder,
    class_pattern,
    keep_no_lite,
    make_tiny_dataset,
    tiny_config,
    write_image_tree,
)
from PIL import Image, ImageEnhance

from facefold import runs
from facefold.cli import main
from facefold.data.build import build_dataset
from facefold.embeddings import dlib128
from facefold.faces import plausible
from facefold.fitting import fit
from facefold.models.enrollment import recalibrate
from facefold.models.identities import resample_indices

QUIET = {"log": lambda _: None}
# fit's options for a dlib128 head on the tiny dataset, as tiny_config sets them in Python.
_TINY_DLIB128 = ["--preset", "dlib128", "--groups", "2", "--batch-size", "16", "--steps", "60",
                 "--eval-every", "60", "--seed", "0", "--precision", "float32"]


def _strangers(folder: Path, patterns: dict[str, int], count: int, seed: int = 1) -> Path:
    """``count`` pictures per sub-folder of ``folder``, drawn with a tiny-dataset pattern."""
    rng = np.random.default_rng(seed)
    for name, pattern in patterns.items():
        (folder / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(class_pattern(pattern, rng, 40)).save(folder / name / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def tiny_toml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Crops that fit the tiny dataset's 40-pixel pictures."""
    toml = tmp_path_factory.mktemp("config") / "tiny.toml"
    toml.write_text("[model]\ncrop_size = 32\ninput_size = 32\n")
    return toml


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("calibration") / "data", classes=7,
                             shards=3, per_shard=6)


def _fit_args(data: Path, model: Path, strangers: Path, toml: Path) -> list[str]:
    return ["fit", str(data), "--out", str(model), *_TINY_DLIB128, "--far", "0.1",
            "--strangers", str(strangers), "--strangers-crops", "--config", str(toml)]


@pytest.fixture(scope="module")
def fitted(tiny_data: Path, tiny_toml: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[Path, Path]:
    """``(model, strangers)``: the tiny dataset fit by the CLI with a look-alike of person_0
    and a loose photo of a pattern no one has as ``--strangers``, once for the module."""
    root = tmp_path_factory.mktemp("fitted")
    strangers = _strangers(root / "strangers", {"lookalike": 0}, 4)
    Image.fromarray(class_pattern(8, np.random.default_rng(2), 40)).save(strangers / "one.png")
    embedder = FakeEmbedder()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dlib128, "load", lambda: embedder)
        # A module fixture is set up before conftest's per-test synthetic_faces_pass.
        patch.setattr(plausible, "face_problem", lambda image: None)
        patch.setenv("FACEFOLD_CACHE", str(root / "embedding-cache"))
        keep_no_lite(patch)
        assert main(_fit_args(tiny_data, root / "model", strangers, tiny_toml)) == 0
    return root / "model", strangers


def test_the_card_shows_each_stranger_and_the_interval_over_strangers(
        fitted: tuple[Path, Path]) -> None:
    model, _ = fitted
    card = json.loads((model / runs.MODEL_CARD_JSON).read_text())
    calibration = card["calibration"]
    assert calibration["far_bound"] == "pooled"  # the default: as before
    assert calibration["strangers"]["people"] == 2 and calibration["strangers"]["pictures"] == 5
    chosen = calibration["scores"][calibration["score"]]
    people = chosen["identities"]
    # The 7 dataset people (each a stranger to one group) and the 2 added ones.
    assert set(people["rates"]) == {*(f"person_{i}" for i in range(7)), "lookalike", "one.png"}
    # The look-alike's 4 pictures are accepted by any gallery that holds person_0: by group
    # 0's model (at least half its 8 pictures over the two groups' models) or, for cosine
    # and nearest, the model's own gallery (a head on the embedding: features fixed).
    assert calibration["centroid_calibration"] == "gallery"
    worst = people["rates"]["lookalike"]
    assert worst >= 0.5 and people["worst"] == {"identity": "lookalike", "rate": worst}
    assert people["mean"] == pytest.approx(np.mean(list(people["rates"].values())))
    # The same interval from the card's rates alone: the seeded draws of people, each row's
    # mean rate, its 2.5 and 97.5 percentiles.
    rates = np.array([people["rates"][name] for name in sorted(people["rates"])])
    means = rates[resample_indices(len(rates), 2000, 0)].mean(axis=1)
    assert [people["low"], people["upper"]] == pytest.approx(np.percentile(means, [2.5, 97.5]))
    stored = json.loads((model / runs.THRESHOLD_FILE).read_text())
    assert stored["far_bound"] == "pooled" and stored["strangers"]["upper"] == people["upper"]
    text = (model / runs.MODEL_CARD_MD).read_text()
    # What people new to the model meet: each stranger's rate at a threshold set without
    # them, a column of the table, their mean and interval in the sentences.
    held = people["held_out"]
    assert set(held["rates"]) == set(people["rates"])
    assert f"| lookalike | {worst:.1%} | {held['rates']['lookalike']:.1%} |" in text
    assert "measured each against a threshold set without them" in text
    assert "each of the 7 people in turn a stranger to all the others' photos" in text
    assert f"95 % interval {held['low']:.1%} to {held['upper']:.1%}" in text
    # One new stranger: the 2.5 and 97.5 percentiles of the held-out rates themselves, each
    # seeded draw one person; the card says it with the chance of a new worst (1 in 9 + 1).
    held_rates = np.array([held["rates"][name] for name in sorted(held["rates"])])
    alone = held_rates[resample_indices(len(rates), 2000, 0, group=1)][:, 0]
    new = held["new_person"]
    assert [new["low"], new["upper"]] == pytest.approx(np.percentile(alone, [2.5, 97.5]))
    assert (f"between {new['low']:.1%} and {new['upper']:.1%} of their photos accepted" in text
            and "about one in 10 would be accepted more often than any of these" in text)


def test_far_bound_upper_holds_the_upper_bound_and_accepts_less_of_the_look_alike(
        fitted: tuple[Path, Path], fake_embedder: FakeEmbedder, tiny_data: Path,
        tiny_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # The same fit again with --far-bound upper: the trained runs are found, the threshold
    # is set again (the bound is no part of a run: no --restart needed).
    model = Path(shutil.copytree(fitted[0], tmp_path / "model"))
    capsys.readouterr()
    assert main([*_fit_args(tiny_data, model, fitted[1], tiny_toml), "--far-bound",
                 "upper"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert not any("step 60/60" in line for line in lines)  # nothing trained again
    calibration = json.loads((model / runs.MODEL_CARD_JSON).read_text())["calibration"]
    chosen = calibration["scores"][calibration["score"]]
    assert calibration["far_bound"] == "upper"
    assert chosen["threshold"] == chosen["by_bound"]["upper"]["threshold"]
    assert chosen["by_bound"]["upper"]["threshold"] >= chosen["by_bound"]["pooled"]["threshold"]
    assert chosen["identities"]["upper"] <= 0.1
    pooled = chosen["by_bound"]["pooled"]["identities"]["rates"]["lookalike"]
    assert chosen["identities"]["rates"]["lookalike"] < pooled
    summary = next(line for line in lines if "--far-bound upper" in line)
    assert "--far-bound upper" in summary and "95 % upper bound" in summary
    assert (f"{chosen['identities']['held_out']['mean']:.1%} of their photos accepted"
            in summary)


def test_strangers_folder_errors_are_one_line_and_nothing_is_trained(
        fake_embedder: FakeEmbedder, tiny_data: Path, tiny_toml: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "model"
    base = ["fit", str(tiny_data), "--out", str(model), *_TINY_DLIB128, "--config",
            str(tiny_toml)]
    assert main([*base, "--strangers", str(tmp_path / "missing")]) == 1
    assert capsys.readouterr().err == (f"facefold: error: --strangers {tmp_path / 'missing'}: "
                                       "not a folder (give a folder of photos, one sub-folder "
                                       "per person or one photo per person)\n")
    known = _strangers(tmp_path / "known", {"person_3": 3}, 2)
    assert main([*base, "--strangers", str(known)]) == 1
    assert "person_3 is one of the people the model learns" in capsys.readouterr().err
    assert not model.exists() and fake_embedder.calls == 0


def test_fit_refuses_groups_of_one_person_naming_the_per_class_that_keeps_more(
        fake_embedder: FakeEmbedder, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # celeb21 in small: 8 people with 6 photos each, but 4 of them have one photo that is a
    # brightened copy of another, which the near-duplicate check drops. --per-class 6 then
    # keeps 4 people, and 4 calibration groups of 1 person left verification without a pair
    # of strangers: "threshold_at_far needs at least one unknown score" after the training.
    source = tmp_path / "photos"
    tree = write_image_tree(source, {**{f"full{i}": 6 for i in range(4)},
                                     **{f"short{i}": 5 for i in range(4)}})
    for i in range(4):
        first = tree[f"short{i}"][0]
        with Image.open(first) as image:
            ImageEnhance.Brightness(image.convert("RGB")).enhance(1.15).save(
                source / f"short{i}" / "copy.png")
    data = tmp_path / "data"
    manifest = build_dataset(source, data, shards=3, per_class=6, size=40, **QUIET)
    assert sorted(manifest["people"]) == [f"full{i}" for i in range(4)]
    assert len(manifest["near_duplicates"]) == 4
    with pytest.raises(ValueError) as error:
        fit(data, tiny_config(steps=60, eval_every=60, preset="dlib128"), tmp_path / "model",
            groups=4, far=0.1, **QUIET)
    assert str(error.value) == (
        f"{data} holds 4 people: 4 calibration groups would leave a group with a single "
        "person, and calibrating needs two strangers per group: give --groups 2 or fewer, or "
        "rebuild the dataset with --per-class 5 (its manifest lists 4 people dropped for "
        "having fewer than 6 pictures after near-duplicates: --per-class 5 keeps 8) (nothing "
        "was trained)")
    assert not (tmp_path / "model").exists() and fake_embedder.calls == 0


def _features(**arrays: object) -> dict[str, np.ndarray]:
    """Calibration features of one group: a trained person at [1, 0], strangers A and B."""
    base = {
        "names": np.array(["A", "B"]), "unknown_group": np.zeros(4, np.int32),
        "unknown_identity": np.array([0, 0, 1, 1], np.int32),
        "unknown_features": np.array([[0, 1], [0, 1], [0.6, 0.8], [0.6, 0.8]], np.float32),
        "known_group": np.zeros(2, np.int32), "known_labels": np.zeros(2, np.int32),
        "known_features": np.array([[1, 0], [0.8, 0.6]], np.float32),
        "centroid_group": np.zeros(1, np.int32), "centroids": np.array([[1, 0]], np.float32),
    }
    return {**base, **arrays}


def test_recalibration_for_one_enrolled_person_by_hand() -> None:
    # Nobody enrolled: strangers score their cosine to the trained person, A 0 and B 0.6, so
    # at far 0 the threshold lies just above 0.6, and both known pictures (1 and 0.8) pass.
    alone = recalibrate(_features(), [], far=0.0, bound="pooled")
    b_score = float(np.float32(0.6))  # the features are float32
    assert alone["threshold"] == np.nextafter(b_score, 1) and alone["known_accuracy"] == 1.0
    assert alone["newcomers_named_right"] is None and alone["simulated"] == [0]
    # One person enrolled from 1 picture: for stranger A the newcomer is B (centroid
    # [0.6, 0.8]), and A's pictures now score 0.8; for B it is A ([0, 1]): B scores 0.8 too.
    # So the threshold rises just above 0.8. The known picture [0.8, 0.6] is lost: with
    # newcomer B it is closer to B (0.96) than to its own person, with A it scores 0.8,
    # under the threshold. The newcomer's other picture (similarity 1) is named right.
    one = recalibrate(_features(), [1], far=0.0, bound="pooled")
    assert one["threshold"] == pytest.approx(0.8) and one["threshold"] > float(np.float32(0.8))
    assert one["known_accuracy"] == 0.5 and one["newcomers_named_right"] == 1.0
    assert one["strangers"]["rates"] == {"A": 0.0, "B": 0.0} and one["simulated"] == [1]
    # Two enrolled, but a group of two strangers can simulate one newcomer: it says so.
    assert recalibrate(_features(), [1, 1], far=0.0, bound="upper")["simulated"] == [1]


def test_enrolling_recalibrates_the_threshold_from_the_stored_features(
        fitted: tuple[Path, Path], fake_embedder: FakeEmbedder, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    from facefold.predict import Predictor

    model = Path(shutil.copytree(fitted[0], tmp_path / "model"))
    card = json.loads((model / runs.MODEL_CARD_JSON).read_text())["calibration"]
    cosine = card["scores"]["cosine"]
    arrays = runs.read_calibration_features(model)
    # The stored features give back the calibration's own cosine threshold and rates.
    alone = recalibrate(arrays, [], 0.1, "pooled")
    assert alone["threshold"] == pytest.approx(cosine["threshold"])
    assert alone["known_accuracy"] == pytest.approx(cosine["known_accuracy"])
    assert alone["strangers"]["rates"] == pytest.approx(cosine["identities"]["rates"])
    # ... on the model's own gallery: the 7 people's 18 pictures each (6 in each of 3
    # shards) and the 5 strangers' (shard -1, labels after the people's).
    assert alone["replay"] == "gallery"
    assert np.bincount(arrays["gallery_labels"]).tolist() == [18] * 7 + [4, 1]
    assert np.bincount(arrays["gallery_shards"] + 1).tolist() == [5, 42, 42, 42]
    predictor = Predictor.load(model)
    assert predictor.enrolled_calibration() is None
    assert predictor.rejection(score="cosine")[1] == cosine["threshold"]
    # Enroll two people (3 and 4 pictures): the model now decides by the recalibrated one.
    folders = [tmp_path / "x", tmp_path / "y"]
    for folder, pattern, count in zip(folders, (7, 8), (3, 4), strict=True):
        _strangers(folder, {folder.name: pattern}, count, seed=pattern)
    assert main(["enroll", str(model), *(str(f / f.name) for f in folders), "--crops"]) == 0
    expected = recalibrate(arrays, [3, 4], 0.1, "pooled")
    again = Predictor.load(model)
    assert again.enrolled_calibration() == expected
    assert again.rejection(score="cosine")[1] == expected["threshold"]
    assert again.recognize([Image.new("RGB", (40, 40))])[0].threshold == expected["threshold"]
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["enrolled x: 3 picture(s)", "enrolled y: 4 picture(s)"]
    chosen = card["score"]  # what decided before anyone was enrolled
    was = (f"(it was {cosine['threshold']:.4f} with nobody enrolled)" if chosen == "cosine"
           else f"(the cosine similarity to a person's mean photo; with nobody enrolled, faces "
                f"were named by the {chosen} score at {card['scores'][chosen]['threshold']:.4f})")
    assert out[2].startswith(f"With 2 people enrolled, a face must now reach a similarity of "
                             f"{expected['threshold']:.4f} to be named {was}")
    assert f"{expected['far']:.1%} of strangers' photos were accepted" in out[2]
    # What new people meet: each replayed stranger against a threshold set without them.
    held = expected["strangers"]["held_out"]
    assert (f"an average stranger measured against a threshold set without them "
            f"{held['mean']:.1%}, 95 % upper bound {held['upper']:.1%}") in out[2]
    new = held["new_person"]
    assert f"; one new stranger {new['low']:.1%} to {new['upper']:.1%} for 95 % of them" in out[2]


def test_the_recalibration_is_kept_for_the_next_process_and_only_for_its_gallery(
        fitted: tuple[Path, Path], fake_embedder: FakeEmbedder, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from facefold.predict import Predictor
    from facefold.predict import predictor as predictor_module

    model = Path(shutil.copytree(fitted[0], tmp_path / "model"))
    arrays = runs.read_calibration_features(model)
    first = Predictor.load(model)
    first.enroll_features("x", arrays["gallery_features"][:3])
    expected = recalibrate(arrays, [3], 0.1, "pooled")
    assert first.enrolled_calibration() == expected
    assert (model / runs.ENROLLED_CALIBRATION_FILE).is_file()

    def replayed(*args, **kwargs):
        raise AssertionError("replayed although the same recalibration was kept")

    # The next process reads it (the same numbers, no replay) ...
    with monkeypatch.context() as patch:
        patch.setattr(predictor_module, "recalibrate", replayed)
        assert Predictor.load(model).enrolled_calibration() == expected
    # ... but not once the gallery changed (one more picture of x), nor when the file is
    # damaged: then the replay runs and keeps the new one.
    Predictor.load(model).enroll_features("x", arrays["gallery_features"][3:4])
    assert Predictor.load(model).enrolled_calibration() == recalibrate(arrays, [4], 0.1,
                                                                       "pooled")
    (model / runs.ENROLLED_CALIBRATION_FILE).write_text("{not json")
    assert Predictor.load(model).enrolled_calibration() == recalibrate(arrays, [4], 0.1,
                                                                       "pooled")
    # Nor for other calibration features (a model fit again): their hash is in the key.
    with np.load(model / runs.CALIBRATION_FEATURES_FILE) as data:
        changed = {k: data[k] for k in data.files}
    changed["gallery_features"] = changed["gallery_features"][::-1].copy()
    np.savez_compressed(model / runs.CALIBRATION_FEATURES_FILE, **changed)
    with monkeypatch.context() as patch:
        patch.setattr(predictor_module, "recalibrate", replayed)
        with pytest.raises(AssertionError, match="replayed"):
            Predictor.load(model).enrolled_calibration()


def test_stranger_pictures_without_a_face_are_left_out_and_counted(
        fitted: tuple[Path, Path], fake_embedder: FakeEmbedder, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from facefold.predict import Predictor
    from facefold.predict.strangers import crop_strangers, list_strangers

    # The face check, stood in for: the synthetic crops pass, the black wide picture does not.
    monkeypatch.setattr(plausible, "face_problem",
                        lambda image: "no face" if image.width != image.height else None)

    folder = _strangers(tmp_path / "strangers", {"zed": 3}, 2)
    (folder / "zed" / "broken.png").write_bytes(b"not a picture")
    Image.new("RGB", (400, 100)).save(folder / "wide.png")  # no face, and not a face crop
    found = list_strangers(folder)
    assert found.names == ["wide.png", "zed"] and [len(f) for f in found.files] == [1, 3]
    lines: list[str] = []
    crops = crop_strangers(found, Predictor.load(fitted[0]), detect=False, log=lines.append)
    assert crops.names == ["zed"] and crops.labels.tolist() == [0, 0]
    assert [Path(line.split(":")[0]).name for line in crops.skipped] == ["wide.png",
                                                                         "broken.png"]
    assert lines[0].startswith("[fit] --strangers: 2 picture(s) left out")
    (folder / "zed").rename(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="no face found in any of its pictures"):
        crop_strangers(list_strangers(folder), Predictor.load(fitted[0]), detect=False,
                       log=lines.append)
