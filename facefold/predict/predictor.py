"""Name the people in pictures with a loaded model: probabilities, open-set scores, names.

A :class:`Predictor` is loaded once from a model folder — a run or an export
(:mod:`facefold.predict.loading`) — and names faces in batches.

Preprocessing is the one of evaluation: a picture is decoded to RGB
(:func:`facefold.data.images.load_rgb`), resized and centre-cropped to the
dataset's square image size (:func:`~facefold.data.images.square_crop`), made
gray for a 1-channel model, and fed as uint8 to the inference model (see
:mod:`facefold.models.inference`), which returns ``logits`` (N, classes) and
``features`` (N, D) — the input of the logits layer, which the ``cosine``
open-set score compares with the per-person centroids (see
:mod:`facefold.models.scores`). An embedding head embeds the picture first.

"Unknown": when the model folder holds a threshold (``threshold.json``, written
by ``facefold cv --unknown-people``), or a threshold is given, a face whose
open-set score is below it is answered as :data:`UNKNOWN`.

Whole photos (``detect=True``): every face that
``facefold.faces.detect.detect_faces`` finds is aligned to the dataset's image
size with ``align_face`` and recognized, with its box. **Fallback rule**: when
that detector is not installed or finds no face, the whole picture is taken as
one face crop only if it looks like one: nearly square (sides within 10 %) and
at most :data:`~facefold.data.images.MAX_CROP_SIDE` pixels on its longer side
(:func:`~facefold.data.images.looks_like_face_crop`), and a picture taken whole (so also
every crop given with ``detect=False``) only when it is a face
(:func:`facefold.faces.plausible.face_problem`). Otherwise :class:`NoFaceError` is raised:
noise, a flat or a gradient picture is never named, verified or enrolled.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from facefold import runs
from facefold.data.images import MAX_CROP_SIDE, looks_like_face_crop, square_crop
from facefold.data.records import UNKNOWN, label_name_problem, normal_name
from facefold.embeddings.pictures import check_embedding_meta, chip_images, takes_chips
from facefold.faces import plausible
from facefold.models.enrollment import (
    REPLAY_VERSION,
    SIMULATION_DRAWS,
    SIMULATION_SEED,
    recalibrate,
)
from facefold.models.outputs import Infer, softmax
from facefold.models.scores import (
    CENTROID_SCORE,
    DEFAULT_SCORE,
    SCORES,
    open_set_scores,
    person_similarity,
    unit_rows,
)
from facefold.predict.gallery import Gallery, People, picture_key
from facefold.predict.loading import LoadedModel, load_model_folder

# Images per inference call: bounded memory, and big enough to amortize the call.
BATCH_SIZE = 64

Box = tuple[float, float, float, float]  # x, y, width, height in the photo's pixels


def finite_threshold(threshold: float) -> float:
    """``threshold`` as a float; ``ValueError`` when it is NaN or infinite (every comparison
    with NaN is false, so NaN would answer "unknown" for every face, "different" for every
    pair, without a word)."""
    value = float(threshold)
    if not math.isfinite(value):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    return value


def _batched(infer: Infer, arrays: np.ndarray | Mapping[str, np.ndarray],
             batch_size: int) -> dict[str, np.ndarray]:
    """``infer`` over ``arrays`` (or a dict of arrays of the same pictures, an ensemble's
    members' inputs) in batches of ``batch_size``: logits and features, float32."""
    def batch(start: int) -> np.ndarray | dict[str, np.ndarray]:
        if isinstance(arrays, Mapping):
            return {k: np.ascontiguousarray(v[start : start + batch_size])
                    for k, v in arrays.items()}
        return np.ascontiguousarray(arrays[start : start + batch_size])

    count = len(next(iter(arrays.values()), ())) if isinstance(arrays, Mapping) else len(arrays)
    parts: dict[str, list[np.ndarray]] = {"logits": [], "features": []}
    for start in range(0, count, batch_size):
        out = infer(batch(start))
        for key in parts:
            parts[key].append(np.asarray(out[key], np.float32))
    if not count:
        return {key: np.zeros((0, 0), np.float32) for key in parts}
    return {key: np.concatenate(values) for key, values in parts.items()}


@dataclass(frozen=True)
class Verification:
    """Two faces compared: ``same`` when ``similarity`` (cosine of their features) is at least
    ``threshold``."""

    same: bool
    similarity: float
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {"same": self.same, "similarity": self.similarity, "threshold": self.threshold}


class NoFaceError(ValueError):
    """No face was found in a photo (and the photo is not itself a face crop)."""


# What the values of a recognition's ``top`` are: the classifier's softmax probabilities, or
# cosine similarities to each person's mean feature (naming by the nearest centroid). The
# JSON, CSV and page name them, so that a similarity is never read as a probability.
PROBABILITY, SIMILARITY = "probability", "similarity"


@dataclass(frozen=True)
class Recognition:
    """One recognized face.

    ``name`` is the best person, or :data:`UNKNOWN` when the open-set
    ``score`` is below ``threshold``; ``top`` the ``(name, value)`` of the
    most likely people, the values being what ``top_kind`` says: :data:`PROBABILITY`, or
    :data:`SIMILARITY` (cosine) when named by the nearest centroid;
    ``box`` where the face is in the photo (None when the
    whole picture was the crop).
    """

    name: str
    known: bool
    top: list[tuple[str, float]]
    score: float | None = None
    score_name: str | None = None
    threshold: float | None = None
    box: Box | None = None
    top_kind: str = PROBABILITY

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: each ``top`` entry's value under the key ``top_kind`` names."""
        return {
            "name": self.name,
            "known": self.known,
            "top": [{"name": n, self.top_kind: value} for n, value in self.top],
            "top_kind": self.top_kind,
            "score": self.score,
            "score_name": self.score_name,
            "threshold": self.threshold,
            "box": list(self.box) if self.box is not None else None,
        }


class Predictor:
    """A model loaded once; names faces in batches. Use :meth:`load`.

    ``members`` are the member predictors of an ensemble by preset name (empty otherwise),
    ``member_weights`` a weighted ensemble's weights by preset name (None otherwise).
    """

    def __init__(self, loaded: LoadedModel, batch_size: int = BATCH_SIZE) -> None:
        self.info = loaded.info
        self._infer = loaded.infer
        self.keras_model = loaded.keras_model  # the inference model (runs, .keras exports)
        self.batch_size = batch_size
        self._model_infer = loaded.model_infer
        self._model_inputs = loaded.model_inputs
        self.members = {name: Predictor(member, batch_size)
                        for name, member in loaded.members.items()}
        self.member_weights = loaded.weights
        # People enrolled without retraining (facefold enroll): named by nearest centroid. The
        # gallery is read afresh when another process (or predictor) enrolled someone.
        self._gallery = None if self.info.centroids is None else Gallery(
            self.info.source, self.info.centroids.shape[1])
        self._enrolled()  # a damaged gallery fails here, when the model is loaded
        # The threshold recalibrated for the gallery (enrolled_calibration), by its counts.
        self._recalibrated: tuple[tuple[int, ...], dict[str, Any] | None] | None = None

    @classmethod
    def load(cls, path: str | Path, lite: bool = True) -> Predictor:
        """Load a run folder or an export folder (:func:`~.loading.load_model_folder`; with
        ``lite``, a run keeping a TFLite export of its newest checkpoint runs that, without
        TensorFlow); errors name the missing or bad file."""
        return cls(load_model_folder(path, lite=lite))

    @property
    def labels(self) -> list[str]:
        """The people the network was trained on (index = class)."""
        return self.info.labels

    @property
    def gallery_names(self) -> list[str]:
        """The enrolled people, in the order they were first enrolled."""
        return self._enrolled().names

    def _enrolled(self) -> People:
        if self._gallery is None:
            return People.empty(0)
        return self._gallery.read()

    @property
    def names_by_centroid(self) -> bool:
        """True when faces are named by the nearest centroid (a ``facefold fit`` model, whose
        threshold says so, or one with enrolled people), not by the classifier's softmax."""
        stored = self.info.threshold or {}
        return bool(self.gallery_names) or stored.get("naming") == "centroid"

    @property
    def people(self) -> list[str]:
        """Everyone the model can name: the trained people, then the enrolled ones."""
        return [*self.info.labels, *self.gallery_names]

    def all_centroids(self) -> np.ndarray | None:
        """Unit mean features (P, D) of :attr:`people`, or None without centroids."""
        if self.info.centroids is None:
            return None
        people = self._enrolled()
        enrolled = unit_rows(people.sums) if people.names else people.sums
        return np.concatenate([self.info.centroids, enrolled]).astype(np.float32)

    def enrolled_calibration(self) -> dict[str, Any] | None:
        """The cosine threshold and its expected rates for the people enrolled now
        (:func:`facefold.models.enrollment.recalibrate`, from ``fit``'s
        ``calibration_features.npz``), or None: nobody enrolled, or a model without them
        (an export, a model fit by an older facefold). Computed again when the gallery
        changes, and kept in the model folder for the next process that loads it
        (:func:`facefold.runs.read_enrolled_calibration`: only for the same counts, target,
        bound, replay and calibration features)."""
        people = self._enrolled()
        if not people.names:
            return None
        key = tuple(int(c) for c in people.counts)
        if self._recalibrated is None or self._recalibrated[0] != key:
            self._recalibrated = (key, self._recalibration(key))
        return self._recalibrated[1]

    def _recalibration(self, counts: tuple[int, ...]) -> dict[str, Any] | None:
        """:meth:`enrolled_calibration` for a gallery of ``counts``: kept, or replayed."""
        stored, folder = self.info.threshold or {}, Path(self.info.source)
        if not (folder.is_dir() and "far" in stored
                and (folder / runs.CALIBRATION_FEATURES_FILE).is_file()):
            return None
        far, bound = float(stored["far"]), stored.get("far_bound", "pooled")
        key = runs.enrolled_calibration_key(folder, counts=list(counts), far=far,
                                            far_bound=bound, replay=REPLAY_VERSION,
                                            draws=SIMULATION_DRAWS, seed=SIMULATION_SEED)
        kept = runs.read_enrolled_calibration(folder, key)
        if kept is not None:
            return kept
        arrays = runs.read_calibration_features(folder)
        if arrays is None:
            return None
        report = recalibrate(arrays, counts, far, bound)
        with contextlib.suppress(OSError):  # a read-only folder: every process replays it
            runs.write_enrolled_calibration(folder, key, report)
        return report

    # ------------------------------------------------------------ enrolling and verifying

    def enroll(self, name: str, images: Sequence[Image.Image]) -> int:
        """Add (or add pictures to) an enrolled person from face crops, without retraining;
        written to the model folder's gallery. Returns how many pictures the person has.

        Needs the model's centroids (a ``facefold fit`` model has them); the name must be a
        valid label (:func:`~facefold.data.records.label_name_problem`; it is taken in NFC) and
        not one of the trained people.
        """
        name, _ = self._gallery_for(name)  # checked before the pictures are computed
        if not images:
            raise ValueError(f"no picture to enroll {name!r} from")
        keys = [picture_key(np.asarray(image)) for image in images]
        return self.enroll_features(name, self.outputs(images)["features"], keys)

    def enroll_features(self, name: str, features: np.ndarray,
                        pictures: Sequence[str] | None = None) -> int:
        """:meth:`enroll` from the model's features (N, D) of a person's pictures, whose
        content keys are ``pictures`` (:func:`~.gallery.picture_key`; None: the features'
        own bytes). A picture enrolled before under this name counts once."""
        name, gallery = self._gallery_for(name)
        _, total = gallery.add(name, unit_rows(features), pictures)
        return total

    def _gallery_for(self, name: str) -> tuple[str, Gallery]:
        """``(name in NFC, the gallery)`` when ``name`` may be enrolled in this model;
        ``ValueError`` saying why not."""
        name = normal_name(name)
        problem = label_name_problem(name)
        if problem:
            raise ValueError(f"person name {name!r} {problem}")
        if name in self.labels:
            raise ValueError(f"{name!r} is one of the people the model was trained on; "
                             "enroll new people only (or fit the model again with more photos)")
        if self._gallery is None:
            raise ValueError(f"{self.info.source} holds no {runs.CENTROIDS_FILE}: enrolling "
                             "needs a model made by `facefold fit`")
        return name, self._gallery

    def clear_gallery(self) -> None:
        """Remove every enrolled person from the model folder."""
        if self._gallery is not None:
            self._gallery.clear()

    def verify(self, a: Image.Image, b: Image.Image,
               threshold: float | None = None) -> Verification:
        """Whether two face crops show the same person: the cosine similarity of their
        features against the calibrated ``verify_threshold`` (or ``threshold``)."""
        threshold = threshold if threshold is not None else (
            self.info.threshold or {}).get("verify_threshold")
        if threshold is None:
            raise ValueError(f"{self.info.source} has no verification threshold (written by "
                             "`facefold fit`): give --threshold")
        threshold = finite_threshold(threshold)
        features = unit_rows(self.outputs([a, b])["features"])
        similarity = float(features[0] @ features[1])
        return Verification(similarity >= threshold, similarity, threshold)

    # ------------------------------------------------------------ arrays in, numbers out

    def to_array(self, image: Image.Image) -> np.ndarray:
        """A picture as the model's uint8 input (S, S, C): square crop to the image size, gray
        for a 1-channel model (ITU-R 601 luma, as the JPEG decoder of the shards)."""
        square = square_crop(image, self.info.image_size)
        if self.info.channels == 1:
            return np.asarray(square.convert("L"))[..., None]
        return np.asarray(square.convert("RGB"))

    def to_arrays(self, images: Sequence[Image.Image]) -> np.ndarray:
        """:meth:`to_array` of each picture: uint8 (N, S, S, C), N = 0 for no picture."""
        if not images:
            return np.zeros((0, self.info.image_size, self.info.image_size, self.info.channels),
                            np.uint8)
        return np.stack([self.to_array(im) for im in images])

    def outputs_for_arrays(self, arrays: np.ndarray) -> dict[str, np.ndarray]:
        """``{"logits": (N, C), "features": (N, D)}`` for uint8 images (N, S, S, channels)."""
        expected = (self.info.image_size, self.info.image_size, self.info.channels)
        if arrays.ndim != 4 or arrays.shape[1:] != expected:
            raise ValueError(f"images must be (N, {', '.join(map(str, expected))}), "
                             f"got {arrays.shape}")
        return _batched(self._infer, arrays, self.batch_size)

    def outputs_for_model_inputs(self, inputs: np.ndarray | Mapping[str, np.ndarray]
                                 ) -> dict[str, np.ndarray]:
        """Logits and features for what the network itself takes, in batches: uint8 images
        for a CNN, embeddings (N, V, D) for an embedding head's run (its cached inputs),
        chips (N, V, C, C, 3) for its export (see :meth:`chips`); for an ensemble's run, each
        member's by preset name, combined as its pictures are; for an ensemble's export (one
        model file), each input by name (``image`` for the CNN members, ``chips`` for a
        dlib128 head): :meth:`model_inputs` gives them."""
        if self._model_infer is None:
            raise ValueError(f"{self.info.source} was loaded without its model's inference")
        return _batched(self._model_infer, inputs, self.batch_size)

    def model_inputs(self, images: Sequence[Image.Image]) -> np.ndarray | dict[str, np.ndarray]:
        """What :meth:`outputs_for_model_inputs` takes for face crops: the model's own input
        (an embedding head's export: the chips, cut by dlib; an ensemble: a dict of them),
        so that a deployment cuts the inputs once and runs the model where only TensorFlow
        is installed."""
        if self._model_inputs is None:
            raise ValueError(f"{self.info.source} was loaded without its model's inputs")
        return self._model_inputs(self.to_arrays(images))

    def chips(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The input of an embedding head's export for face crops: uint8 (N, V, C, C, 3),
        each crop's aligned chip and, with V = 2, its mirror's (cut by dlib, needs
        ``facefold[dlib]``); :meth:`outputs_for_model_inputs` and
        :meth:`recognize_model_inputs` of the export then need TensorFlow alone."""
        embedding = self.info.embedding
        if not takes_chips(embedding):
            raise ValueError(f"{self.info.source} does not take chips: only an export of an "
                             "embedding head (facefold export) does")
        arrays = self.to_arrays(images)
        check_embedding_meta(embedding, self.info.source)  # the installed chips are its own
        return chip_images(arrays, embedding["name"], embedding["views"])[0]

    def outputs(self, images: Sequence[Image.Image]) -> dict[str, np.ndarray]:
        """Logits and features of face crops (any size; see :meth:`to_array`)."""
        return self.outputs_for_arrays(self.to_arrays(images))

    def predict_crops(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Class probabilities (N, classes) of face crops, in batches."""
        return softmax(self.outputs(images)["logits"])

    # ------------------------------------------------------------ names

    def rejection(self, threshold: float | None = None,
                  score: str | None = None) -> tuple[str, float] | None:
        """The ``(score name, threshold)`` that decides "unknown", or None (never unknown).

        ``score`` defaults to the stored one (the cosine score once people are enrolled: they
        are named by the nearest centroid, whatever score the calibration preferred), else
        :data:`DEFAULT_SCORE`; ``threshold`` to the stored threshold of that score,
        recalibrated for the enrolled people when the score uses centroids
        (:meth:`enrolled_calibration`).
        """
        stored = self.info.threshold or {}
        if score is None and self.gallery_names:
            score = CENTROID_SCORE
        score = score or stored.get("score") or DEFAULT_SCORE
        if score not in SCORES:
            raise ValueError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")
        if threshold is None:
            threshold = stored.get("thresholds", {}).get(score)
            enrolled = self.enrolled_calibration() if score == CENTROID_SCORE else None
            if enrolled is not None:  # more people to be mistaken for: a higher threshold
                threshold = enrolled["threshold"]
        if threshold is None:
            return None
        threshold = finite_threshold(threshold)
        missing = (runs.CENTROIDS_FILE if SCORES[score].uses_centroids
                   and self.info.centroids is None else runs.PICTURES_FILE
                   if SCORES[score].uses_pictures and self.info.pictures is None else None)
        if missing:
            others = [name for name, s in SCORES.items() if not s.uses_centroids]
            raise ValueError(
                f"the {score} score needs {self.info.source / missing} (written by "
                f"`facefold fit` and `facefold cv --unknown-people`); choose --score "
                f"{', '.join(others[:-1])} or {others[-1]}"
            )
        if SCORES[score].uses_pictures and self.gallery_names:
            raise ValueError(f"a model with enrolled people decides by the {CENTROID_SCORE} "
                             f"score, not {score!r}: leave out --score")
        return score, threshold

    def recognize(self, images: Sequence[Image.Image], top_k: int = 5,
                  threshold: float | None = None, score: str | None = None,
                  boxes: Sequence[Box | None] | None = None) -> list[Recognition]:
        """Name each face crop: top-``top_k`` people, and "unknown" below the threshold.

        ``boxes`` (one per crop) are copied into the results.
        """
        rule = self._naming_rule(top_k, threshold, score)  # a bad option fails before the model
        if not images:
            return []
        return self._name(self.outputs(images), top_k, rule, boxes or [None] * len(images))

    def recognize_model_inputs(self, inputs: np.ndarray | Mapping[str, np.ndarray],
                               top_k: int = 5,
                               threshold: float | None = None,
                               score: str | None = None) -> list[Recognition]:
        """:meth:`recognize` of what the network itself takes (see
        :meth:`outputs_for_model_inputs`; an embedding head's export: :meth:`chips`)."""
        rule = self._naming_rule(top_k, threshold, score)
        out = self.outputs_for_model_inputs(inputs)
        return self._name(out, top_k, rule, [None] * len(out["logits"]))

    def _naming_rule(self, top_k: int, threshold: float | None,
                     score: str | None) -> tuple[str, float] | None:
        if top_k < 1:
            raise ValueError(f"top-k must be >= 1, got {top_k}")
        return self.rejection(threshold, score)

    def _name(self, out: dict[str, np.ndarray], top_k: int, rule: tuple[str, float] | None,
              boxes: Sequence[Box | None]) -> list[Recognition]:
        """The :class:`Recognition` of each row of the model's outputs ``out``, unknown by
        ``rule`` (see :meth:`rejection`)."""
        if self.names_by_centroid:
            return self._recognize_by_centroid(out["features"], top_k, rule, boxes)
        probabilities = softmax(out["logits"])
        scores = open_set_scores(out["logits"], out["features"], self.info.centroids,
                                 self.info.pictures)
        results = []
        for i, probs in enumerate(probabilities):
            order = np.argsort(-probs, kind="stable")[:top_k]
            top = [(self.labels[c], float(probs[c])) for c in order]
            value = float(scores[rule[0]][i]) if rule else None
            known = rule is None or value >= rule[1]
            results.append(Recognition(
                top[0][0] if known else UNKNOWN, known, top, value,
                rule[0] if rule else None, rule[1] if rule else None, boxes[i],
            ))
        return results

    def _recognize_by_centroid(self, features: np.ndarray, top_k: int,
                               rule: tuple[str, float] | None,
                               boxes: Sequence[Box | None]) -> list[Recognition]:
        """Name by the nearest person among trained and enrolled people, by the rule's score
        (the cosine similarity to their centroids, or to their nearest pictures): ``top``
        lists the most similar people with their similarity, and the face is unknown when the
        best similarity is under the threshold."""
        if rule is not None and not SCORES[rule[0]].uses_centroids:
            raise ValueError(f"a model with enrolled people decides by the {CENTROID_SCORE} "
                             f"score, not {rule[0]!r}: leave out --score")
        stored = (self.info.threshold or {}).get("score")
        name = rule[0] if rule else (
            stored if stored in SCORES and SCORES[stored].uses_centroids
            and not self.gallery_names else CENTROID_SCORE)
        similarity = person_similarity(name, features, self.all_centroids(),
                                       self.info.pictures)  # (N, P)
        people = self.people
        results = []
        for i, row in enumerate(similarity):
            order = np.argsort(-row, kind="stable")[:top_k]
            top = [(people[c], float(row[c])) for c in order]
            value = float(row[order[0]])
            known = rule is None or value >= rule[1]
            results.append(Recognition(
                top[0][0] if known else UNKNOWN, known, top, value, name,
                rule[1] if rule else None, boxes[i], SIMILARITY))
        return results

    def face_crops(
        self, photo: Image.Image, detect: bool = True
    ) -> list[tuple[Box | None, Image.Image]]:
        """The faces of a photo as ``(box, crop)`` pairs, largest first (see the fallback rule).

        Without ``detect``, or when the detector finds no face in a picture that looks like a
        face crop, the picture is taken whole only if it is a face
        (:func:`facefold.faces.plausible.face_problem`: noise, flat or gradient pictures are
        not). Raises :class:`NoFaceError` when no face is found.
        """
        detector = load_detector() if detect else None
        if detector is not None:
            faces = detector.detect_faces(photo)
            if faces:
                return [
                    (tuple(float(v) for v in face.box),
                     detector.align_face(photo, face.landmarks, size=self.info.image_size))
                    for face in faces
                ]
        if detect and not looks_like_face_crop(photo):
            why = "no face found" if detector is not None else (
                "the face detector is not installed (pip install 'facefold[faces]')")
            raise NoFaceError(
                f"{why}, and the {photo.width}x{photo.height} picture is not a face crop "
                f"(nearly square, at most {MAX_CROP_SIDE} px): give a photo with a visible "
                "face or a cropped face"
            )
        try:  # never name, verify or enroll a non-face
            problem = plausible.face_problem(photo)
        except ModuleNotFoundError as err:  # no detector to check with: no face is confirmed
            raise NoFaceError(f"cannot check that the picture is a face: {err}") from None
        if problem:
            raise NoFaceError(f"no face in the picture ({problem})")
        return [(None, photo)]

    def recognize_photo(self, photo: Image.Image, top_k: int = 5, detect: bool = True,
                        threshold: float | None = None,
                        score: str | None = None) -> list[Recognition]:
        """Every face of one photo, with its box (see :meth:`face_crops`)."""
        found = self.face_crops(photo, detect)
        return self.recognize([c for _, c in found], top_k, threshold, score,
                              [b for b, _ in found])


def load_detector() -> ModuleType | None:
    """``facefold.faces.detect`` (``detect_faces``, ``align_face``) with its detector built,
    or None when it or its ``faces`` extra (``pip install 'facefold[faces]'``) is missing."""
    try:
        from facefold.faces import detect

        detect.load_detector()  # built once per process; fails here when MTCNN is missing
    except ImportError:
        return None
    return detect
