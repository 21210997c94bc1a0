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
:mod:`facefold.evaluate.openset`). An embedding head embeds the picture first.

"Unknown": when the model folder holds a threshold (``threshold.json``, written
by ``facefold cv --unknown-people``), or a threshold is given, a face whose
open-set score is below it is answered as :data:`UNKNOWN`.

Whole photos (``detect=True``): every face that
``facefold.faces.detect.detect_faces`` finds is aligned to the dataset's image
size with ``align_face`` and recognized, with its box. **Fallback rule**: when
that detector is not installed or finds no face, the whole picture is taken as
one face crop only if it looks like one: nearly square (sides within 10 %) and
at most :data:`MAX_CROP_SIDE` pixels on its longer side. Otherwise
:class:`NoFaceError` is raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from facefold import runs
from facefold.data.images import square_crop
from facefold.evaluate.openset import DEFAULT_SCORE, SCORES, open_set_scores
from facefold.models.inference import softmax
from facefold.predict.loading import LoadedModel, load_model_folder

UNKNOWN = "unknown"
# The fallback rule: a picture this small and nearly square is taken as one face crop.
MAX_CROP_SIDE = 512
SQUARE_TOLERANCE = 0.10
# Images per inference call: bounded memory, and big enough to amortize the call.
BATCH_SIZE = 64

Box = tuple[float, float, float, float]  # x, y, width, height in the photo's pixels


class NoFaceError(ValueError):
    """No face was found in a photo (and the photo is not itself a face crop)."""


@dataclass(frozen=True)
class Recognition:
    """One recognized face.

    ``name`` is the best person, or :data:`UNKNOWN` when the open-set
    ``score`` is below ``threshold``; ``top`` the ``(name, probability)`` of the
    most likely people; ``box`` where the face is in the photo (None when the
    whole picture was the crop).
    """

    name: str
    known: bool
    top: list[tuple[str, float]]
    score: float | None = None
    score_name: str | None = None
    threshold: float | None = None
    box: Box | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "known": self.known,
            "top": [{"name": n, "probability": p} for n, p in self.top],
            "score": self.score,
            "score_name": self.score_name,
            "threshold": self.threshold,
            "box": list(self.box) if self.box is not None else None,
        }


class Predictor:
    """A model loaded once; names faces in batches. Use :meth:`load`.

    ``members`` are the member predictors of an ensemble by preset name (empty otherwise).
    """

    def __init__(self, loaded: LoadedModel, batch_size: int = BATCH_SIZE) -> None:
        self.info = loaded.info
        self._infer = loaded.infer
        self.keras_model = loaded.keras_model  # the inference model (runs, .keras exports)
        self.batch_size = batch_size
        self.members = {name: Predictor(member, batch_size)
                        for name, member in loaded.members.items()}

    @classmethod
    def load(cls, path: str | Path) -> Predictor:
        """Load a run folder or an export folder (:func:`~.loading.load_model_folder`);
        errors name the missing or bad file."""
        return cls(load_model_folder(path))

    @property
    def labels(self) -> list[str]:
        return self.info.labels

    # ------------------------------------------------------------ arrays in, numbers out

    def to_array(self, image: Image.Image) -> np.ndarray:
        """A picture as the model's uint8 input (S, S, C): square crop to the image size, gray
        for a 1-channel model (ITU-R 601 luma, as the JPEG decoder of the shards)."""
        square = square_crop(image, self.info.image_size)
        if self.info.channels == 1:
            return np.asarray(square.convert("L"))[..., None]
        return np.asarray(square.convert("RGB"))

    def outputs_for_arrays(self, arrays: np.ndarray) -> dict[str, np.ndarray]:
        """``{"logits": (N, C), "features": (N, D)}`` for uint8 images (N, S, S, channels)."""
        expected = (self.info.image_size, self.info.image_size, self.info.channels)
        if arrays.ndim != 4 or arrays.shape[1:] != expected:
            raise ValueError(f"images must be (N, {', '.join(map(str, expected))}), "
                             f"got {arrays.shape}")
        parts: dict[str, list[np.ndarray]] = {"logits": [], "features": []}
        for start in range(0, len(arrays), self.batch_size):
            out = self._infer(np.ascontiguousarray(arrays[start : start + self.batch_size]))
            for key in parts:
                parts[key].append(np.asarray(out[key], np.float32))
        if not len(arrays):
            return {key: np.zeros((0, 0), np.float32) for key in parts}
        return {key: np.concatenate(values) for key, values in parts.items()}

    def outputs(self, images: Sequence[Image.Image]) -> dict[str, np.ndarray]:
        """Logits and features of face crops (any size; see :meth:`to_array`)."""
        shape = (0, self.info.image_size, self.info.image_size, self.info.channels)
        arrays = np.stack([self.to_array(im) for im in images]) if images else np.zeros(
            shape, np.uint8)
        return self.outputs_for_arrays(arrays)

    def predict_crops(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Class probabilities (N, classes) of face crops, in batches."""
        return softmax(self.outputs(images)["logits"])

    # ------------------------------------------------------------ names

    def rejection(self, threshold: float | None = None,
                  score: str | None = None) -> tuple[str, float] | None:
        """The ``(score name, threshold)`` that decides "unknown", or None (never unknown).

        ``score`` defaults to the stored one, else :data:`DEFAULT_SCORE`;
        ``threshold`` to the stored threshold of that score.
        """
        stored = self.info.threshold or {}
        score = score or stored.get("score") or DEFAULT_SCORE
        if score not in SCORES:
            raise ValueError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")
        if threshold is None:
            threshold = stored.get("thresholds", {}).get(score)
        if threshold is None:
            return None
        if score == "cosine" and self.info.centroids is None:
            raise ValueError(
                f"the cosine score needs {self.info.source / runs.CENTROIDS_FILE} (written by "
                "`facefold cv --unknown-people`); choose --score msp, max_logit or energy"
            )
        return score, float(threshold)

    def recognize(self, images: Sequence[Image.Image], top_k: int = 5,
                  threshold: float | None = None, score: str | None = None,
                  boxes: Sequence[Box | None] | None = None) -> list[Recognition]:
        """Name each face crop: top-``top_k`` people, and "unknown" below the threshold.

        ``boxes`` (one per crop) are copied into the results.
        """
        if top_k < 1:
            raise ValueError(f"top-k must be >= 1, got {top_k}")
        rule = self.rejection(threshold, score)
        if not images:
            return []
        out = self.outputs(images)
        probabilities = softmax(out["logits"])
        scores = open_set_scores(out["logits"], out["features"], self.info.centroids)
        boxes = boxes or [None] * len(images)
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

    def face_crops(
        self, photo: Image.Image, detect: bool = True
    ) -> list[tuple[Box | None, Image.Image]]:
        """The faces of a photo as ``(box, crop)`` pairs, largest first (see the fallback rule).

        Raises :class:`NoFaceError` when no face is found and the photo is not a face crop.
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
        if looks_like_face_crop(photo):
            return [(None, photo)]
        why = "no face found" if detector is not None else (
            "the face detector is not installed (pip install 'facefold[faces]')")
        raise NoFaceError(
            f"{why}, and the {photo.width}x{photo.height} picture is not a face crop "
            f"(nearly square, at most {MAX_CROP_SIDE} px): give a photo with a visible face "
            "or a cropped face"
        )

    def recognize_photo(self, photo: Image.Image, top_k: int = 5, detect: bool = True,
                        threshold: float | None = None,
                        score: str | None = None) -> list[Recognition]:
        """Every face of one photo, with its box (see :meth:`face_crops`)."""
        found = self.face_crops(photo, detect)
        return self.recognize([c for _, c in found], top_k, threshold, score,
                              [b for b, _ in found])


def looks_like_face_crop(image: Image.Image) -> bool:
    """The fallback rule: sides within 10 % of each other and at most 512 px."""
    longer, shorter = max(image.size), min(image.size)
    return longer <= MAX_CROP_SIDE and longer - shorter <= SQUARE_TOLERANCE * longer


def load_detector() -> ModuleType | None:
    """``facefold.faces.detect`` (``detect_faces``, ``align_face``) with its detector built,
    or None when it or its ``faces`` extra (``pip install 'facefold[faces]'``) is missing."""
    try:
        from facefold.faces import detect

        detect.load_detector()  # built once per process; fails here when MTCNN is missing
    except ImportError:
        return None
    return detect
