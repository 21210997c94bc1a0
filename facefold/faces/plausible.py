"""Is a picture given as a face crop a face at all? Asked before it is named, verified or
enrolled, so that noise, a flat or a gradient picture is never a known person.

A crop (aligned or not) fills its picture with the face, which is tighter than what the MTCNN
detector of :mod:`facefold.faces.detect` finds in a photo: so the crop gets a margin first (its
edge pixels repeated, :data:`MARGIN` of its side on every side), and a face with a detector
confidence of at least :data:`MIN_SCORE` anywhere in it counts. How the two numbers were
chosen (real crops of celeb21 and ORL against noise, flat and gradient pictures):
docs/deployment.md, "What is guaranteed".
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from facefold.faces import detect

MARGIN = 0.25  # of the crop's longer side, on every side
MIN_SCORE = 0.5  # MTCNN's confidence (0..1)


def with_margin(image: Image.Image, margin: float = MARGIN) -> Image.Image:
    """``image`` in RGB with its edge pixels repeated ``margin`` × its longer side outwards."""
    pixels = np.asarray(image.convert("RGB"))
    pad = round(max(image.size) * margin)
    return Image.fromarray(np.pad(pixels, ((pad, pad), (pad, pad), (0, 0)), mode="edge"))


def face_score(image: Image.Image) -> float:
    """The detector's best confidence for a face in the crop ``image`` (0 when none at all).

    Needs the ``faces`` extra (``ModuleNotFoundError`` naming it otherwise)."""
    faces = detect.detect_faces(with_margin(image), min_score=0.01)
    return max((face.score for face in faces), default=0.0)


def face_problem(image: Image.Image) -> str | None:
    """Why the crop ``image`` is not taken as a face (None when it is)."""
    score = face_score(image)
    if score >= MIN_SCORE:
        return None
    return f"face detector confidence {score:.2f}; a face needs {MIN_SCORE:.2f}"
