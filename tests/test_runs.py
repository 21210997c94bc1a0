"""The run layer: results belong to the data they came from, and run folders survive damage.

Stale reuse (a different dataset into the same --out, the same path rebuilt) is refused with
a message that names the difference, and nothing stale is printed or written; a moved
dataset with the same content is reused; resume ignores files that are not its own and skips
a truncated newest checkpoint; inference never reads the dataset back.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_dataset, tiny_config

from facefold import runs
from facefold.cli import main
from facefold.data.build import build_dataset
from facefold.data.synthetic import make_synthetic_faces
from facefold.evaluate.cv import run_cv
from facefold.predict import Predictor
from facefold.train import train

QUIET = {"log": lambda _: None}
CONFIG = tiny_config(steps=4, eval_every=2, sparsity_every=0)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


# ---------------------------------------------------------------- fingerprints and identity


def test_fingerprint_is_content_not_place(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "a")
    fingerprint = runs.data_fingerprint(data)
    moved = tmp_path / "elsewhere" / "b"
    shutil.copytree(data, moved)
    assert runs.data_fingerprint(moved) == fingerprint
    assert len(fingerprint["shards"]) == 3 and fingerprint["labels"][0] == "person_0"
    other = make_tiny_dataset(tmp_path / "c", seed=1)  # same people, other pictures
    difference = runs.describe_data_difference(fingerprint, runs.data_fingerprint(other))
    assert difference == "the dataset differs: the content of shard(s) 0, 1, 2"
    fewer = make_tiny_dataset(tmp_path / "d", classes=3, shards=2)
    difference = runs.describe_data_difference(fingerprint, runs.data_fingerprint(fewer))
    assert "4 people" in difference and "against 3" in difference
    assert "3 shards against 2" in difference


def test_identity_differences_name_each_part() -> None:
    data = {"digest": "a", "shards": ["x"], "labels": ["p", "q"]}
    identity = runs.run_identity(data, [0], CONFIG)
    assert runs.identity_differences(identity, identity) == []
    # Notes are no part of the identity.
    assert runs.identity_differences({**identity, "data_dir": "/x", "image_size": 40},
                                     identity) == []
    other = runs.run_identity(data, [1], CONFIG.replace(train={"steps": 5}), people=["p"])
    differences = runs.identity_differences(other, identity)
    assert any(d.startswith("the config") for d in differences)
    assert "eval shards ([1] against [0])" in differences
    assert "people (['p'] against None)" in differences
    legacy = {"data_dir": "/old", "eval_shards": [0], "config": CONFIG.to_dict()}
    assert runs.identity_differences(legacy, identity) == [runs.LEGACY_DATA]


# ---------------------------------------------------------------- stale reuse


def test_a_different_dataset_into_the_same_out_is_refused(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    """The case of the issue: cv A, then cv B (other people) with the same --out."""
    first = make_tiny_dataset(tmp_path / "A", classes=4)
    second = make_tiny_dataset(tmp_path / "B", classes=5, seed=3)
    out = tmp_path / "X"
    toml = tmp_path / "tiny.toml"
    toml.write_text('preset = "seed"\n[model]\ncrop_size = 32\ninput_size = 32\n[train]\n'
                    'steps = 4\neval_every = 2\nbatch_size = 16\nprecision = "float32"\n'
                    'sparsity_every = 0\n')
    args = ["--folds", "0", "--out", str(out), "--config", str(toml)]
    assert main(["cv", str(first), *args]) == 0
    before = _files(out)
    capsys.readouterr()
    assert main(["cv", str(second), *args]) == 1
    captured = capsys.readouterr()
    assert "holds a cross-validation of other data or settings" in captured.err
    assert "the dataset differs: 4 people" in captured.err and "against 5" in captured.err
    assert "--restart" in captured.err and "new --out" in captured.err
    assert "AVERAGE" not in captured.out  # no stale table printed
    assert _files(out) == before  # and nothing written: cv.json, errors, case folders
    # The way out: --restart trains the new data.
    assert main(["cv", str(second), *args, "--restart"]) == 0
    info = runs.read_run_info(runs.case_dir(out, 0))
    assert info["data"] == runs.data_fingerprint(second)
    assert len(runs.read_run_labels(runs.case_dir(out, 0))) == 5


def test_a_dataset_rebuilt_in_place_is_refused(tmp_path: Path) -> None:
    faces = make_synthetic_faces(tmp_path / "faces", people=4, per_person=9, size=48, seed=0)
    data = tmp_path / "data"
    build_dataset(faces, data, shards=3, per_class=9, size=40, log=lambda _: None)
    run_cv(data, CONFIG, tmp_path / "cv", "0", **QUIET)
    case = runs.case_dir(tmp_path / "cv", 0)
    before = _files(case)
    build_dataset(faces, data, shards=3, per_class=9, size=40, seed=1, overwrite=True,
                  log=lambda _: None)  # the same people, another sample order: other shards
    with pytest.raises(runs.RunMismatchError, match=r"the content of shard\(s\) 0, 1, 2"):
        run_cv(data, CONFIG, tmp_path / "cv", "0", **QUIET)
    assert _files(case) == before
    # A single `train` is refused the same way, before any decoding.
    with pytest.raises(runs.RunMismatchError, match="holds a run of other data"):
        train(data, CONFIG, case, [0], **QUIET)


def test_a_moved_dataset_is_reused_not_retrained(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data")
    out = tmp_path / "cv"
    run_cv(data, CONFIG, out, "0", **QUIET)
    before = _files(runs.case_dir(out, 0))
    moved = tmp_path / "moved" / "data"
    shutil.move(data, moved)
    logged: list[str] = []
    run_cv(moved, CONFIG, out, "0", log=logged.append)
    assert "[case-0] complete, skipped" in logged
    after = _files(runs.case_dir(out, 0))
    assert after == before  # not one file touched: no training happened
    assert runs.read_cv_info(out)["data_dir"] == str(moved.resolve())


def test_another_config_into_the_same_out_is_refused(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data")
    run_dir = tmp_path / "run"
    train(data, CONFIG, run_dir, [0], **QUIET)
    with pytest.raises(runs.RunMismatchError, match="the config"):
        train(data, CONFIG.replace(train={"learning_rate": 0.01}), run_dir, [0], **QUIET)
    with pytest.raises(runs.RunMismatchError, match=r"eval shards \(\[0\] against \[1\]\)"):
        train(data, CONFIG, run_dir, [1], **QUIET)


def test_a_run_of_an_older_facefold_is_not_reused(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data")
    run_dir = tmp_path / "run"
    train(data, CONFIG, run_dir, [0], **QUIET)
    info = runs.read_run_info(run_dir)
    legacy = {k: v for k, v in info.items() if k not in ("data", "image_size")}
    (run_dir / runs.RUN_FILE).write_text(json.dumps(legacy))
    with pytest.raises(runs.RunMismatchError, match="without data fingerprints"):
        train(data, CONFIG, run_dir, [0], **QUIET)
    # ... but it still loads for prediction, its image size read (with a warning) from the
    # dataset it names.
    with pytest.warns(UserWarning, match="records no image size"):
        predictor = Predictor.load(run_dir)
    assert predictor.info.image_size == 40


# ---------------------------------------------------------------- resume integrity


def test_resume_ignores_stray_files_and_skips_a_truncated_checkpoint(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data")
    config = tiny_config(steps=6, eval_every=2, sparsity_every=0)
    whole = tmp_path / "whole"
    expected = train(data, config, whole, [0], **QUIET)
    run_dir = tmp_path / "damaged"
    train(data, config.replace(train={"steps": 4}), tmp_path / "ignored", [0], **QUIET)
    shutil.copytree(whole, run_dir)
    checkpoints = run_dir / runs.CHECKPOINT_DIR
    (checkpoints / "step-final.keras").write_bytes(b"not ours")
    (checkpoints / "notes.txt").write_text("a user's file")
    newest = checkpoints / "step-000006.keras"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a full disk
    (run_dir / runs.PREDICTIONS_FILE).unlink()
    assert [s for s, _ in runs.checkpoints(run_dir)] == [0, 2, 4, 6]
    with pytest.warns(UserWarning, match="step-000006.keras is not a whole checkpoint"):
        assert runs.latest_checkpoint(run_dir)[0] == 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rows = train(data, config, run_dir, [0], **QUIET)
    # Resumed from step 4: steps 5-6 trained again give the uninterrupted run's numbers.
    assert [r["step"] for r in rows] == [0, 2, 4, 6]
    assert rows[-1]["eval_accuracy"] == expected[-1]["eval_accuracy"]
    assert rows[-1]["eval_loss"] == pytest.approx(expected[-1]["eval_loss"], abs=1e-6)
    assert runs.latest_checkpoint(run_dir)[0] == 6
    assert (checkpoints / "step-final.keras").read_bytes() == b"not ours"  # left alone


# ---------------------------------------------------------------- self-sufficient runs


def test_a_run_predicts_the_same_after_its_dataset_is_gone(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data", size=44)  # not the 112/96 convention
    run_dir = tmp_path / "run"
    train(data, CONFIG, run_dir, [0], **QUIET)
    assert runs.read_run_info(run_dir)["image_size"] == 44
    picture = np.random.default_rng(0).integers(0, 255, (1, 44, 44, 3), dtype=np.uint8)
    before = Predictor.load(run_dir).outputs_for_arrays(picture)["logits"]
    shutil.rmtree(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback, no warning: the run knows its size
        predictor = Predictor.load(run_dir)
    assert predictor.info.image_size == 44
    np.testing.assert_array_equal(predictor.outputs_for_arrays(picture)["logits"], before)


def test_labels_must_match_the_model(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data")
    run_dir = tmp_path / "run"
    train(data, CONFIG, run_dir, [0], **QUIET)
    (run_dir / runs.LABELS_FILE).write_text("a\nb\nc\n")
    with pytest.raises(ValueError, match=r"does not match the labels .*run.json recorded"):
        Predictor.load(run_dir)
    info = runs.read_run_info(run_dir)  # run.json changed to agree: the model still disagrees
    (run_dir / runs.RUN_FILE).write_text(json.dumps({**info, "data": {
        **info["data"], "labels": ["a", "b", "c"]}}))
    with pytest.raises(ValueError, match="lists 3 people but the model has 4 outputs"):
        Predictor.load(run_dir)


def test_a_tampered_threshold_names_the_file_and_field(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data")
    run_dir = tmp_path / "run"
    train(data, CONFIG, run_dir, [0], **QUIET)
    for content, field in (("[1, 2]", "JSON object"), ('{"score": "energy", "threshold": "x"}',
                                                       "'threshold' must be a number"),
                           ('{"score": 3, "threshold": 1}', "'score'")):
        (run_dir / runs.THRESHOLD_FILE).write_text(content)
        with pytest.raises(ValueError, match=field) as err:
            Predictor.load(run_dir)
        assert runs.THRESHOLD_FILE in str(err.value)


def test_paths_in_model_folders_stay_inside() -> None:
    folder = Path("/models/m")
    assert runs.contained(folder, "members/fast", "f", folder) == folder / "members/fast"
    for bad in ("/etc", "../x", "members/../../x", "", 3):
        with pytest.raises(ValueError, match="field 'f'"):
            runs.contained(folder, bad, "f", folder)
    for bad in ("../x", "a/b", "", "."):
        with pytest.raises(ValueError, match="cannot name a folder"):
            runs.member_dir(folder, bad)


def test_a_tampered_export_names_the_file_and_field(tmp_path: Path) -> None:
    """Model folders are data: each export.json field is checked, labels must fit the model,
    member paths stay inside, and exports are ordinary folders."""
    from facefold.export import export_run

    data = make_tiny_dataset(tmp_path / "data")
    train(data, CONFIG, tmp_path / "run", [0], **QUIET)
    export = export_run(tmp_path / "run", "keras", tmp_path / "export")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(export.stat().st_mode) == 0o777 & ~mask
    meta = json.loads((export / runs.EXPORT_FILE).read_text())
    Predictor.load(export)  # the untouched export loads
    cases = [
        ({"labels": meta["labels"][:-1]}, "lists 3 people but the model gives"),
        ({"labels": [1, 2, 3, 4]}, "field 'labels'"),
        ({"labels": [*meta["labels"][:-1], "eve\nz.png: mallory"]},  # a spoofed output line
         r"field 'labels' item 3 'eve\\nz.png: mallory' holds U\+000A"),
        ({"labels": [*meta["labels"][:-1], "Unknown"]}, "field 'labels' item 3 'Unknown' is the"),
        ({"threshold": {"score": "energy", "threshold": "high"}}, "field 'threshold'"),
        ({"image_size": "big"}, "field 'image_size'"),
        ({"channels": 2}, "field 'channels'"),
        ({"ensemble": {"members": [{"preset": "a", "export": "../../etc"},
                                   {"preset": "b", "export": "/tmp"}]}},
         "leads outside"),
        ({"family": "ensemble", "ensemble": {"members": "all"}},
         r"field 'ensemble.members' must be a list"),
        ({"family": "ensemble", "ensemble": {"members": [{"preset": "a", "family": "ensemble"}]}},
         "ensemble member 0 is an ensemble itself"),
        ({"family": "ensemble", "ensemble": {"members": [{"preset": "a"},
                                                         {"preset": "b", "family": "x"}]}},
         r"field 'ensemble.members\[1\].family' must be one of"),
    ]
    for change, message in cases:
        (export / runs.EXPORT_FILE).write_text(json.dumps({**meta, **change}))
        with pytest.raises(ValueError, match=message) as err:
            Predictor.load(export)
        assert runs.EXPORT_FILE in str(err.value)
    (export / runs.EXPORT_FILE).write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        Predictor.load(export)


def test_how_often_a_run_is_evaluated_is_not_another_run(tmp_path: Path) -> None:
    # Batch s is a function of (seed, s) alone, so evaluating every 4 steps instead of every
    # 2 (or evaluating fewer pictures at once) trains the same weights: no --restart needed.
    data = make_tiny_dataset(tmp_path / "data")
    run_dir = tmp_path / "run"
    train(data, CONFIG, run_dir, [0], **QUIET)

    def run_files() -> dict[str, bytes]:  # TensorBoard's event files are new at every start
        return {k: v for k, v in _files(run_dir).items() if not k.startswith("tensorboard")}

    before = run_files()
    assert CONFIG.train.eval_every != 4
    again = CONFIG.replace(train={"eval_every": 4, "eval_batch_size": 7})
    train(data, again, run_dir, [0], **QUIET)
    assert run_files() == before  # finished: found, nothing trained again
    with pytest.raises(runs.RunMismatchError, match=r"train\.steps"):  # this one trains more
        train(data, again.replace(train={"steps": CONFIG.train.steps + 10}), run_dir, [0],
              **QUIET)
