"""A finished run evaluated again on its own held-out shards, with other inference options.

``facefold evaluate RUN [--tta | --no-tta] [--no-ema]`` answers "what would this run have
scored with flip TTA off (or on), or without its weight average?" without training again: it
loads the run's final checkpoint, applies the options (:class:`InferenceOptions`) and names
the images of the held-out shards its ``run.json`` records, of the dataset it records. That
dataset is checked by fingerprint (:func:`facefold.runs.data_fingerprint`), so a rebuilt
dataset is refused rather than measured; a moved one is given as ``data_dir``. Only the run's
people count: an open-set run's held-out people are not part of its accuracy, as in training.

The options, and where the model keeps what they need:

- **Flip TTA** (``model.tta_flip``) adds no weights. A CNN is rebuilt with or without its
  mirror view (:class:`~facefold.models.cnn.FlipTwin` / ``TwinMean``); an embedding head
  averages the embeddings of the image and of its mirror, or takes the image's alone.
- **The weight average** (``train.ema_decay`` > 0): the trainer keeps the average *in* the
  network and the raw weights in the optimizer's average slots, and saves checkpoints that
  way (:func:`facefold.train.optim.training_weights`), so the final checkpoint holds both and
  :func:`raw_weights` swaps them back. A run without an average has only raw weights:
  ``ema=False`` then changes nothing, and the result says so. A checkpoint whose optimizer
  holds no average although the config asks for one has no raw weights to give: refused, with
  the run named.

For an ensemble the options apply to every member and the members' probabilities are
averaged, as in training. The result sits beside the run's recorded predictions (the same
images, in the same order), with the exact McNemar test between the two. Nothing is written
into the run folder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from facefold import runs
from facefold.config import Config
from facefold.data.pipeline import Split
from facefold.data.records import list_shards, read_labels
from facefold.evaluate.stats import mcnemar_test, wilson_interval
from facefold.log import Log
from facefold.models.families import SplitSource, family_of
from facefold.models.outputs import softmax
from facefold.predict.loading import checkpoint_model, load_model_folder
from facefold.predict.predictor import Predictor
from facefold.train.optim import keeps_average, swap_average

CONFIDENCE = 0.95


@dataclass(frozen=True)
class InferenceOptions:
    """How a trained model is run: ``tta`` True/False turns flip test-time augmentation on or
    off (None: as the run was configured, ``model.tta_flip``); ``ema`` False uses the raw
    weights of a weight-averaged run instead of their average; ``crops`` True/False turns a
    CNN's crop test-time augmentation on or off (None: as configured, ``model.tta_crops``)."""

    tta: bool | None = None
    ema: bool = True
    crops: bool | None = None

    @property
    def as_trained(self) -> bool:
        """True when nothing differs from the run's own configuration."""
        return self.tta is None and self.ema and self.crops is None

    def to_dict(self) -> dict[str, Any]:
        """The options as asked for (None: as the run was trained), for a result's JSON."""
        return dataclasses.asdict(self)

    def for_run(self, config: Config) -> dict[str, Any]:
        """What these options mean for one run of ``config``: ``{"tta": bool, "crops": bool,
        "weights": "average" | "raw", "average_kept": bool}`` (crops only for a CNN; a run
        without ``train.ema_decay`` keeps no average: its weights are the raw ones whatever
        ``ema`` says)."""
        kept = bool(config.train.ema_decay)
        crops = config.model.tta_crops if self.crops is None else self.crops
        return {"tta": config.model.tta_flip if self.tta is None else self.tta,
                "crops": crops and family_of(config).reads_pictures,
                "weights": "average" if kept and self.ema else "raw", "average_kept": kept}


AS_TRAINED = InferenceOptions()  # the run's own options


@dataclass(frozen=True)
class Accuracy:
    """``correct`` right answers out of ``total`` with its Wilson interval at ``confidence``."""

    correct: int
    total: int
    confidence: float = CONFIDENCE

    @classmethod
    def of(cls, right: Sequence[bool] | np.ndarray) -> Accuracy:
        right = np.asarray(right, bool)
        return cls(int(right.sum()), int(right.size))

    @property
    def value(self) -> float:
        return self.correct / self.total

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.total, self.confidence)

    def contains(self, value: float) -> bool:
        low, high = self.interval
        return low <= value <= high

    def to_dict(self) -> dict[str, Any]:
        low, high = self.interval
        return {"accuracy": self.value, "correct": self.correct, "images": self.total,
                "interval": [low, high], "confidence": self.confidence,
                "interval_method": "wilson"}

    def text(self) -> str:
        """``0.9241 (499/540), 95 % Wilson interval [0.8989, 0.9434]``."""
        low, high = self.interval
        return (f"{self.value:.4f} ({self.correct}/{self.total}), {self.confidence * 100:.0f} % "
                f"Wilson interval [{low:.4f}, {high:.4f}]")


@dataclass
class HeldOutEvaluation:
    """The run's held-out images named with ``options``, beside what the run recorded.

    ``labels`` (N,) are the true classes, ``probabilities`` (N, C) the new ones and
    ``recorded`` (N, C) those of ``predictions.npz``; ``images`` names each image
    (``data-00.tfrecords record 7``); ``applied`` what the options meant for each leaf run
    (by run folder) and ``trained`` the options it was trained with; ``members`` an
    ensemble's member accuracies with the options.
    """

    run_dir: Path
    data_dir: Path
    shards: list[int]
    people: list[str]
    options: InferenceOptions
    applied: dict[str, dict[str, Any]]
    labels: np.ndarray
    probabilities: np.ndarray
    recorded: np.ndarray
    images: list[str]
    trained: dict[str, dict[str, Any]] = field(default_factory=dict)
    members: dict[str, Accuracy] = field(default_factory=dict)

    @property
    def correct(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1) == self.labels

    @property
    def recorded_correct(self) -> np.ndarray:
        return self.recorded.argmax(axis=1) == self.labels

    @property
    def accuracy(self) -> Accuracy:
        return Accuracy.of(self.correct)

    @property
    def recorded_accuracy(self) -> Accuracy:
        return Accuracy.of(self.recorded_correct)

    def mcnemar(self) -> tuple[int, int, float]:
        """``(b01, b10, p)`` of the recorded predictions (baseline) against the new ones."""
        return mcnemar_test(self.recorded_correct, self.correct)

    def per_person(self) -> list[dict[str, Any]]:
        """``{"person", "images", "correct", "accuracy", "recorded_correct"}`` per person."""
        rows = []
        for label, person in enumerate(self.people):
            mine = self.labels == label
            if mine.any():
                rows.append({"person": person, "images": int(mine.sum()),
                             "correct": int(self.correct[mine].sum()),
                             "accuracy": float(self.correct[mine].mean()),
                             "recorded_correct": int(self.recorded_correct[mine].sum())})
        return rows

    def rows(self) -> list[dict[str, Any]]:
        """One row per image: where it is, its person, the new and the recorded answer."""
        new, old = self.probabilities.argmax(axis=1), self.recorded.argmax(axis=1)
        return [{"image": where, "person": self.people[y], "answer": self.people[a],
                 "right": bool(a == y), "recorded_answer": self.people[b],
                 "probability": float(self.probabilities[i, a])}
                for i, (where, y, a, b) in enumerate(zip(self.images, self.labels, new, old,
                                                         strict=True))]

    def to_dict(self) -> dict[str, Any]:
        b01, b10, p = self.mcnemar()
        return {
            "kind": "held-out", "model": str(self.run_dir), "data": str(self.data_dir),
            "shards": self.shards,
            "options": self.options.to_dict(),
            "applied": self.applied,
            **self.accuracy.to_dict(),
            "recorded": {**self.recorded_accuracy.to_dict(), "applied": self.trained,
                         "what": "the run's own predictions at its last step, with the "
                                 "options it was trained with"},
            "inside": self.accuracy.contains(self.recorded_accuracy.value),
            "mcnemar": {"b01": b01, "b10": b10, "p": p},
            "members": {name: acc.to_dict() for name, acc in self.members.items()},
            "per_person": self.per_person(),
        }

    def text(self) -> str:
        """What ``facefold evaluate RUN`` prints."""
        b01, b10, p = self.mcnemar()
        recorded = self.recorded_accuracy
        shards = ", ".join(map(str, self.shards))
        lines = [
            f"{self.run_dir}: held-out shard(s) {shards} of {self.data_dir}, "
            f"{len(self.labels)} pictures of {len(set(self.labels.tolist()))} people",
            f"options   {options_text(self.applied)}",
            f"accuracy  {self.accuracy.text()}",
            f"recorded  {recorded.value:.4f} ({recorded.correct}/{recorded.total}) as trained "
            f"({options_text(self.trained)}), "
            + ("inside" if self.accuracy.contains(recorded.value) else "outside")
            + " the interval",
            f"McNemar against the recorded predictions: {b01} picture(s) now right that were "
            f"wrong, {b10} now wrong that were right, p = {p:.4g}",
        ]
        lines += [f"member {name}: {acc.text()}" for name, acc in self.members.items()]
        return "\n".join(lines)


def options_text(applied: dict[str, dict[str, Any]]) -> str:
    """The options of every leaf run, named by its folder when there are several."""
    if len(applied) == 1:
        return describe_applied(next(iter(applied.values())))
    return "; ".join(f"{Path(run).name}: {describe_applied(a)}" for run, a in applied.items())


def describe_applied(applied: dict[str, Any]) -> str:
    """``TTA on, weight average`` for an entry of :meth:`InferenceOptions.for_run`."""
    weights = ("weight average" if applied["weights"] == "average" else "raw weights"
               + ("" if applied["average_kept"] else "; the run keeps no average"))
    crops = ", 7 crops" if applied.get("crops") else ""
    return f"TTA {'on' if applied['tta'] else 'off'}{crops}, {weights}"


def raw_weights(run_dir: Path, checkpoint: Path) -> keras.Model:
    """The network of ``checkpoint`` with the raw weights, not their average (a
    :data:`~facefold.predict.loading.CheckpointLoader`); the checkpoint as saved for a run
    that keeps no average. ``ValueError`` naming the run when the average is asked for in its
    config but the checkpoint's optimizer holds none to swap with."""
    config = runs.read_run_config(run_dir)
    if not config.train.ema_decay:
        return checkpoint_model(run_dir, checkpoint)  # its weights are the raw ones
    try:
        # With its optimizer: the raw weights are in the optimizer's average slots.
        model = keras.models.load_model(checkpoint)
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"{checkpoint}: the optimizer of run {run_dir} cannot be loaded "
                         f"({err}), and its raw weights are kept there: evaluate it without "
                         "--no-ema") from err
    if not keeps_average(model):
        raise ValueError(
            f"run {run_dir} was trained with train.ema_decay {config.train.ema_decay}, but "
            f"its checkpoint {checkpoint.name} holds no second set of weights beside the "
            "average: the raw weights are not stored anywhere, so the run can only be "
            "evaluated with its weight average (leave out --no-ema)")
    swap_average(model)
    return model


def _subset(split: Split, keep: np.ndarray, labels: np.ndarray) -> Split:
    """The images of ``split`` where ``keep``, relabelled ``labels`` (any split kind)."""
    fields = {f.name: getattr(split, f.name)[keep] for f in dataclasses.fields(split)}
    return dataclasses.replace(split, **{**fields, "labels": labels.astype(np.int32)})


def held_out(splits: list[Split], data_dir: Path, shards: Sequence[int], people: list[str]
             ) -> tuple[Split, list[str]]:
    """The images of the held-out ``shards`` of ``people`` (relabelled to their index there,
    as the trainer evaluated them), and where each is (``data-00.tfrecords record 7``)."""
    dataset_people = read_labels(data_dir)
    index = {name: i for i, name in enumerate(people)}
    run_label = np.array([index.get(name, -1) for name in dataset_people])
    paths = list_shards(data_dir)
    parts, where = [], []
    for k in shards:
        mapped = run_label[splits[k].labels]
        keep = mapped >= 0
        parts.append(_subset(splits[k], keep, mapped[keep]))
        where += [f"{paths[k].name} record {i}" for i in np.flatnonzero(keep)]
    joined = dataclasses.replace(parts[0], **{
        f.name: np.concatenate([getattr(p, f.name) for p in parts])
        for f in dataclasses.fields(parts[0])})
    return joined, where


def _check_finished(run_dir: Path) -> tuple[dict[str, Any], Config]:
    """The run's ``run.json`` and config when it is a finished run with held-out shards, else
    an error saying what it is instead."""
    if runs.is_cv(run_dir):
        raise ValueError(f"{run_dir} is a cross-validation folder: evaluate one of its runs "
                         f"(e.g. {runs.case_dir(run_dir, 0)})")
    if runs.is_export(run_dir):
        raise ValueError(f"{run_dir} is an export, which records no held-out shards: evaluate "
                         "the run it came from, or give a labeled folder to evaluate it on")
    if not runs.is_run(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a run folder (no {runs.RUN_FILE})")
    info, config = runs.read_run_info(run_dir), runs.read_run_config(run_dir)
    if not info.get("eval_shards"):
        raise ValueError(f"{run_dir} was trained on every shard (`facefold fit`): it holds no "
                         "picture out to evaluate on; give a labeled folder of other pictures: "
                         f"facefold evaluate {run_dir} FOLDER")
    step = int(runs.read_predictions(run_dir)["step"])  # FileNotFoundError: not finished
    if step != config.train.steps:
        raise ValueError(f"{run_dir} has not finished: its predictions are of step {step} of "
                         f"{config.train.steps}; run its training command again to finish it")
    return info, config


def _data_dir(run_dir: Path, info: dict[str, Any], data_dir: Path | None) -> Path:
    """Where the run's dataset is (``data_dir``, else the folder ``run.json`` records), checked
    by fingerprint against the one the run was trained on."""
    folder = Path(data_dir or str(info.get("data_dir", "")))
    if not str(folder) or not folder.is_dir():
        raise FileNotFoundError(
            f"the dataset of run {run_dir} is not at {folder or '(no data_dir in run.json)'}: "
            f"give its new place, facefold evaluate {run_dir} DATA")
    recorded = (info.get("data") or {}).get("digest")
    found = runs.data_fingerprint(folder)
    if recorded != found["digest"]:
        why = runs.describe_data_difference(info.get("data"), found)
        raise ValueError(f"{folder} is not the dataset run {run_dir} was trained on ({why}): "
                         "its held-out shards cannot be evaluated on it")
    return folder


def _probabilities(run_dir: Path, options: InferenceOptions, data_dir: Path,
                   shards: list[int], people: list[str], source: SplitSource,
                   applied: dict[str, dict[str, Any]], members: dict[str, Accuracy] | None = None
                   ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(probabilities (N, C), labels (N,), where)`` of run ``run_dir`` with ``options`` on
    the held-out images; an ensemble averages its members' (their accuracies into
    ``members``). Records what the options meant per leaf run in ``applied``."""
    config = runs.read_run_config(run_dir)
    family = family_of(config)
    member_dirs = family.combined_runs(run_dir)
    if member_dirs is not None:
        parts = []
        for name, member in member_dirs.items():
            parts.append(_probabilities(member, options, data_dir, shards, people, source,
                                        applied))
            if members is not None:
                members[name] = Accuracy.of(parts[-1][0].argmax(axis=1) == parts[-1][1])
        labels, where = parts[0][1], parts[0][2]
        if any(not np.array_equal(p[1], labels) for p in parts):
            raise ValueError(f"the members of ensemble {run_dir} hold different images out")
        return np.mean([p[0] for p in parts], axis=0), labels, where
    if runs.read_run_labels(run_dir) != people:
        raise ValueError(f"{run_dir} was trained on other people than the run that names it")
    loaded = load_model_folder(run_dir, options.tta,
                               None if options.ema else raw_weights, options.crops)
    settings = config if options.tta is None else config.replace(
        model={"tta_flip": options.tta})
    split, where = held_out(source.get(settings), data_dir, shards, people)
    outputs = Predictor(loaded).outputs_for_model_inputs(
        family.inference_inputs(split, settings))
    applied[str(run_dir)] = options.for_run(config)
    return softmax(outputs["logits"]), split.labels, where


def evaluate_run(run_dir: str | Path, options: InferenceOptions = AS_TRAINED,
                 data_dir: str | Path | None = None, log: Log = print) -> HeldOutEvaluation:
    """Name the held-out images of the finished run ``run_dir`` with ``options``.

    ``data_dir`` is where the run's dataset is now (default: where ``run.json`` says); it must
    be the same dataset by content. Raises ``ValueError`` / ``FileNotFoundError`` naming the
    run for a folder that is no finished run with held-out shards, a changed dataset, or raw
    weights that the run does not keep (see the module docstring).
    """
    run_dir = Path(run_dir)
    info, _ = _check_finished(run_dir)
    folder = _data_dir(run_dir, info, Path(data_dir) if data_dir else None)
    people = runs.read_run_labels(run_dir)
    shards = [int(k) for k in info["eval_shards"]]
    recorded = runs.read_predictions(run_dir)
    applied: dict[str, dict[str, Any]] = {}
    members: dict[str, Accuracy] = {}
    probabilities, labels, where = _probabilities(
        run_dir, options, folder, shards, people, SplitSource(folder, log), applied, members)
    if not np.array_equal(labels, recorded["labels"]) or (
            recorded["probabilities"].shape != probabilities.shape):
        raise ValueError(f"the held-out images of {folder} differ from those run {run_dir} "
                         f"recorded in {runs.PREDICTIONS_FILE}")
    trained = {run: AS_TRAINED.for_run(runs.read_run_config(run)) for run in applied}
    return HeldOutEvaluation(run_dir, folder, shards, people, options, applied, labels,
                             probabilities, recorded["probabilities"], where, trained, members)
