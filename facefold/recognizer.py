"""The face recognizer, in a few calls: load a model folder, name faces, enroll, verify.

>>> from facefold import Recognizer                         # doctest: +SKIP
>>> recognizer = Recognizer.load("models/friends")           # a `facefold fit` folder
>>> [face.name for face in recognizer.recognize("party.jpg")]
['ann', 'unknown']
>>> recognizer.enroll("bob", ["bob1.jpg", "bob2.jpg", "bob3.jpg"])   # no retraining
3
>>> recognizer.verify("a.jpg", "b.jpg").same
True

A :class:`Recognizer` wraps a :class:`facefold.predict.Predictor` (any run or export folder;
a ``facefold fit`` model brings the calibrated thresholds that make "unknown", enrolling and
verifying work). Pictures may be paths or PIL images; :meth:`Recognizer.recognize` finds every
face in a photo (with the ``faces`` extra; a face crop is taken whole).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from facefold.atomic import write_text_atomic
from facefold.csvcells import safe_row
from facefold.data.images import load_rgb
from facefold.models.scores import CENTROID_SCORE
from facefold.predict import Predictor, Recognition, predict_files
from facefold.predict.files import PICTURE_SUFFIXES, picture_files
from facefold.predict.predictor import NoFaceError, Verification

Picture = str | Path | Image.Image


def _image(picture: Picture) -> Image.Image:
    return picture if isinstance(picture, Image.Image) else load_rgb(picture)


def enrolled_rates_text(calibration: dict[str, Any] | None, before: float | None,
                        before_score: str = CENTROID_SCORE) -> str:
    """What enrolling changed, in two plain sentences, from
    :meth:`facefold.predict.Predictor.enrolled_calibration` (and the threshold ``before``
    anyone was enrolled, of the score ``before_score`` that decided then)."""
    if calibration is None:
        return ("This model holds no calibration features (made by an older facefold, or an "
                "export): its threshold was not recalibrated for the enrolled people, so more "
                "strangers than its card states may be accepted.")
    people = calibration["strangers"]
    was = "" if before is None else (
        f" (it was {before:.4f} with nobody enrolled)" if before_score == CENTROID_SCORE else
        f" (the cosine similarity to a person's mean photo; with nobody enrolled, faces were "
        f"named by the {before_score} score at {before:.4f})")
    named = calibration["newcomers_named_right"]
    newcomers = "" if named is None else (
        f", and {named:.1%} of a newcomer's other photos named right")
    count = calibration["enrolled"]
    return (f"With {count} {'person' if count == 1 else 'people'} enrolled, a face must now "
            f"reach a similarity of {calibration['threshold']:.4f} to be named{was}, because every "
            "enrolled person is one more for a stranger to be mistaken for. Replaying the "
            "calibration with as many newcomers, "
            f"{calibration['far']:.1%} of strangers' photos were accepted ({_average(people)}"
            f"{_one_new(people.get('held_out', people))}), "
            f"{calibration['known_accuracy']:.1%} of the trained people's photos accepted "
            f"and named right{newcomers}.")


def _average(people: dict[str, Any]) -> str:
    """The average stranger's rate and its upper bound: measured against a threshold set
    without them when the calibration has it (``held_out``), as a new person meets it."""
    held = people.get("held_out")
    if held is None:  # an older facefold's
        return f"an average stranger {people['mean']:.1%}, 95 % upper bound {people['upper']:.1%}"
    return (f"an average stranger measured against a threshold set without them "
            f"{held['mean']:.1%}, 95 % upper bound {held['upper']:.1%}")


def _one_new(people: dict[str, Any]) -> str:
    """``; one new stranger …`` from the interval's ``new_person`` (none from an older one)."""
    new = people.get("new_person")
    return "" if new is None else (
        f"; one new stranger {new['low']:.1%} to {new['upper']:.1%} for 95 % of them")


class Recognizer:
    """A model folder loaded once for naming, enrolling and verifying faces."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    @classmethod
    def load(cls, path: str | Path) -> Recognizer:
        """A run, export or ``facefold fit`` folder; errors name the bad file."""
        return cls(Predictor.load(path))

    @property
    def people(self) -> list[str]:
        """Everyone it can name: the trained people, then the enrolled ones."""
        return self.predictor.people

    def recognize(self, picture: Picture, top_k: int = 5, detect: bool = True
                  ) -> list[Recognition]:
        """Every face of a photo (or the crop itself), with name (or "unknown"), score, box."""
        return self.predictor.recognize_photo(_image(picture), top_k, detect)

    def enroll(self, name: str, pictures: Sequence[Picture], detect: bool = True) -> int:
        """Add ``name`` (or more pictures of them) from face crops or photos of that one person
        (the largest face of each), without retraining; returns their picture count.

        A ``name`` that ends like a picture file (``photo.jpg``) is refused: it is the
        picture given where the name belongs, and enrolled, it would name the person."""
        if Path(name).suffix.lower() in PICTURE_SUFFIXES:
            raise ValueError(
                f"person name {name!r} looks like a picture file: the name comes first, then "
                "the pictures (`facefold enroll MODEL FOLDER` takes the name from the folder, "
                "or give it with --name NAME)")
        crops = [self._largest_face(picture, detect) for picture in pictures]
        return self.predictor.enroll(name, crops)

    def verify(self, a: Picture, b: Picture, detect: bool = True,
               threshold: float | None = None) -> Verification:
        """Whether the (largest) faces of two pictures are the same person."""
        first, second = self._largest_face(a, detect), self._largest_face(b, detect)
        return self.predictor.verify(first, second, threshold)

    def _largest_face(self, picture: Picture, detect: bool) -> Image.Image:
        """The largest face of a picture; :class:`NoFaceError` naming the file when it holds
        none (nothing is then enrolled or compared)."""
        try:
            return self.predictor.face_crops(_image(picture), detect)[0][1]
        except NoFaceError as err:
            where = "the picture" if isinstance(picture, Image.Image) else str(picture)
            raise NoFaceError(f"{where}: {err}") from None

    def identify(self, paths: Iterable[str | Path], top_k: int = 5, detect: bool = True
                 ) -> list[dict[str, Any]]:
        """One row per face of every picture (files or folders): file, face (True), box, name,
        known, score, threshold, top-k; a picture that cannot be read or holds no face gets a
        row with its error (and ``face`` False when it holds none, so it is never named)."""
        rows = []
        for result in predict_files(self.predictor, picture_files(paths), top_k, detect):
            if result["error"]:
                rows.append({"file": result["image"], "face": result.get("face"),
                             "error": result["error"]})
            for face in result["faces"]:
                rows.append({"file": result["image"], "face": True, "box": face["box"],
                             "name": face["name"],
                             "known": face["known"], "score": face["score"],
                             "threshold": face["threshold"], "top": face["top"],
                             "top_kind": face["top_kind"]})
        return rows


IDENTIFY_COLUMNS = ["file", "face", "x", "y", "width", "height", "name", "known", "score",
                    "threshold", "top", "top_kind", "error"]


def identify_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :meth:`Recognizer.identify` as CSV text (``top``: ``name:value`` pairs, the
    values being what ``top_kind`` says: probability or similarity; text cells made safe for
    spreadsheets by :func:`~facefold.csvcells.safe_row`)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, IDENTIFY_COLUMNS)
    writer.writeheader()
    for row in rows:
        box = row.get("box") or [None] * 4
        writer.writerow(safe_row({
            "file": row["file"], "face": _yes_no(row.get("face")),
            "x": box[0], "y": box[1], "width": box[2], "height": box[3],
            "name": row.get("name", ""), "known": row.get("known", ""),
            "score": "" if row.get("score") is None else f"{row['score']:.4f}",
            "threshold": "" if row.get("threshold") is None else f"{row['threshold']:.4f}",
            "top": " ".join(f"{t['name']}:{t[row['top_kind']]:.3f}" for t in row.get("top", [])),
            "top_kind": row.get("top_kind", ""),
            "error": row.get("error", ""),
        }))
    return buffer.getvalue()


def _yes_no(value: bool | None) -> str:
    """A CSV cell for a face / no face / not known (an unreadable file)."""
    return "" if value is None else str(value).lower()


def write_identify_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    write_text_atomic(path, identify_csv(rows))
