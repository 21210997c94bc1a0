"""The run layer: the only module that knows the names and layout of facefold's folders.

**Run folder** (one trained model; ``facefold train --out RUN``, a ``case-K`` of a
cross-validation)::

    RUN/run.json          the run's identity (see :func:`run_identity`) plus notes:
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
    RUN/openset.json      optional: the open-set report of that run
    RUN/model_card.json   a model fit on every shard (``facefold fit``): data, people, the
    RUN/MODEL_CARD.md     calibrated threshold and the rates it gives, versions
    RUN/calibration/group-G/  the leave-people-out runs that calibrated it
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

**Identity by content.** A run belongs to the data it was trained on, not to
the folder that data lay in: its identity holds the dataset's *fingerprint*
(the SHA-256 of every shard file and the label list, :func:`data_fingerprint`),
the held-out shards, the resolved config and what the model family adds (an
embedding's model version). A run is reused or resumed only when its identity is
identical (:func:`identity_differences`); otherwise :class:`RunMismatchError`
says what differs and the way out. A dataset moved elsewhere keeps its
fingerprint, so its runs are still reused; one rebuilt in place does not.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from facefold.atomic import atomic_path, write_json_atomic, write_rows_atomic, write_text_atomic
from facefold.choices import EXPORT_FORMATS
from facefold.config import Config, TrainSpec
from facefold.data.records import (
    LABELS_FILE,  # noqa: F401  (a run's label list is the dataset format's labels.txt)
    dataset_image_size,
    list_shards,
    read_labels,
    read_step_rows,
    write_labels,
)

# ---------------------------------------------------------------- names

RUN_FILE = "run.json"
CONFIG_FILE = "config.json"
VERSIONS_FILE = "versions.json"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PREFIX, CHECKPOINT_SUFFIX = "step-", ".keras"
METRICS_FILE = "metrics.jsonl"
SPARSITY_FILE = "sparsity.jsonl"
PREDICTIONS_FILE = "predictions.npz"
TENSORBOARD_DIR = "tensorboard"
THRESHOLD_FILE = "threshold.json"
GALLERY_FILE = "gallery.sqlite"
LEGACY_GALLERY_FILE = "gallery.npz"  # an older facefold's; moved into GALLERY_FILE
CENTROIDS_FILE = "centroids.npy"
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
CALIBRATION_DIR = "calibration"
# Bump when export.json or the model files change meaning; loading checks it.
EXPORT_FORMAT = 1
# The model file of each export format, in the order of facefold.choices.EXPORT_FORMATS.
MODEL_FILES = dict(zip(EXPORT_FORMATS, ("model.keras", "savedmodel", "model.tflite"), strict=True))
# Keys of run.json that are notes about a run, not part of its identity.
NOTE_KEYS = frozenset({"data_dir", "image_size", "landmark_fallbacks", "precision"})
# run.json of runs written before fingerprints: what a legacy run lacks.
LEGACY_DATA = "data (the run was written by a facefold without data fingerprints)"


class RunMismatchError(ValueError):
    """A folder holds a run (or cross-validation) of other data or another config."""


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


# ---------------------------------------------------------------- data fingerprints


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file; cached per (path, size, mtime) so a process hashes a shard once."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_fingerprint(data_dir: str | Path) -> dict[str, Any]:
    """What a dataset *is*: ``{"digest", "shards": [sha256 per shard], "labels": [...]}``.

    ``digest`` is the SHA-256 of the label list and the shard hashes in order, so two
    folders with the same files have the same fingerprint wherever they lie.
    """
    shards = []
    for path in list_shards(data_dir):
        stat = path.stat()
        shards.append(_file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns))
    labels = read_labels(data_dir)
    digest = hashlib.sha256(json.dumps({"labels": labels, "shards": shards}).encode())
    return {"digest": digest.hexdigest(), "shards": shards, "labels": labels}


def describe_data_difference(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """A sentence on how two fingerprints differ (people, shards), for error messages."""
    if not old:
        return LEGACY_DATA
    parts = []
    if old.get("labels") != new["labels"]:
        before, after = old.get("labels") or [], new["labels"]
        parts.append(f"{len(before)} people ({', '.join(before[:3])}…) against {len(after)} "
                     f"({', '.join(after[:3])}…)" if before != after[: len(before)] or
                     len(before) != len(after) else "the label order")
    shards_old, shards_new = old.get("shards") or [], new["shards"]
    if len(shards_old) != len(shards_new):
        parts.append(f"{len(shards_old)} shards against {len(shards_new)}")
    else:
        changed = [k for k, (a, b) in enumerate(zip(shards_old, shards_new, strict=True))
                   if a != b]
        if changed:
            parts.append(f"the content of shard(s) {', '.join(map(str, changed))}")
    return "the dataset differs: " + ("; ".join(parts) or "its fingerprint")


# ---------------------------------------------------------------- identity


def run_identity(
    data: dict[str, Any], eval_shards: Sequence[int], config: Config,
    people: Sequence[str] | None = None, family_identity: dict[str, Any] | None = None,
    excluded_shards: Sequence[int] = (),
) -> dict[str, Any]:
    """What makes two runs the same run, in its JSON form (so it compares with ``run.json``).

    ``data`` is the dataset's :func:`data_fingerprint`; ``people`` the label list of a run
    trained on a subset of the dataset's people (open-set runs), part of the identity only
    when given; ``family_identity`` what the model family adds (an embedding head: the
    embedding's name and model version, since a head is meaningless on other embeddings);
    ``excluded_shards`` the shards a run neither trains nor evaluates on (an inner-split run
    of a weighted ensemble leaves out the ensemble's held-out shards), part of the identity
    only when there are some, so every other run's identity is as it always was.
    """
    identity: dict[str, Any] = {
        "data": data,
        "eval_shards": list(eval_shards),
        "config": config.to_dict(),
    }
    if excluded_shards:
        identity["excluded_shards"] = sorted(excluded_shards)
    if people is not None:
        identity["people"] = list(people)
    identity.update(family_identity or {})
    return json.loads(json.dumps(identity))


# [train] keys that change how often a run is evaluated and checkpointed, or how many
# pictures are evaluated at once, never its weights (a training batch is a pure function of
# the seed and the step): a rerun may change them without --restart.
CADENCE_KEYS = ("eval_every", "eval_batch_size")


def _same_config(a: dict | None, b: dict | None) -> bool:
    """Configs compare after resolution (a run written before a config key existed still
    matches when it used that key's default), but for :data:`CADENCE_KEYS`."""
    try:
        return _but_cadence(Config.from_dict(a or {})) == _but_cadence(Config.from_dict(b or {}))
    except ValueError:
        return False


def _but_cadence(config: Config) -> Config:
    defaults = TrainSpec()
    return replace(config, train=replace(
        config.train, **{key: getattr(defaults, key) for key in CADENCE_KEYS}))


def _config_changes(old: Any, new: dict[str, Any]) -> str:
    """Which config keys differ, ``train.steps 2 against 4``, for error messages."""
    try:
        before = Config.from_dict(old).to_dict()
    except (ValueError, TypeError, AttributeError):
        return "unreadable by this facefold"
    after = Config.from_dict(new).to_dict()
    changes = [f"preset {before['preset']!r} against {after['preset']!r}"] if (
        before["preset"] != after["preset"]) else []
    for section in ("model", "augment", "train"):
        for key, value in after[section].items():
            if before[section].get(key) != value:
                changes.append(f"{section}.{key} {before[section].get(key)} against {value}")
    return ", ".join(changes[:4]) + (f" and {len(changes) - 4} more" if len(changes) > 4 else "")


def identity_differences(existing: dict[str, Any], identity: dict[str, Any],
                         ignore: Sequence[str] = ()) -> list[str]:
    """What differs between a stored identity (``run.json``) and a wanted one, in words;
    empty when they are the same run. Notes (:data:`NOTE_KEYS`) and the keys in ``ignore``
    are not compared; every other key is, whichever side has it."""
    differ = []
    data = existing.get("data") if isinstance(existing.get("data"), dict) else None
    if (data or {}).get("digest") != identity["data"]["digest"]:
        differ.append(describe_data_difference(data, identity["data"]))
    if not _same_config(existing.get("config"), identity["config"]):
        differ.append(f"the config ({_config_changes(existing.get('config'), identity['config'])})")
    skip = {"data", "config", *NOTE_KEYS, *ignore}
    for key in sorted((set(existing) | set(identity)) - skip):
        if existing.get(key) != identity.get(key):
            differ.append(f"{key.replace('_', ' ')} ({existing.get(key)} against "
                          f"{identity.get(key)})")
    return differ


def _mismatch(folder: Path, what: str, differences: list[str]) -> RunMismatchError:
    return RunMismatchError(
        f"{folder} holds a {what} of other data or settings ({'; '.join(differences)}); "
        "nothing was reused. Choose a new --out, or pass --restart to discard it and train again"
    )


def check_run_dir(run_dir: str | Path, identity: dict[str, Any], restart: bool = False) -> bool:
    """Check, without writing, that ``run_dir`` is new, empty or a run of ``identity``.

    Returns True when it holds that run. Raises :class:`RunMismatchError` naming what
    differs (unless ``restart``: then a different run will be discarded by
    :func:`prepare_run_dir`), ``FileExistsError`` for a non-empty folder that is no run.
    """
    run_dir = Path(run_dir)
    if is_run(run_dir):
        differences = identity_differences(read_run_info(run_dir), identity)
        if differences and not restart:
            raise _mismatch(run_dir, "run", differences)
        return not differences
    # An ensemble's folder may hold the members (and inner-split runs) trained for it before
    # its own run.json, a distilled run's its teacher's runs and targets.
    if run_dir.exists() and (not run_dir.is_dir() or any(
            p.name not in (MEMBERS_DIR, INNER_DIR, TEACHER_DIR, TEACHER_FILE)
            for p in run_dir.iterdir())):
        raise FileExistsError(f"{run_dir} exists and is not a facefold run folder: "
                              "choose a new output folder")
    return False


def prepare_run_dir(
    run_dir: str | Path, identity: dict[str, Any], labels: Sequence[str],
    notes: dict[str, Any] | None = None, versions: dict[str, str] | None = None,
    restart: bool = False,
) -> None:
    """Create the run folder, or check that an existing one is the same run.

    ``notes`` are facts about the run that are not part of its identity (where the data
    lay, the image size …), written into a new ``run.json``. With ``restart`` a folder
    holding a different run is deleted first.
    """
    run_dir = Path(run_dir)
    if check_run_dir(run_dir, identity, restart):
        return
    if is_run(run_dir):  # a different run, and restart was asked for
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / CONFIG_FILE, identity["config"])
    write_labels(run_dir, list(labels))
    write_json_atomic(run_dir / VERSIONS_FILE, versions or {})
    write_json_atomic(run_dir / RUN_FILE, {**identity, **(notes or {})})


def run_notes(data_dir: str | Path, crop_size: int) -> dict[str, Any]:
    """The notes every new run records: where its data lay and the side of its images, so
    that inference never has to read the dataset back."""
    return {"data_dir": str(Path(data_dir).resolve()),
            "image_size": dataset_image_size(data_dir, crop_size)}


def is_finished(run_dir: str | Path, identity: dict[str, Any], ignore: Sequence[str] = ()
                ) -> bool:
    """The one rule for "this run is done": ``run_dir`` holds a run of exactly ``identity``
    (but for the keys in ``ignore``) whose metrics reach the config's last step and whose
    predictions are of that step."""
    run_dir = Path(run_dir)
    if not is_run(run_dir) or not (run_dir / PREDICTIONS_FILE).is_file():
        return False
    try:
        if identity_differences(read_run_info(run_dir), identity, ignore):
            return False
    except ValueError:  # an unreadable run.json is no finished run
        return False
    rows = read_metrics(run_dir)
    steps = identity["config"]["train"]["steps"]
    if not rows or rows[-1]["step"] != steps:
        return False
    try:
        return int(read_predictions(run_dir)["step"]) == steps
    except (OSError, ValueError, KeyError):
        return False


# ---------------------------------------------------------------- readers


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON file that must hold an object; errors name the file."""
    data = _read_json(Path(path))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    """``RUN/run.json``: the identity and notes."""
    return read_json_object(Path(run_dir) / RUN_FILE)


def recorded_precision(run_dir: str | Path, identity: dict[str, Any]) -> str | None:
    """The precision a started run of ``identity`` trains in (its ``precision`` note); None
    for a new folder, another run's folder or an older run that did not record it. A resumed
    run keeps the precision it began with."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return None
    info = read_json_object(path)
    if identity_differences(info, identity):
        return None
    precision = info.get("precision")
    return precision if precision in ("float32", "bfloat16") else None


def read_run_config(run_dir: str | Path) -> Config:
    """The run's resolved config; one this facefold cannot read names both versions."""
    import facefold

    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    try:
        return Config.from_dict(info["config"])
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        made_by = "an unknown version"
        if (run_dir / VERSIONS_FILE).is_file():
            made_by = read_json_object(run_dir / VERSIONS_FILE).get("facefold", made_by)
        raise ValueError(
            f"{run_dir / RUN_FILE}: its config cannot be read by facefold "
            f"{facefold.__version__} (the run was made by facefold {made_by}): {err}"
        ) from err


def read_run_labels(run_dir: str | Path) -> list[str]:
    """The run's label list (``labels.txt``), index = class."""
    return read_labels(run_dir)


def run_image_size(run_dir: str | Path, crop_size: int) -> int:
    """The side of the square images the run was trained on.

    Recorded in ``run.json`` by every run since fingerprints. For an older run it is read
    from the dataset the run names, with a warning, since that dataset may have changed or
    moved; when it is gone, ``crop_size + 16`` (the 112/96 convention), with a warning too.
    """
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    size = info.get("image_size")
    if isinstance(size, int) and not isinstance(size, bool) and size >= crop_size:
        return size
    if size is not None:
        raise ValueError(f"{run_dir / RUN_FILE}: image_size must be an integer >= the crop "
                         f"size {crop_size}, got {size!r}")
    data_dir = Path(str(info.get("data_dir", "")))
    guess = dataset_image_size(data_dir, crop_size)
    where = f"its dataset {data_dir}" if data_dir.is_dir() else "the 112/96 convention"
    warnings.warn(f"{run_dir / RUN_FILE} records no image size (an older run): using "
                  f"{guess} px from {where}", stacklevel=2)
    return guess


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The evaluations logged in ``RUN/metrics.jsonl``, in step order (empty if none)."""
    return read_step_rows(Path(run_dir) / METRICS_FILE)


def read_sparsity(run_dir: str | Path) -> list[dict]:
    """The ReLU zero fractions logged in ``RUN/sparsity.jsonl`` (written during training by
    :class:`facefold.train.sparsity.SparsityTracker`), in step order (empty if none)."""
    return read_step_rows(Path(run_dir) / SPARSITY_FILE)


def write_metrics(run_dir: str | Path, rows: Sequence[dict]) -> None:
    write_rows_atomic(Path(run_dir) / METRICS_FILE, rows)


def read_predictions(run_dir: str | Path) -> dict[str, np.ndarray]:
    """``step``, ``labels`` (N,) and ``probabilities`` (N, C) from ``RUN/predictions.npz``."""
    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the run has not finished")
    with np.load(path) as data:
        return {key: data[key] for key in ("step", "labels", "probabilities")}


def write_predictions(run_dir: str | Path, step: int, labels: np.ndarray,
                      probabilities: np.ndarray) -> None:
    """Write ``RUN/predictions.npz`` atomically."""
    with atomic_path(Path(run_dir) / PREDICTIONS_FILE) as tmp, tmp.open("wb") as handle:
        np.savez(handle, step=step, labels=labels, probabilities=probabilities)


def read_teacher_targets(run_dir: str | Path) -> dict[str, Any]:
    """``labels`` (N,), ``targets`` (N, C) and ``teachers`` (the teacher run folders) from
    ``RUN/teacher.npz``; ``FileNotFoundError`` when it is missing."""
    path = Path(run_dir) / TEACHER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: a distilled run's teacher targets are "
                                "written before it trains (by `facefold cv` or `experiment`)")
    try:
        with np.load(path) as data:
            return {"labels": data["labels"], "targets": data["targets"],
                    "teachers": [str(t) for t in data["teachers"]]}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is unreadable ({err}): delete it to compute it again"
                         ) from err


def write_teacher_targets(run_dir: str | Path, labels: np.ndarray, targets: np.ndarray,
                          teachers: Sequence[str | Path]) -> None:
    """Write ``RUN/teacher.npz`` atomically."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with atomic_path(Path(run_dir) / TEACHER_FILE) as tmp, tmp.open("wb") as handle:
        np.savez(handle, labels=labels, targets=targets,
                 teachers=np.array([str(t) for t in teachers]))


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"{CHECKPOINT_PREFIX}{step:06d}{CHECKPOINT_SUFFIX}"


def partial_checkpoint_path(final: Path) -> Path:
    """Where a checkpoint is written before it is renamed (Keras wants the .keras suffix)."""
    return final.with_name(f".partial-{final.name}")


def _checkpoint_step(path: Path) -> int | None:
    """The step of a file named like one of our checkpoints, else None (not ours)."""
    name = path.name
    if not (name.startswith(CHECKPOINT_PREFIX) and name.endswith(CHECKPOINT_SUFFIX)):
        return None
    digits = name[len(CHECKPOINT_PREFIX): -len(CHECKPOINT_SUFFIX)]
    return int(digits) if digits.isdigit() else None


def _readable_checkpoint(path: Path) -> bool:
    """Cheap check that a ``.keras`` file is whole: a zip whose directory lists the model's
    config and weights (a truncated file loses the directory at its end)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return {"config.json", "model.weights.h5"} <= names


def checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every file of ours in ``RUN/checkpoints``, by step; other files
    (a stray ``step-final.keras``, editor backups, partial saves) are ignored."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(step, p) for p in folder.iterdir() if (step := _checkpoint_step(p)) is not None]
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> tuple[int, Path] | None:
    """``(step, path)`` of the newest whole checkpoint of a run folder, or None.

    An unreadable newest checkpoint (truncated, say by a full disk) is skipped with a
    warning, so that a run resumes from the one before it.
    """
    for step, path in reversed(checkpoints(run_dir)):
        if _readable_checkpoint(path):
            return step, path
        warnings.warn(f"{path} is not a whole checkpoint (truncated or corrupt): skipped",
                      stacklevel=2)
    return None


def read_threshold(folder: str | Path) -> dict[str, Any] | None:
    """``threshold.json`` of a run (or export) checked field by field, or None when absent."""
    path = Path(folder) / THRESHOLD_FILE
    return check_threshold(read_json_object(path), path) if path.is_file() else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def check_threshold(data: Any, where: Path) -> dict[str, Any]:
    """A threshold entry (``threshold.json`` or export.json's ``threshold``), checked:
    ``score`` a string, ``threshold`` a finite number, ``thresholds`` a {score: number}."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: the threshold must be a JSON object, got "
                         f"{type(data).__name__}")
    if not isinstance(data.get("score"), str):
        raise ValueError(f"{where}: field 'score' must be a score name, got "
                         f"{data.get('score')!r}")
    if not _is_number(data.get("threshold")):
        raise ValueError(f"{where}: field 'threshold' must be a number, got "
                         f"{data.get('threshold')!r}")
    if data.get("verify_threshold") is not None and not _is_number(data["verify_threshold"]):
        raise ValueError(f"{where}: field 'verify_threshold' must be a number, got "
                         f"{data['verify_threshold']!r}")
    thresholds = data.get("thresholds", {})
    if not isinstance(thresholds, dict) or not all(
            isinstance(k, str) and _is_number(v) for k, v in thresholds.items()):
        raise ValueError(f"{where}: field 'thresholds' must map score names to numbers")
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


def write_openset_report(folder: str | Path, report: dict[str, Any]) -> None:
    write_json_atomic(Path(folder) / OPENSET_FILE, report)


def calibration_dir(model_dir: str | Path, group: int) -> Path:
    """``MODEL/calibration/group-G``: a leave-people-out run that calibrated a fit model."""
    return Path(model_dir) / CALIBRATION_DIR / f"group-{group}"


def write_model_card(model_dir: str | Path, card: dict[str, Any], markdown: str) -> None:
    write_json_atomic(Path(model_dir) / MODEL_CARD_JSON, card)
    write_text_atomic(Path(model_dir) / MODEL_CARD_MD, markdown)


def read_model_card(model_dir: str | Path) -> dict[str, Any] | None:
    path = Path(model_dir) / MODEL_CARD_JSON
    return read_json_object(path) if path.is_file() else None


def write_enrollment_test(model_dir: str | Path, result: dict[str, Any]) -> None:
    write_json_atomic(Path(model_dir) / ENROLLMENT_TEST_FILE, result)


# ---------------------------------------------------------------- ensembles


def _ensemble_entries(path: Path, entries: Any, field: str) -> list[dict[str, Any]]:
    if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("preset"), str)
            and isinstance(e.get("run"), str) for e in entries):
        raise ValueError(f"{path}: field '{field}' must be a list of {{preset, run}} entries")
    return entries


def ensemble_member_dirs(run_dir: str | Path) -> dict[str, Path] | None:
    """``{preset: member run folder}`` of an ensemble run, or None for any other run."""
    run_dir = Path(run_dir)
    path = run_dir / ENSEMBLE_FILE
    if not path.is_file():
        return None
    entries = _ensemble_entries(path, read_json_object(path).get("members"), "members")
    return {e["preset"]: run_dir / e["run"] for e in entries}


def ensemble_weights(run_dir: str | Path) -> dict[str, float] | None:
    """``{preset: weight}`` of a weighted ensemble run (checked: :func:`check_member_weights`),
    None for an equally weighted one (its members' probabilities are plainly averaged)."""
    path = Path(run_dir) / ENSEMBLE_FILE
    entries = _ensemble_entries(path, read_json_object(path).get("members"), "members")
    return check_member_weights(entries, path)


def ensemble_inner_dirs(run_dir: str | Path) -> dict[str, Path]:
    """``{preset: inner-split run folder}`` of a weighted ensemble run (empty for any other):
    the runs whose probabilities chose the weights."""
    run_dir = Path(run_dir)
    path = run_dir / ENSEMBLE_FILE
    if not path.is_file():
        return {}
    inner = read_json_object(path).get("inner")
    if inner is None:
        return {}
    if not isinstance(inner, dict):
        raise ValueError(f"{path}: field 'inner' must be an object, got {inner!r}")
    entries = _ensemble_entries(path, inner.get("members"), "inner.members")
    return {e["preset"]: run_dir / e["run"] for e in entries}


def check_member_weights(entries: list[dict[str, Any]], where: Path) -> dict[str, float] | None:
    """The ``weight`` of each member entry (of ``ensemble.json`` or an export's
    ``export.json``) as ``{preset: weight}``, checked to be finite, >= 0 and to sum to 1;
    None when no entry has one (an equally weighted ensemble, as every ensemble before
    weights). Raises ``ValueError`` naming ``where`` when only some entries have one."""
    weights = {str(e.get("preset")): e.get("weight") for e in entries}
    if all(w is None for w in weights.values()):
        return None
    if not all(_is_number(w) and w >= 0 for w in weights.values()) or not np.isclose(
            sum(weights.values()), 1.0, atol=1e-6):
        raise ValueError(f"{where}: every member's 'weight' must be a number >= 0 and they "
                         f"must sum to 1, got {weights}")
    return {p: float(w) for p, w in weights.items()}


def write_ensemble(run_dir: str | Path, members: dict[str, Path], reused: dict[str, bool],
                   weights: dict[str, float] | None = None,
                   inner: dict[str, Any] | None = None) -> None:
    """Write ``RUN/ensemble.json``: each member's run folder, relative to ``RUN``, and for a
    weighted ensemble each member's ``weight`` and how they were chosen: ``inner`` holds the
    inner-split runs' folders (``inner["members"]``, ``{preset: path}``) and the facts about
    the choice (shards, images, inner log-loss and accuracy …), written as given."""
    run_dir = Path(run_dir)
    entries = []
    for preset, path in members.items():
        entry: dict[str, Any] = {"preset": preset, "run": os.path.relpath(path, run_dir),
                                 "reused": reused[preset]}
        if weights is not None:
            entry["weight"] = weights[preset]
        entries.append(entry)
    content: dict[str, Any] = {"members": entries}
    if inner is not None:
        content["inner"] = {**inner, "members": [
            {"preset": preset, "run": os.path.relpath(path, run_dir)}
            for preset, path in inner["members"].items()]}
    write_json_atomic(run_dir / ENSEMBLE_FILE, content)


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


# ---------------------------------------------------------------- cross-validation folders


def cv_info(data: dict[str, Any], data_dir: str | Path, cases: Sequence[int], config: Config,
            **extra: Any) -> dict[str, Any]:
    """The content of ``cv.json``."""
    return {"data": data, "data_dir": str(Path(data_dir).resolve()), "cases": list(cases),
            "config": config.to_dict(), **extra}


def check_cv_dir(out: str | Path, data: dict[str, Any], config: Config,
                 restart: bool = False) -> None:
    """Refuse, before any work, a CV folder made from other data or another config
    (:class:`RunMismatchError` naming the difference), unless ``restart``."""
    path = Path(out) / CV_FILE
    if restart or not path.is_file():
        return
    existing = read_json_object(path)
    # Cases may change between calls (each case folder holds its own identity).
    existing = {key: existing[key] for key in ("data", "config") if key in existing}
    differences = identity_differences(existing, {"data": data, "config": config.to_dict()})
    if differences:
        raise _mismatch(Path(out), "cross-validation", differences)


def write_cv_info(out: str | Path, info: dict[str, Any]) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(out) / CV_FILE, info)


def read_cv_info(out: str | Path) -> dict[str, Any]:
    """``OUT/cv.json``; ``FileNotFoundError`` saying what the folder is not."""
    path = Path(out) / CV_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {out} is not a facefold cv folder")
    return read_json_object(path)


def cv_cases(out: str | Path) -> list[int]:
    """The cases ``cv.json`` lists."""
    return [int(k) for k in read_cv_info(out)["cases"]]


def run_dirs(folder: str | Path) -> list[Path]:
    """The run folders of a CV folder (in ``cv.json`` case order), or ``[folder]`` for a run."""
    folder = Path(folder)
    if is_cv(folder):
        return [case_dir(folder, k) for k in cv_cases(folder)]
    if (folder / PREDICTIONS_FILE).is_file():
        return [folder]
    raise FileNotFoundError(f"{folder} is neither a facefold cv folder ({CV_FILE}) nor a "
                            f"finished run folder ({PREDICTIONS_FILE})")


def existing_cases(out: str | Path) -> list[tuple[int, Path]]:
    """Every ``case-K`` run folder in a CV folder, listed or not in ``cv.json``, by K."""
    found = [(k, p) for p in Path(out).glob(f"{CASE_PREFIX}*")
             if (k := case_index(p)) is not None and is_run(p)]
    return sorted(found)


def data_of(folder: str | Path) -> tuple[str, str]:
    """``(fingerprint digest or "", data_dir)`` of a run or CV folder, for "same dataset?"."""
    path = Path(folder)
    info = read_cv_info(path) if is_cv(path) else read_run_info(path)
    return (info.get("data") or {}).get("digest", ""), str(info.get("data_dir", ""))


# ---------------------------------------------------------------- experiment folders


def write_experiment_info(out: str | Path, info: dict[str, Any]) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(out) / EXPERIMENT_FILE, info)


def read_experiment_info(out: str | Path) -> dict[str, Any]:
    return read_json_object(Path(out) / EXPERIMENT_FILE)


def preset_dir(out: str | Path, preset: str) -> Path:
    """``OUT/<preset>``: the CV folder of one preset of an experiment."""
    return Path(out) / safe_name(preset)


def comparison_paths(out: str | Path) -> tuple[Path, Path]:
    """``(comparison.csv, comparison.png)`` of an experiment folder."""
    return Path(out) / COMPARISON_CSV, Path(out) / COMPARISON_PNG


# ---------------------------------------------------------------- Ray: run folders as bytes


def run_files(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run folder, by path relative to it (empty when it does not exist)."""
    if not run_dir.is_dir():
        return {}
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def write_run_files(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write a run folder sent as bytes (by a Ray worker). Metrics and predictions go last,
    so a copy cut short looks unfinished, not complete. Paths stay inside ``run_dir``."""
    last = (PREDICTIONS_FILE, METRICS_FILE)
    for name in sorted(files, key=lambda n: (n in last, last.index(n) if n in last else 0, n)):
        with atomic_path(contained(run_dir, name, "file", run_dir)) as tmp:
            tmp.write_bytes(files[name])


def set_data_dir_note(files: dict[str, bytes], data_dir: str) -> None:
    """Point the ``data_dir`` note of a run sent as bytes at ``data_dir`` (the worker's copy
    of the dataset, or the driver's folder); the identity is by content and unchanged."""
    if RUN_FILE in files:
        info = json.loads(files[RUN_FILE])
        info["data_dir"] = data_dir
        files[RUN_FILE] = (json.dumps(info, indent=2) + "\n").encode()

