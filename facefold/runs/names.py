"""The names and layout of facefold's folders: the only module with their file-name literals.

**Run folder** (one trained model; ``facefold train --out RUN``, a ``case-K`` of a
cross-validation)::

    RUN/run.json          the run's identity (:mod:`facefold.runs.identity`) plus notes:
                          where the data lay, the image size, landmark fallbacks …
    RUN/config.json       the resolved config (also inside run.json's identity)
    RUN/labels.txt        label names, line = class index (the dataset format's file)
    RUN/versions.json     library versions and machine
    RUN/checkpoints/step-NNNNNN.keras   model + optimizer at every evaluation
    RUN/metrics.jsonl     one JSON line per evaluation (step 0 included)
    RUN/sparsity.jsonl    ReLU zero fractions during training
    RUN/predictions.npz   held-out labels and probabilities at the last step
    RUN/tensorboard/      loss and accuracy curves
    RUN/threshold.json    optional: the open-set threshold ("unknown" below it)
    RUN/centroids.npy     optional: per-person mean features for the cosine score
    RUN/pictures.npz      optional: the unit features of every training picture and whose it
                          is, for the nearest score
    RUN/openset.json      optional: the open-set report of that run
    RUN/model_card.json   a model fit on every shard (``facefold fit``): data, people, the
    RUN/MODEL_CARD.md     calibrated threshold and the rates it gives, versions
    RUN/calibration/group-G/  the leave-people-out runs that calibrated it
    RUN/calibration_features.npz  their features of the strangers and of the known people's
                          held-out pictures, and their centroids: what recalibrates the
                          threshold after ``enroll`` (:mod:`facefold.models.enrollment`)
    RUN/gallery.sqlite    people enrolled without retraining (``facefold enroll``;
                          :mod:`facefold.predict.gallery`; ``gallery.npz`` before)
    RUN/ensemble.json     an ensemble only: its members' run folders (and, weighted, the
                          members' weights and how they were chosen)
    RUN/members/<preset>/ an ensemble only: members trained for it (ordinary runs)
    RUN/inner/<preset>/   a weighted ensemble only: its members' inner-split runs, which chose
                          the weights (ordinary runs that exclude the held-out shards)
    RUN/teacher.npz       a distilled run only (``train.teacher``): the soft target of every
                          training image, from its teacher's runs, written before training
    RUN/teacher/<preset>/ a distilled run only: teacher runs trained for it (ordinary runs)

**CV folder**: ``OUT/cv.json`` (data, cases, config) and one run folder ``OUT/case-K``
per held-out shard K. **Experiment folder**: ``OUT/experiment.json``, one CV
folder ``OUT/<preset>`` per preset, ``OUT/comparison.csv`` and ``.png``.
**Export folder**: ``export.json`` and the model file of its format (see
:mod:`facefold.export`), ``centroids.npy``, ``members/<preset>/`` for an ensemble.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from facefold.choices import EXPORT_FORMATS
from facefold.data.records import (
    LABELS_FILE,  # noqa: F401  (a run's label list is the dataset format's labels.txt)
)

RUN_FILE = "run.json"
CONFIG_FILE = "config.json"
VERSIONS_FILE = "versions.json"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PREFIX, CHECKPOINT_SUFFIX = "step-", ".keras"
# Inside a whole .keras checkpoint (Keras's names): a truncated file loses its zip directory.
CHECKPOINT_MEMBERS = frozenset({"config.json", "model.weights.h5"})
METRICS_FILE = "metrics.jsonl"
SPARSITY_FILE = "sparsity.jsonl"
PREDICTIONS_FILE = "predictions.npz"
TENSORBOARD_DIR = "tensorboard"
THRESHOLD_FILE = "threshold.json"
GALLERY_FILE = "gallery.sqlite"
LEGACY_GALLERY_FILE = "gallery.npz"  # an older facefold's; moved into GALLERY_FILE
CENTROIDS_FILE = "centroids.npy"
PICTURES_FILE = "pictures.npz"
OPENSET_FILE = "openset.json"
ENSEMBLE_FILE = "ensemble.json"
MEMBERS_DIR = "members"
INNER_DIR = "inner"
TEACHER_FILE = "teacher.npz"
TEACHER_DIR = "teacher"
CV_FILE = "cv.json"
CASE_PREFIX = "case-"
EXPERIMENT_FILE = "experiment.json"
COMPARISON_CSV, COMPARISON_PNG = "comparison.csv", "comparison.png"
EXPORT_FILE = "export.json"
MODEL_CARD_JSON, MODEL_CARD_MD = "model_card.json", "MODEL_CARD.md"
ENROLLMENT_TEST_FILE = "enrollment_test.json"
CALIBRATION_FEATURES_FILE = "calibration_features.npz"
# The recalibration for the people enrolled now, with what it was computed from.
ENROLLED_CALIBRATION_FILE = "enrolled_calibration.json"
CALIBRATION_DIR = "calibration"
# A run's own one-file TFLite export, run by the LiteRT interpreter (facefold.predict.lite).
LITE_DIR = "lite"
# Bump when export.json or the model files change meaning; loading checks it.
EXPORT_FORMAT = 1
# The model file of each export format, in the order of facefold.choices.EXPORT_FORMATS.
MODEL_FILES = dict(zip(EXPORT_FORMATS, ("model.keras", "savedmodel", "model.tflite"), strict=True))


def case_dir(out: str | Path, k: int) -> Path:
    """``OUT/case-K``: the run folder of cross-validation case ``k``."""
    return Path(out) / f"{CASE_PREFIX}{k}"


def case_index(path: Path) -> int | None:
    """``K`` of a folder named ``case-K``, else None."""
    index = path.name.removeprefix(CASE_PREFIX)
    return int(index) if path.name.startswith(CASE_PREFIX) and index.isdigit() else None


def is_run(path: str | Path) -> bool:
    return (Path(path) / RUN_FILE).is_file()


def is_cv(path: str | Path) -> bool:
    return (Path(path) / CV_FILE).is_file()


def is_experiment(path: str | Path) -> bool:
    return (Path(path) / EXPERIMENT_FILE).is_file()


def is_export(path: str | Path) -> bool:
    return (Path(path) / EXPORT_FILE).is_file()


def calibration_dir(model_dir: str | Path, group: int) -> Path:
    """``MODEL/calibration/group-G``: a leave-people-out run that calibrated a fit model."""
    return Path(model_dir) / CALIBRATION_DIR / f"group-{group}"


def lite_dir(run_dir: str | Path) -> Path:
    """``RUN/lite``: the TFLite export a run keeps of its newest checkpoint, which ``verify``,
    ``identify``, ``predict`` and ``serve`` run without TensorFlow."""
    return Path(run_dir) / LITE_DIR


def preset_dir(out: str | Path, preset: str) -> Path:
    """``OUT/<preset>``: the CV folder of one preset of an experiment."""
    return Path(out) / safe_name(preset)


def comparison_paths(out: str | Path) -> tuple[Path, Path]:
    """``(comparison.csv, comparison.png)`` of an experiment folder."""
    return Path(out) / COMPARISON_CSV, Path(out) / COMPARISON_PNG


def member_dir(run_dir: str | Path, preset: str) -> Path:
    """Where an ensemble trains a member that nobody handed it: ``RUN/members/<preset>``."""
    return Path(run_dir) / MEMBERS_DIR / safe_name(preset)


def teacher_dir(run_dir: str | Path, preset: str) -> Path:
    """Where a distilled run trains a teacher run nobody handed it: ``RUN/teacher/<preset>``."""
    return Path(run_dir) / TEACHER_DIR / safe_name(preset)


def inner_dir(run_dir: str | Path, preset: str) -> Path:
    """Where a weighted ensemble trains a member's inner-split run: ``RUN/inner/<preset>``."""
    return Path(run_dir) / INNER_DIR / safe_name(preset)


def safe_name(name: str) -> str:
    """``name`` as one path component, or ``ValueError`` (a preset name is never a path)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"{name!r} cannot name a folder")
    return name


def contained(folder: Path, relative: Any, field: str, where: Path) -> Path:
    """``folder / relative`` for a relative path that stays inside ``folder``; else a
    ``ValueError`` naming the file and field (model folders are data, never a way out)."""
    if not isinstance(relative, str) or not relative:
        raise ValueError(f"{where}: field '{field}' must be a relative path, got {relative!r}")
    path = Path(relative)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{where}: field '{field}' is {relative!r}, which leads outside "
                         f"{folder}: only paths inside the model folder are allowed")
    return folder / path


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"{CHECKPOINT_PREFIX}{step:06d}{CHECKPOINT_SUFFIX}"


def partial_checkpoint_path(final: Path) -> Path:
    """Where a checkpoint is written before it is renamed (Keras wants the .keras suffix)."""
    return final.with_name(f".partial-{final.name}")
