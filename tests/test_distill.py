"""Knowledge distillation (``train.teacher``): targets from same-fold teacher runs.

The batch and target arithmetic is checked against hand computations and the label path it
generalizes; the training tests distill tiny ``fast-64-long`` + ``fast-64-wide`` teachers
(32x32 crops, a few steps) into a tiny ``fast-64-distilled`` on the 3-shard tiny dataset.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from facefold import runs
from facefold.config import AugmentSpec, Config
from facefold.data.augment import mix
from facefold.data.pipeline import Split, batch_maker, decode_shards, evaluation_batches
from facefold.evaluate.cv import run_cv
from facefold.evaluate.experiment import run_experiment
from facefold.models.families import family_of, identity_of
from facefold.models.outputs import softmax
from facefold.models.presets import get_preset, teacher_configs
from facefold.train.distill import student_targets, teacher_targets
from facefold.train.trainer import split_folds

QUIET = lambda _: None  # noqa: E731
# No jitter at all: every "augmented" view is the image itself.
STILL = AugmentSpec(flip=False, brightness=0.0, contrast=(1.0, 1.0), hue=0.0,
                    saturation=(1.0, 1.0))


def _distilled(steps: int = 6, **train) -> Config:
    return tiny_config(steps, steps, "fast-64-distilled", **{"teacher_views": 2, **train})


# ---------------------------------------------------------------- targets in batches


def test_a_batch_carries_the_targets_of_its_own_images() -> None:
    # Image i is the constant gray 20 i, so a batch's crops tell which images it holds.
    n, classes = 8, 3
    images = np.stack([np.full((6, 6, 1), 20 * i, np.uint8) for i in range(n)])
    split = Split(images, np.arange(n, dtype=np.int32) % classes)
    targets = np.random.default_rng(0).dirichlet(np.ones(classes), n).astype(np.float32)
    make = batch_maker(split, STILL, 6, 5, seed=3, num_classes=classes, targets=targets)
    plain = batch_maker(split, STILL, 6, 5, seed=3, num_classes=classes)
    for step in (0, 1, 7):
        x, y = make(tf.constant(step))
        index = np.rint(x.numpy()[:, 0, 0, 0] * 255 / 20).astype(int)
        np.testing.assert_allclose(y.numpy(), targets[index])
        np.testing.assert_array_equal(plain(tf.constant(step))[1].numpy(), split.labels[index])


def test_targets_of_the_wrong_shape_are_refused() -> None:
    split = Split(np.zeros((4, 6, 6, 1), np.uint8), np.zeros(4, np.int32))
    with pytest.raises(ValueError, match=r"one row of 3 per training image \(4\)"):
        batch_maker(split, STILL, 6, 2, 0, 3, np.zeros((4, 2), np.float32))


def test_mixing_soft_targets_matches_mixing_their_labels() -> None:
    # One-hot targets through the soft path give exactly what int labels give.
    x = tf.random.stateless_uniform((6, 8, 8, 3), [1, 2])
    labels = tf.constant([0, 1, 2, 3, 1, 0])
    spec = AugmentSpec(mixup=0.4, cutmix=1.0)
    for step in range(4):
        seed = tf.constant([5, step], tf.int64)
        x_int, y_int = mix(x, labels, 4, spec, seed)
        x_soft, y_soft = mix(x, tf.one_hot(labels, 4), 4, spec, seed)
        np.testing.assert_array_equal(x_int.numpy(), x_soft.numpy())
        np.testing.assert_allclose(y_int.numpy(), y_soft.numpy(), atol=1e-7)
    soft = tf.constant(np.random.default_rng(1).dirichlet(np.ones(4), 6), tf.float32)
    _, y = mix(x, soft, 4, spec, tf.constant([5, 9], tf.int64))
    np.testing.assert_allclose(y.numpy().sum(axis=1), 1.0, atol=1e-6)


def test_student_targets_mix_teacher_and_label_by_weight(tmp_path: Path) -> None:
    labels = np.array([0, 2], np.int32)
    teacher = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]], np.float32)
    runs.write_teacher_targets(tmp_path, labels, teacher, ["t"])
    split = Split(np.zeros((2, 4, 4, 3), np.uint8), labels)
    config = get_preset("fast-64-distilled").replace(train={"teacher_weight": 0.25})
    # 0.25 x teacher + 0.75 x one-hot, by hand:
    expected = [[0.15 + 0.75, 0.075, 0.025], [0.05, 0.05, 0.15 + 0.75]]
    np.testing.assert_allclose(student_targets(tmp_path, config, split, 3), expected,
                               atol=1e-6)
    other = Split(split.images, np.array([0, 1], np.int32))
    with pytest.raises(ValueError, match="other training images"):
        student_targets(tmp_path, config, other, 3)


# ---------------------------------------------------------------- configs


def test_teachers_take_the_students_changes_but_not_its_own_keys() -> None:
    config = get_preset("fast-64-distilled").replace(
        train={"steps": 12, "precision": "bfloat16", "teacher_views": 3})
    teachers = teacher_configs(config)
    assert [t.preset for t in teachers] == ["fast-64-long", "fast-64-wide"]
    for teacher in teachers:
        expected = get_preset(teacher.preset).replace(train={"steps": 12,
                                                             "precision": "bfloat16"})
        assert teacher == expected
    # Another teacher is another run: the identity holds the teachers' configs.
    identity = family_of(config).identity(config)
    assert identity == {"teachers": [t.to_dict() for t in teachers]}
    assert family_of(get_preset("fast-64-long")).identity(get_preset("fast-64-long")) == {}


@pytest.mark.parametrize(("changes", "message"), [
    ({"train": {"teacher_weight": 0.0}}, r"teacher_weight must be in \(0, 1\]"),
    ({"train": {"teacher_views": 0}}, "teacher_views must be >= 1"),
    ({"train": {"teacher": "fast-64-distilled"}}, "is the preset itself"),
])
def test_bad_distillation_settings_are_named(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_preset("fast-64-distilled").replace(**changes)


@pytest.mark.parametrize(("teacher", "message"), [
    ("dlib128", "must be a CNN or an ensemble of CNNs"),
    ("ensemble-64", "must be a CNN or an ensemble of CNNs"),
    ("ensemble-weighted", "must be a CNN|inner split"),
    ("nope", "nope"),
])
def test_teachers_that_cannot_teach_are_refused(teacher: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        teacher_configs(get_preset("fast-64-long").replace(train={"teacher": teacher}))


def test_only_a_cnn_learns_from_a_teacher() -> None:
    with pytest.raises(ValueError, match="teaches a CNN on pixels"):
        get_preset("dlib128").replace(train={"teacher": "fast-64-long"})


# ---------------------------------------------------------------- training


def test_cv_trains_the_teachers_of_the_fold_then_the_student(tiny_dataset: Path,
                                                             tmp_path: Path) -> None:
    config = _distilled()
    out = tmp_path / "cv"
    logged: list[str] = []
    run_cv(tiny_dataset, config, out, "0", log=logged.append)
    case = runs.case_dir(out, 0)
    data = runs.data_fingerprint(tiny_dataset)
    teachers = teacher_configs(config)
    for teacher in teachers:  # ordinary runs of the same fold, in the student's folder
        identity = identity_of(data, [0], teacher)
        assert runs.is_finished(runs.teacher_dir(case, teacher.preset), identity)
    assert runs.is_finished(case, identity_of(data, [0], config))
    # The targets belong to the training shards 1 and 2, in the order the student reads them.
    splits = decode_shards(tiny_dataset)
    train, _ = split_folds(splits, [0])
    stored = runs.read_teacher_targets(case)
    np.testing.assert_array_equal(stored["labels"], train.labels)
    np.testing.assert_allclose(stored["targets"].sum(axis=1), 1.0, atol=1e-5)
    assert stored["teachers"] == [str(runs.teacher_dir(case, t.preset)) for t in teachers]
    # ... and are the mean of what each teacher says (each on the same views).
    each = [teacher_targets([runs.teacher_dir(case, t.preset)], train, config)
            for t in teachers]
    np.testing.assert_allclose(stored["targets"], np.mean(each, axis=0), atol=1e-6)
    # Run again: everything is reused, nothing trains.
    logged.clear()
    run_cv(tiny_dataset, config, out, "0", log=logged.append)
    assert not any("step" in line for line in logged), logged


def test_an_experiment_hands_the_student_its_own_teacher_runs(tiny_dataset: Path,
                                                              tmp_path: Path) -> None:
    steps = {"steps": 6, "eval_every": 6}
    overrides = {"model": {"crop_size": 32, "input_size": 32},
                 "train": {**steps, "batch_size": 16, "precision": "float32"}}
    out = tmp_path / "exp"
    run_experiment(tiny_dataset, ["fast-64-wide", "fast-64-distilled"], out, "0", overrides,
                   baseline="fast-64-long", log=QUIET)
    case = runs.case_dir(runs.preset_dir(out, "fast-64-distilled"), 0)
    assert not (case / runs.TEACHER_DIR).exists()
    assert runs.read_teacher_targets(case)["teachers"] == [
        str(runs.case_dir(runs.preset_dir(out, p), 0)) for p in ("fast-64-long", "fast-64-wide")]


def test_one_still_view_of_a_teacher_is_its_centre_crop_prediction(tiny_dataset: Path,
                                                                   tmp_path: Path) -> None:
    # With no jitter and the crop as large as the image, a view is the image itself: the
    # targets must be the softmax of the teacher's own evaluation on those images.
    teacher = tiny_config(4, 4, "fast-64-long").replace(model={"crop_size": 40})
    run_cv(tiny_dataset, teacher, tmp_path / "t", "0", log=QUIET)
    run_dir = runs.case_dir(tmp_path / "t", 0)
    train, _ = split_folds(decode_shards(tiny_dataset), [0])
    student = dataclasses.replace(_distilled(teacher_views=1), augment=STILL)
    targets = teacher_targets([run_dir], train, student)
    model = keras.models.load_model(runs.latest_checkpoint(run_dir)[1], compile=False)
    logits = model.predict(evaluation_batches(train, 40, 64), verbose=0)
    np.testing.assert_allclose(targets, softmax(logits.astype(np.float64)), atol=1e-5)


def test_an_unfinished_teacher_cannot_teach(tiny_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="has not finished"):
        teacher_targets([tmp_path / "nothing"], Split(np.zeros((2, 40, 40, 3), np.uint8),
                                                      np.zeros(2, np.int32)), _distilled())


def test_a_failed_teacher_fails_its_student_and_nothing_else(
        tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from facefold.evaluate import executor
    from facefold.evaluate.cv import cv_trials

    class Failing(executor.Trainer):
        def run(self) -> list[dict]:
            if self.config.preset == "fast-64-wide":
                raise RuntimeError("the disk is full")
            return super().run()

    monkeypatch.setattr(executor, "Trainer", Failing)
    trials = cv_trials(_distilled(), tmp_path / "cv", [0], "distilled")
    with pytest.raises(executor.TrialsFailed) as failed:
        executor.run_trials(tiny_dataset, trials, log=QUIET)
    message = str(failed.value)
    assert "distilled/case-0/teacher/fast-64-wide: RuntimeError: the disk is full" in message
    assert "distilled/case-0: teacher distilled/case-0/teacher/fast-64-wide failed" in message
    # The other teacher finished; the student never started.
    case = runs.case_dir(tmp_path / "cv", 0)
    assert read_last_step(runs.teacher_dir(case, "fast-64-long")) == 6
    assert not runs.is_run(case) and not (case / runs.TEACHER_FILE).exists()


def read_last_step(run_dir: Path) -> int:
    return runs.read_metrics(run_dir)[-1]["step"]
