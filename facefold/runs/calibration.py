"""What calibrates a model for open-set use and describes it: the threshold, the centroids,
the training pictures' features, the open-set report, the model card and the enrollment test."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from facefold.atomic import atomic_path, write_json_atomic, write_text_atomic
from facefold.choices import SCORES
from facefold.runs.files import is_finite_number, read_json_object
from facefold.runs.fingerprint import file_sha256
from facefold.runs.names import (
    CALIBRATION_FEATURES_FILE,
    CENTROIDS_FILE,
    ENROLLED_CALIBRATION_FILE,
    ENROLLMENT_TEST_FILE,
    MODEL_CARD_JSON,
    MODEL_CARD_MD,
    OPENSET_FILE,
    PICTURES_FILE,
    THRESHOLD_FILE,
)

# How a model names a face (threshold.json's "naming"): by its classifier's softmax, or by the
# nearest centroid (written by facefold.fitting).
NAMINGS = ("classifier", "centroid")


def read_threshold(folder: str | Path) -> dict[str, Any] | None:
    """``threshold.json`` of a run (or export) checked field by field, or None when absent."""
    path = Path(folder) / THRESHOLD_FILE
    return check_threshold(read_json_object(path), path) if path.is_file() else None


def check_threshold(data: Any, where: Path) -> dict[str, Any]:
    """A threshold entry (``threshold.json`` or export.json's ``threshold``), checked:
    ``score`` one of :data:`facefold.choices.SCORES`, ``naming`` one of :data:`NAMINGS`
    when given, ``threshold`` a finite number, ``thresholds`` a {score: number}."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: the threshold must be a JSON object, got "
                         f"{type(data).__name__}")
    if data.get("score") not in SCORES:
        raise ValueError(f"{where}: field 'score' must be one of {', '.join(SCORES)}, got "
                         f"{data.get('score')!r}")
    if data.get("naming", NAMINGS[0]) not in NAMINGS:
        raise ValueError(f"{where}: field 'naming' must be one of {', '.join(NAMINGS)}, got "
                         f"{data.get('naming')!r}")
    if not is_finite_number(data.get("threshold")):
        raise ValueError(f"{where}: field 'threshold' must be a number, got "
                         f"{data.get('threshold')!r}")
    if data.get("verify_threshold") is not None and not is_finite_number(data["verify_threshold"]):
        raise ValueError(f"{where}: field 'verify_threshold' must be a number, got "
                         f"{data['verify_threshold']!r}")
    thresholds = data.get("thresholds", {})
    if not isinstance(thresholds, dict) or not all(
            k in SCORES and is_finite_number(v) for k, v in thresholds.items()):
        raise ValueError(f"{where}: field 'thresholds' must map score names "
                         f"({', '.join(SCORES)}) to numbers")
    return data


def write_threshold(folder: str | Path, data: dict[str, Any]) -> None:
    write_json_atomic(Path(folder) / THRESHOLD_FILE, data)


def read_centroids(folder: str | Path, classes: int) -> np.ndarray | None:
    """``centroids.npy`` (classes, D) of a run or export, or None when absent."""
    path = Path(folder) / CENTROIDS_FILE
    if not path.is_file():
        return None
    try:
        centroids = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a NumPy array file ({err})") from err
    if centroids.ndim != 2 or centroids.shape[0] != classes or not np.isfinite(centroids).all():
        raise ValueError(f"{path} holds {centroids.shape} centroids, expected {classes} finite "
                         "rows")
    return centroids.astype(np.float32)


def write_centroids(folder: str | Path, centroids: np.ndarray) -> None:
    with atomic_path(Path(folder) / CENTROIDS_FILE) as tmp, tmp.open("wb") as handle:
        np.save(handle, centroids)


def read_pictures(folder: str | Path, classes: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``pictures.npz`` of a run or export: the unit features (M, D) of the training pictures
    and their owners (M,) in ``0..classes-1``; None when absent."""
    path = Path(folder) / PICTURES_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            features, owners = data["features"], data["owners"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not facefold pictures' features ({err})") from None
    if (features.ndim != 2 or owners.shape != (len(features),)
            or not np.issubdtype(owners.dtype, np.integer) or not np.isfinite(features).all()
            or set(np.unique(owners).tolist()) != set(range(classes))):
        raise ValueError(f"{path} holds {features.shape} features of owners "
                         f"{owners.shape}, expected finite rows of all {classes} people")
    return features.astype(np.float32), owners.astype(np.int32)


def write_pictures(folder: str | Path, features: np.ndarray, owners: np.ndarray) -> None:
    with atomic_path(Path(folder) / PICTURES_FILE) as tmp, tmp.open("wb") as handle:
        np.savez_compressed(handle, features=np.asarray(features, np.float32),
                            owners=np.asarray(owners, np.int32))


def write_openset_report(folder: str | Path, report: dict[str, Any]) -> None:
    write_json_atomic(Path(folder) / OPENSET_FILE, report)


def read_model_card(model_dir: str | Path) -> dict[str, Any] | None:
    path = Path(model_dir) / MODEL_CARD_JSON
    return read_json_object(path) if path.is_file() else None


def write_model_card(model_dir: str | Path, card: dict[str, Any], markdown: str) -> None:
    write_json_atomic(Path(model_dir) / MODEL_CARD_JSON, card)
    write_text_atomic(Path(model_dir) / MODEL_CARD_MD, markdown)


def write_enrollment_test(model_dir: str | Path, result: dict[str, Any]) -> None:
    write_json_atomic(Path(model_dir) / ENROLLMENT_TEST_FILE, result)


# The arrays of CALIBRATION_FEATURES_FILE (facefold.models.enrollment.CalibrationFeatures).
CALIBRATION_FEATURE_ARRAYS = (
    "names", "unknown_group", "unknown_identity", "unknown_features", "known_group",
    "known_labels", "known_features", "centroid_group", "centroids")


# With a model whose features do not depend on its training, also its own gallery: every
# training picture's unit features, its person and its shard (a ``--strangers`` picture:
# its label after the people's, shard -1).
GALLERY_FEATURE_ARRAYS = ("gallery_features", "gallery_labels", "gallery_shards")


def write_calibration_features(folder: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """``calibration_features.npz``: the calibration models' features of the strangers and
    of the known people's held-out pictures, with their centroids, by group; and the
    gallery's (:data:`GALLERY_FEATURE_ARRAYS`) when ``arrays`` hold them."""
    missing = set(CALIBRATION_FEATURE_ARRAYS) - set(arrays)
    if missing:
        raise ValueError(f"calibration features lack {', '.join(sorted(missing))}")
    names = [*CALIBRATION_FEATURE_ARRAYS, *(k for k in GALLERY_FEATURE_ARRAYS if k in arrays)]
    with atomic_path(Path(folder) / CALIBRATION_FEATURES_FILE) as tmp, tmp.open("wb") as handle:
        np.savez_compressed(handle, **{k: arrays[k] for k in names})


def read_calibration_features(folder: str | Path) -> dict[str, np.ndarray] | None:
    """The arrays of ``calibration_features.npz`` (None when absent: a model fit before it
    was written, or an export); ``ValueError`` naming the file when it is damaged."""
    path = Path(folder) / CALIBRATION_FEATURES_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in CALIBRATION_FEATURE_ARRAYS}
            if GALLERY_FEATURE_ARRAYS[0] in data:
                arrays.update({k: data[k] for k in GALLERY_FEATURE_ARRAYS})
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not facefold calibration features ({err})") from None
    return arrays


def enrolled_calibration_key(folder: str | Path, **settings: Any) -> dict[str, Any]:
    """What a recalibration for enrolled people is computed from: the ``settings`` (the
    gallery's picture counts, the false-accept target and bound, the replay's version) and
    the SHA-256 of the model's ``calibration_features.npz``."""
    features = file_sha256(Path(folder) / CALIBRATION_FEATURES_FILE)
    return {**settings, "calibration_features": features}


def read_enrolled_calibration(folder: str | Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The recalibration ``enrolled_calibration.json`` holds when it was computed for
    ``key`` (:func:`enrolled_calibration_key`); None when absent, computed for another key
    (people enrolled since, another facefold's replay) or unreadable: computed again."""
    try:
        data = read_json_object(Path(folder) / ENROLLED_CALIBRATION_FILE)
    except (OSError, ValueError):
        return None
    report = data.get("report")
    return report if data.get("key") == key and isinstance(report, dict) else None


def write_enrolled_calibration(folder: str | Path, key: dict[str, Any],
                               report: dict[str, Any]) -> None:
    """Keep a recalibration for the deploy commands that load the model next (the replay
    takes about a second; reading it, milliseconds), atomically."""
    write_json_atomic(Path(folder) / ENROLLED_CALIBRATION_FILE, {"key": key, "report": report})
