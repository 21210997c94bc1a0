"""Many picture files through one model, and the text the CLI prints for them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from facefold.data.images import MIN_PICTURE_SIDE, ImageError, load_rgb
from facefold.predict.predictor import UNKNOWN, NoFaceError, Predictor

# Files decoded at a time by predict_files: bounded memory, one batched model call per chunk.
FILES_PER_CHUNK = 256

# The picture files taken from a folder (identify, enroll, fit --strangers).
PICTURE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".pgm"}


def picture_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, and the pictures inside folders (recursively, sorted)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*")
                            if p.is_file() and p.suffix.lower() in PICTURE_SUFFIXES)
        else:
            found.append(path)
    return found


def predict_files(predictor: Predictor, paths: Sequence[str | Path], top_k: int = 5,
                  detect: bool = False, threshold: float | None = None,
                  score: str | None = None) -> list[dict[str, Any]]:
    """Recognize the faces in picture files, batching the model calls over many files.

    Without ``detect`` each picture is one face crop (square-cropped like a
    dataset image); with it, every face is found (see :meth:`Predictor.face_crops`).
    Returns one ``{"image", "faces": [Recognition.to_dict()], "error"}`` per
    file, in order; a file that cannot be read or holds no face gets an
    ``error`` message naming it instead of stopping the others (no face: ``"face": False``
    as well; a crop that is no face counts, see :meth:`Predictor.face_crops`).
    """

    predictor.rejection(threshold, score)  # a bad score or threshold fails before any work
    results: list[dict[str, Any]] = []
    for start in range(0, len(paths), FILES_PER_CHUNK):
        chunk = [Path(p) for p in paths[start : start + FILES_PER_CHUNK]]
        owners, boxes, crops = [], [], []
        for i, path in enumerate(chunk):
            results.append({"image": str(path), "faces": [], "error": None})
            try:
                photo = load_rgb(path, min_side=MIN_PICTURE_SIDE)
                found = predictor.face_crops(photo, detect)  # a crop must be a face too
            except ImageError as err:
                results[-1]["error"] = str(err)
                continue
            except NoFaceError as err:
                results[-1].update(face=False, error=f"{path}: {err}")
                continue
            for box, crop in found:
                owners.append(start + i)
                boxes.append(box)
                crops.append(crop)
        for owner, face in zip(owners, predictor.recognize(crops, top_k, threshold, score, boxes),
                               strict=True):
            results[owner]["faces"].append(face.to_dict())
    return results


def format_results(results: Sequence[dict[str, Any]]) -> str:
    """The results of :func:`predict_files` as text, one line per face."""
    lines = []
    for result in results:
        if result["error"]:
            lines.append(f"{result['image']}: error: {result['error']}")
        for n, face in enumerate(result["faces"], start=1):
            where = result["image"]
            if face["box"] is not None:
                x, y, w, h = (round(v) for v in face["box"])
                where += f" [face {n} at x={x} y={y} w={w} h={h}]"
            kind = face["top_kind"]
            top = " | ".join(f"{t['name']} {kind} {t[kind]:.3f}" for t in face["top"])
            if face["score_name"] is None:
                lines.append(f"{where}: {top}")
            else:
                sign = ">=" if face["known"] else "<"
                verdict = top if face["known"] else f"{UNKNOWN}; best guesses {top}"
                lines.append(f"{where}: {verdict} ({face['score_name']} {face['score']:.3f} "
                             f"{sign} threshold {face['threshold']:.3f})")
    return "\n".join(lines)
