"""A trained model checked on labeled pictures it never saw: does its estimate hold up?

``facefold evaluate MODEL DATA`` names every picture of ``DATA`` with ``MODEL`` — a run or
``facefold fit`` folder, or an export — through :class:`facefold.predict.Predictor`, the
path a deployed model takes, and compares the accuracy with the estimate the model folder
records (:func:`recorded_estimate`). ``DATA`` is a dataset folder (TFRecord shards and
``labels.txt``) or a folder of face crops with one sub-folder per person, the layout
``facefold dataset build`` takes (listed with its helpers, read with
:func:`facefold.data.images.load_rgb`); a picture that cannot be read is named, counted and
skipped.

**Whose pictures count.** A person is matched to the model's people by name (folder name, or
the dataset's label); enrolled people count as known. The accuracy is *closed-set*: over the
pictures of known people, the share whose best answer is their name, the number a
cross-validation estimates. People the model does not know are never part of it; they are
listed apart with what the model called them. When the model has an open-set threshold
("unknown" below it), two more numbers use it: the share of known people's pictures accepted
*and* named right, and the share of unknown people's pictures answered "unknown", which
every one of them should be.

**Not its training data.** A dataset with the fingerprint of the model's own training data
is not new to it: :func:`evaluate_model` evaluates the run's held-out shards of it instead
(:mod:`facefold.evaluate.heldout`), and refuses a model trained on all of it. Only an
identical dataset is recognised; pictures copied from the training data into another folder
are not.

:func:`evaluate_model` is the entry point of ``facefold evaluate``, with or without ``DATA``.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from facefold import runs
from facefold.atomic import write_json_atomic, write_text_atomic
from facefold.csvcells import safe_row
from facefold.data.build import person_files, person_folders, person_names
from facefold.data.images import MIN_PICTURE_SIDE, ImageError, load_rgb
from facefold.data.records import LABELS_FILE, list_shards, read_labels, read_shard
from facefold.evaluate.heldout import (
    AS_TRAINED,
    Accuracy,
    HeldOutEvaluation,
    InferenceOptions,
    Log,
    evaluate_run,
    options_text,
    raw_weights,
)
from facefold.models.families import family_of
from facefold.predict.files import FILES_PER_CHUNK
from facefold.predict.loading import load_model_folder, read_export_info
from facefold.predict.predictor import UNKNOWN, Predictor

# What `--out DIR` writes: the result as JSON.
EVALUATION_FILE = "evaluation.json"
# (person, where, read) for every picture of DATA; read() decodes it or raises ImageError.
Picture = tuple[str, str, Callable[[], Image.Image]]
_SHOWN = 10  # unreadable pictures named in the text; the JSON lists all


@dataclass
class FolderEvaluation:
    """Every picture of ``data`` named by ``model``: one row per picture (see :meth:`rows`),
    the pictures that could not be read, the model's open-set rule and recorded estimate."""

    model: Path
    data: Path
    kind: str  # "shards" or "folders"
    options: InferenceOptions
    applied: dict[str, dict[str, Any]]
    known_people: list[str]
    results: list[dict[str, Any]]  # readable pictures: image, person, known, answer, name, …
    unreadable: list[dict[str, str]]
    rule: tuple[str, float] | None  # (score, threshold) deciding "unknown", or None
    estimate: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def _of(self, known: bool) -> list[dict[str, Any]]:
        return [r for r in self.results if r["known_person"] == known]

    @property
    def accuracy(self) -> Accuracy:
        """Closed-set: the pictures of known people whose best answer is their name."""
        return Accuracy.of([r["answer"] == r["person"] for r in self._of(True)])

    def open_set(self) -> dict[str, Any] | None:
        """With a threshold: known pictures accepted and named right, unknown ones rejected."""
        if self.rule is None:
            return None
        known = Accuracy.of([r["name"] == r["person"] for r in self._of(True)])
        strangers = self._of(False)
        rejected = Accuracy.of([r["name"] == UNKNOWN for r in strangers]) if strangers else None
        return {"score": self.rule[0], "threshold": self.rule[1],
                "known_named_right": known.to_dict(),
                "unknown_rejected": rejected.to_dict() if rejected else None}

    def per_person(self) -> list[dict[str, Any]]:
        """Known people: pictures, right answers, accuracy (closed-set)."""
        rows = []
        for person in sorted({r["person"] for r in self._of(True)}):
            mine = [r["answer"] == person for r in self._of(True) if r["person"] == person]
            rows.append({"person": person, "images": len(mine), "correct": sum(mine),
                         "accuracy": sum(mine) / len(mine)})
        return rows

    def unknown_people(self) -> list[dict[str, Any]]:
        """People the model does not know: pictures and what they were called (with the
        threshold applied, so "unknown" is among the answers when the model has one)."""
        rows = []
        for person in sorted({r["person"] for r in self._of(False)}):
            names = Counter(r["name"] for r in self._of(False) if r["person"] == person)
            rows.append({"person": person, "images": sum(names.values()),
                         "named": dict(names.most_common())})
        return rows

    def rows(self) -> list[dict[str, Any]]:
        """One row per picture, unreadable ones included (``error`` set, no answer)."""
        empty = {"known_person": None, "answer": None, "right": None, "name": None,
                 "score": None}
        return [*self.results, *({**empty, **u} for u in self.unreadable)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "generalization", "model": str(self.model), "data": str(self.data),
            "data_kind": self.kind,
            "options": self.options.to_dict(),
            "applied": self.applied,
            **self.accuracy.to_dict(),
            "estimate": self.estimate,
            "per_person": self.per_person(),
            "unknown_people": self.unknown_people(),
            "open_set": self.open_set(),
            "unreadable": self.unreadable,
            "notes": self.notes,
        }

    def text(self) -> str:
        """What ``facefold evaluate MODEL DATA`` prints."""
        acc = self.accuracy
        strangers = self.unknown_people()
        what = "dataset shards" if self.kind == "shards" else "face folders"
        lines = [f"{self.model} on {self.data} ({what}): "
                 f"{acc.total} pictures of {len(self.per_person())} known people"
                 + (f", {sum(p['images'] for p in strangers)} of {len(strangers)} "
                    f"{'person' if len(strangers) == 1 else 'people'} it does not know"
                    if strangers else "")
                 + (f", {len(self.unreadable)} unreadable" if self.unreadable else "")]
        if self.applied:
            lines.append(f"options   {options_text(self.applied)}")
        lines.append(f"accuracy  {acc.text()}")
        lines.append(_estimate_line(self.estimate))
        lines += _open_set_lines(self.open_set(), self.estimate)
        width = max([len("person"), *(len(p["person"]) for p in self.per_person())])
        lines.append(f"{'person':{width}s}  images  right  accuracy")
        lines += [f"{p['person']:{width}s}  {p['images']:6d}  {p['correct']:5d}  "
                  f"{p['accuracy']:.4f}" for p in self.per_person()]
        if strangers:
            lines.append("not known to the model (left out of the accuracy):")
            lines += [f"  {p['person']}: {p['images']} pictures, called "
                      + ", ".join(f"{n} {c}" for n, c in p["named"].items()) for p in strangers]
        if self.unreadable:
            lines.append(f"unreadable, skipped ({len(self.unreadable)}):")
            lines += [f"  {u['error']}" for u in self.unreadable[:_SHOWN]]
            if len(self.unreadable) > _SHOWN:
                lines.append(f"  … and {len(self.unreadable) - _SHOWN} more (all in --out's "
                             f"{EVALUATION_FILE})")
        lines += self.notes
        return "\n".join(lines)


def _estimate_line(estimate: dict[str, Any] | None) -> str:
    if estimate is None:
        return "estimate  none recorded in the model folder"
    where = "inside" if estimate["inside"] else "outside"
    return f"estimate  {estimate['accuracy']:.4f}: {estimate['what']}; {where} the interval"


def _open_set_lines(open_set: dict[str, Any] | None, estimate: dict[str, Any] | None
                    ) -> list[str]:
    if open_set is None:
        return []
    known = open_set["known_named_right"]
    low, high = known["interval"]
    lines = [f"with the threshold ({open_set['score']} >= {open_set['threshold']:.4f}): known "
             f"people's pictures accepted and named right {known['accuracy']:.4f} "
             f"({known['correct']}/{known['images']}) [{low:.4f}, {high:.4f}]"]
    expected = (estimate or {}).get("known_named_right")
    if expected is not None:
        where = "inside" if low <= expected <= high else "outside"
        lines.append(f"  the calibration expected {expected:.4f} (at "
                     f"{(estimate or {}).get('far') or 0:.1%} of strangers accepted); {where} "
                     "the interval")
    rejected = open_set["unknown_rejected"]
    if rejected:
        low, high = rejected["interval"]
        lines.append(f"  unknown people's pictures answered '{UNKNOWN}' {rejected['accuracy']:.4f} "
                     f"({rejected['correct']}/{rejected['images']}) [{low:.4f}, {high:.4f}]")
    return lines


# ---------------------------------------------------------------- the estimate a folder records


def _final_accuracy(run_dir: Path) -> tuple[float, int] | None:
    """The last evaluation of a run: ``(held-out accuracy, images)``, or None."""
    rows = runs.read_metrics(run_dir) if runs.is_run(run_dir) else []
    if not rows or rows[-1].get("eval_accuracy") is None:
        return None
    return float(rows[-1]["eval_accuracy"]), int(rows[-1].get("eval_images") or 0)


def recorded_estimate(model_dir: str | Path) -> dict[str, Any] | None:
    """The accuracy the model folder expects on new pictures, and what that number is:
    ``{"accuracy", "what", "source"}``, or None when it records none.

    In order: a ``facefold fit`` model's model card (the leave-people-out calibration models'
    closed-set accuracy); a ``case-K`` of a cross-validation folder (the mean final accuracy
    over its finished cases); a run with held-out shards (its final held-out accuracy); an
    export, the estimate of the run it was exported from when that folder is still there.
    """
    folder = Path(model_dir)
    if runs.is_export(folder):
        source = read_export_info(folder).get("source_run")
        found = recorded_estimate(source) if source and runs.is_run(source) else None
        return {**found, "what": f"{found['what']}, of the run it was exported from"} if (
            found) else None
    if not runs.is_run(folder):
        return None
    card = runs.read_model_card(folder)
    if card and isinstance(card.get("calibration"), dict) and (
            card["calibration"].get("closed_set_accuracy") is not None):
        cal = card["calibration"]
        chosen = (cal.get("scores") or {}).get(cal.get("score")) or {}
        return {"accuracy": float(cal["closed_set_accuracy"]), "source": str(folder),
                "what": f"closed-set accuracy of its {cal.get('groups', '?')} leave-people-out "
                        "calibration models on held-out shards (model card)",
                "known_named_right": chosen.get("known_accuracy"), "far": cal.get("far")}
    parent = folder.parent
    if runs.case_index(folder) is not None and runs.is_cv(parent):
        finals = [f for case in runs.run_dirs(parent) if (f := _final_accuracy(case))]
        if finals:
            mean = sum(a for a, _ in finals) / len(finals)
            return {"accuracy": mean, "source": str(parent),
                    "what": f"cross-validation mean over {len(finals)} case(s) of {parent}"}
    final = _final_accuracy(folder)
    shards = runs.read_run_info(folder).get("eval_shards") or []
    if final is None or not shards:
        return None
    return {"accuracy": final[0], "source": str(folder),
            "what": f"held-out accuracy of this run on shard(s) "
                    f"{', '.join(map(str, shards))} ({final[1]} pictures)"}


# ---------------------------------------------------------------- the pictures of DATA


def _is_dataset(data: Path) -> bool:
    try:
        return bool(list_shards(data))
    except FileNotFoundError:
        return False


def _reader(source: Path | bytes, where: str) -> Callable[[], Image.Image]:
    # Decoded as `facefold predict` decodes a picture (no picture under 20 px is a face).
    return lambda: load_rgb(source, where, min_side=MIN_PICTURE_SIDE)


def _dataset_pictures(data: Path) -> tuple[list[str], Iterator[Picture]]:
    """The people of a dataset folder and its pictures, shard by shard."""
    people = read_labels(data)

    def pictures() -> Iterator[Picture]:
        for path in list_shards(data):
            for i, record in enumerate(read_shard(path)):
                if not 0 <= record.label < len(people):
                    raise ValueError(f"{path} record {i}: label {record.label} is outside "
                                     f"{data / LABELS_FILE} (0..{len(people) - 1})")
                where = f"{path.name} record {i}"
                yield people[record.label], where, _reader(record.image_raw, where)

    return people, pictures()


def _folder_pictures(data: Path) -> tuple[list[str], Iterator[Picture]]:
    """The people (sub-folders) of a folder of face crops and their files."""
    folders = person_folders(data)
    names = person_names(data, folders)  # as `dataset build` names them: NFC, checked

    def pictures() -> Iterator[Picture]:
        for name, folder in zip(names, folders, strict=True):
            for path in person_files(folder):
                where = path.relative_to(data).as_posix()
                yield name, where, _reader(path, where)

    return names, pictures()


def data_pictures(data: str | Path) -> tuple[str, list[str], Iterator[Picture]]:
    """``(kind, people, pictures)`` of a DATA folder: ``"shards"`` for a dataset folder,
    ``"folders"`` for one sub-folder of face crops per person."""
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"{data} is not a folder: give a dataset folder (shards and "
                                "labels.txt) or a folder of face crops, one sub-folder per "
                                "person")
    if _is_dataset(data):
        return "shards", *_dataset_pictures(data)
    people, pictures = _folder_pictures(data)
    if not people:
        raise FileNotFoundError(f"{data} holds neither shards (data-00.tfrecords …) nor "
                                "person sub-folders of face crops")
    return "folders", people, pictures


# ---------------------------------------------------------------- evaluation


def load_predictor(model: Path, options: InferenceOptions) -> tuple[Predictor, dict]:
    """The model as :meth:`Predictor.load` loads it, or with ``options`` applied to a run
    (an export refuses options); and what they meant per leaf run (empty when as trained)."""
    if options.as_trained:
        return Predictor.load(model), {}
    loaded = load_model_folder(model, options.tta, None if options.ema else raw_weights,
                               options.crops)
    leaves = family_of(runs.read_run_config(model)).leaf_runs(model)
    return Predictor(loaded), {str(leaf): options.for_run(runs.read_run_config(leaf))
                               for leaf in leaves}


def _name_chunk(predictor: Predictor, chunk: list[tuple[str, str, Image.Image]],
                known: set[str]) -> list[dict[str, Any]]:
    faces = predictor.recognize([image for _, _, image in chunk], top_k=1)
    return [{"image": where, "person": person, "known_person": person in known,
             "answer": face.top[0][0], "right": face.top[0][0] == person if person in known
             else None, "name": face.name, "score": face.score, "error": None}
            for (person, where, _), face in zip(chunk, faces, strict=True)]


def _training_data(model: Path) -> dict[str, Any] | None:
    """The data fingerprint of the run ``model`` was trained on (None: not recorded, or an
    export)."""
    if not runs.is_run(model):
        return None
    data = runs.read_run_info(model).get("data")
    return data if isinstance(data, dict) else None


def _same_as_training(model: Path, data: Path) -> bool:
    trained = _training_data(model)
    return bool(trained) and _is_dataset(data) and (
        runs.data_fingerprint(data)["digest"] == trained.get("digest"))


def evaluate_folder(model: str | Path, data: str | Path,
                    options: InferenceOptions = AS_TRAINED,
                    log: Log = print) -> FolderEvaluation:
    """Name every picture of ``data`` with ``model`` (see the module docstring).

    Raises ``ValueError`` when ``data`` is the dataset the model was trained on (use
    :func:`evaluate_model`), when none of its people is known to the model, or for options an
    export cannot take; ``FileNotFoundError`` for a folder that is neither kind of DATA.
    """
    model, data = Path(model), Path(data)
    if _same_as_training(model, data):
        raise ValueError(f"{data} is the dataset {model} was trained on: its pictures are not "
                         f"new to it (facefold evaluate {model} evaluates its held-out shards)")
    kind, people, pictures = data_pictures(data)
    predictor, applied = load_predictor(model, options)
    known = set(predictor.people)
    if not known & set(people):
        raise ValueError(f"none of the {len(people)} people of {data} ({', '.join(people[:5])}"
                         f"{', …' if len(people) > 5 else ''}) is one the model knows "
                         f"({', '.join(predictor.people[:5])}{', …' if len(known) > 5 else ''}):"
                         " people are matched by their exact name")
    predictor.rejection()  # a bad stored threshold fails before any picture is read
    results, unreadable, chunk = [], [], []
    for person, where, read in pictures:
        try:
            chunk.append((person, where, read()))
        except ImageError as err:
            unreadable.append({"image": where, "person": person, "error": str(err)})
        if len(chunk) == FILES_PER_CHUNK:
            results += _name_chunk(predictor, chunk, known)
            chunk = []
            log(f"[evaluate] {len(results)} pictures named")
    if chunk:
        results += _name_chunk(predictor, chunk, known)
    if not any(r["known_person"] for r in results):
        raise ValueError(f"no picture of a person the model knows could be read in {data} "
                         f"({len(unreadable)} unreadable)")
    rule, notes = predictor.rejection(), _name_hints(people, predictor.people)
    if rule is not None and not options.as_trained:
        notes.append("note: the threshold was calibrated on the model as trained, not with "
                     "these options")
    evaluation = FolderEvaluation(model, data, kind, options, applied, sorted(known),
                                  results, unreadable, rule, notes=notes)
    evaluation.estimate = _estimate_against(model, evaluation.accuracy, applied)
    return evaluation


def _estimate_against(model: Path, accuracy: Accuracy, applied: dict[str, dict[str, Any]]
                      ) -> dict[str, Any] | None:
    """The recorded estimate, whether it lies inside the interval of ``accuracy``, and a word
    when it was measured with other options than ``applied``."""
    estimate = recorded_estimate(model)
    if estimate is None:
        return None
    estimate["inside"] = accuracy.contains(estimate["accuracy"])
    if any(options != AS_TRAINED.for_run(runs.read_run_config(run))
           for run, options in applied.items()):
        estimate["what"] += ", measured with the options the model was trained with"
    return estimate


def _name_hints(people: Sequence[str], known: Sequence[str]) -> list[str]:
    """A note for each unknown name that differs from a known one only in letter case."""
    by_fold = {name.casefold(): name for name in known}
    return [f"note: {name!r} is not a person of the model, but {by_fold[name.casefold()]!r} is "
            "(names must match exactly)"
            for name in people if name not in known and name.casefold() in by_fold]


def evaluate_model(model: str | Path, data: str | Path | None = None,
                   options: InferenceOptions = AS_TRAINED, log: Log = print
                   ) -> HeldOutEvaluation | FolderEvaluation:
    """``facefold evaluate``: without ``data``, the run's own held-out shards with
    ``options`` (:func:`~facefold.evaluate.heldout.evaluate_run`); with a ``data`` folder of
    other labeled pictures, how the model does on them (:func:`evaluate_folder`). A ``data``
    that is the run's own training dataset (by fingerprint, wherever it lies now) means its
    held-out shards there; a model trained on all of it is refused."""
    if data is None:
        return evaluate_run(model, options, log=log)
    model, data = Path(model), Path(data)
    if _same_as_training(model, data):
        if not runs.read_run_info(model).get("eval_shards"):
            raise ValueError(f"{model} was trained on every picture of {data}: evaluate it on "
                             "a folder of other pictures")
        log(f"{data} is the dataset {model} was trained on: evaluating its held-out shards")
        return evaluate_run(model, options, data, log)
    return evaluate_folder(model, data, options, log)


# ---------------------------------------------------------------- files


def write_evaluation(result: HeldOutEvaluation | FolderEvaluation, out: str | Path) -> Path:
    """Write ``OUT/evaluation.json`` (atomically; ``out`` is created); returns its path."""
    path = Path(out) / EVALUATION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, result.to_dict())
    return path


def write_rows_csv(result: HeldOutEvaluation | FolderEvaluation, path: str | Path) -> int:
    """Write one CSV row per picture to ``path`` (atomically); returns the number of rows."""
    rows = result.rows()
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(map(safe_row, rows))  # names and file names: never formulas
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, buffer.getvalue())
    return len(rows)
