"""Run identity, "same run" and "finished".

**Identity by content.** A run belongs to the data it was trained on, not to
the folder that data lay in: its identity holds the dataset's *fingerprint*
(the SHA-256 of every shard file and the label list, :mod:`.fingerprint`),
the held-out shards, the resolved config and what the model family adds (an
embedding's model version). A run is reused or resumed only when its identity is
identical (:func:`identity_differences`); otherwise :class:`RunMismatchError`
says what differs and the way out. A dataset moved elsewhere keeps its
fingerprint, so its runs are still reused; one rebuilt in place does not.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from facefold.config import Config, TrainSpec
from facefold.runs.files import read_json_object, read_metrics, read_predictions, read_run_info
from facefold.runs.fingerprint import describe_data_difference
from facefold.runs.names import PREDICTIONS_FILE, RUN_FILE, is_run

# Keys of run.json that are notes about a run, not part of its identity.
NOTE_KEYS = frozenset({"data_dir", "image_size", "landmark_fallbacks", "precision"})


class RunMismatchError(ValueError):
    """A folder holds a run (or cross-validation) of other data or another config."""


def run_identity(
    data: dict[str, Any], eval_shards: Sequence[int], config: Config,
    people: Sequence[str] | None = None, family_identity: dict[str, Any] | None = None,
    excluded_shards: Sequence[int] = (),
) -> dict[str, Any]:
    """What makes two runs the same run, in its JSON form (so it compares with ``run.json``).

    ``data`` is the dataset's fingerprint (:mod:`.fingerprint`); ``people`` the label list of a run
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


def mismatch_error(folder: Path, what: str, differences: list[str]) -> RunMismatchError:
    return RunMismatchError(
        f"{folder} holds a {what} of other data or settings ({'; '.join(differences)}); "
        "nothing was reused. Choose a new --out, or pass --restart to discard it and train again"
    )


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
