"""The faces `facefold label` works on: found, cropped and embedded once, kept in FACES.

::

    FACES/.facefold-label/faces.json      every photo seen (by content) and its faces
    FACES/.facefold-label/vectors.npz     each face's dlib128 descriptor, by face id
    FACES/.facefold-label/crops/ID.png    each face's aligned crop, as `faces crop` writes it

A photo is known by the SHA-256 of its bytes, so a photo renamed, moved or copied into a
second folder is the same photo, its faces the same faces: found, cropped and embedded once,
and never labeled twice. A face's id is ``<photo id>-<k>``: k = 1, 2 … largest first, 0 when
the whole picture is the face (a face crop in which the detector finds no face; the fallback
rule of :func:`facefold.faces.cluster.collect_faces`). Only the photos not seen before are
read on a new start; ``faces.json`` is written last (atomically), so a start killed midway
redoes only its own photos.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facefold import atomic
from facefold.data.images import load_rgb, square_crop
from facefold.faces.cluster import collect_faces
from facefold.faces.crop import _photo_files
from facefold.log import Log

STATE_DIR = ".facefold-label"
INDEX_FILE = "faces.json"
VECTORS_FILE = "vectors.npz"
CROPS_DIR = "crops"
_HASH_CHARS = 16  # of the photo's SHA-256: 64 bits, no collision among a lifetime's photos


@dataclass(frozen=True)
class Face:
    """One face of one photo."""

    id: str
    photo: str  # the photo's path when it was first seen
    name: str  # its file name in a person folder: <photo stem>.png or <stem>_<k>.png
    box: list[float] | None  # x, y, width, height in the photo; None for a whole picture


@dataclass
class FaceStore:
    """Every face seen so far (``faces``), their descriptors and where their crops are."""

    folder: Path  # FACES/.facefold-label
    size: int
    faces: dict[str, Face] = field(default_factory=dict)
    photos: dict[str, list[str]] = field(default_factory=dict)  # photo id -> its face ids
    paths: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> size, mtime, id
    vectors: dict[str, np.ndarray] = field(default_factory=dict)

    def crop_path(self, face_id: str) -> Path:
        return self.folder / CROPS_DIR / f"{face_id}.png"

    def matrix(self, ids: Sequence[str]) -> np.ndarray:
        """The descriptors of ``ids`` as rows (N, 128), float32."""
        if not ids:
            return np.zeros((0, 128), np.float32)
        return np.stack([self.vectors[i] for i in ids]).astype(np.float32)

    def faces_of(self, photo_ids: Sequence[str]) -> list[str]:
        return [f for p in photo_ids for f in self.photos.get(p, [])]


def open_store(folder: str | Path, size: int = 112) -> FaceStore:
    """The store in ``folder`` (FACES/.facefold-label), empty when there is none yet.

    ``ValueError`` when it was made for another crop size (its crops would not match).
    """
    folder = Path(folder)
    store = FaceStore(folder, size)
    index_path = folder / INDEX_FILE
    if not index_path.exists():
        return store
    index = json.loads(index_path.read_text(encoding="utf-8"))
    if index["size"] != size:
        raise ValueError(f"{folder} holds {index['size']}-pixel crops, not {size}: use "
                         f"--size {index['size']} or another FACES folder")
    store.faces = {k: Face(k, **v) for k, v in index["faces"].items()}
    store.photos, store.paths = index["photos"], index["paths"]
    with np.load(folder / VECTORS_FILE) as data:
        store.vectors = dict(zip(data["ids"].tolist(), data["vectors"], strict=True))
    return store


def save_store(store: FaceStore) -> None:
    """Write the descriptors, then the index (the commit point), each atomically."""
    ids = sorted(store.vectors)
    with atomic.atomic_path(store.folder / VECTORS_FILE) as tmp, open(tmp, "wb") as f:
        np.savez(f, ids=np.array(ids, dtype=str), vectors=store.matrix(ids))
    atomic.write_json_atomic(store.folder / INDEX_FILE, {
        "size": store.size,
        "faces": {k: {"photo": v.photo, "name": v.name, "box": v.box}
                  for k, v in store.faces.items()},
        "photos": store.photos,
        "paths": store.paths,
    })


def photo_id(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()[:_HASH_CHARS]


def add_photos(store: FaceStore, photos: str | Path, exclude: Path | None = None,
               min_score: float = 0.9, cache_dir: str | Path | None = None,
               log: Log = print) -> list[str]:
    """Find, crop and embed the faces of the photos under ``photos`` not in ``store`` yet.

    Returns the ids of the photos under ``photos`` now (seen before or not), in file order;
    the store is saved when anything was added. Unreadable files are named in the log and
    tried again on the next start; photos without a face are remembered as such.
    """
    photos = Path(photos).resolve()
    files = _photo_files(photos, exclude=(exclude or photos).resolve())
    ids, new = [], {}
    for path in files:
        stat = path.stat()
        known = store.paths.get(str(path))
        if known and (known["size"], known["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns):
            pid = known["id"]
        else:
            pid = photo_id(path)
            store.paths[str(path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                                      "id": pid}
        ids.append(pid)
        if pid not in store.photos and pid not in new:
            new[pid] = path
    if not new:
        log(f"{len(files)} photos under {photos}, every one seen before")
        return ids
    log(f"{len(files)} photos under {photos}, {len(new)} new: finding their faces")
    store.folder.mkdir(parents=True, exist_ok=True)
    _add(store, photos, new, min_score, cache_dir, log)
    save_store(store)
    return ids


def _add(store: FaceStore, photos: Path, new: dict[str, Path], min_score: float,
         cache_dir: str | Path | None, log: Log) -> None:
    """Collect the faces of the ``new`` photos into ``store`` (crops under ``crops/``)."""
    by_file = {path.relative_to(photos).as_posix(): pid for pid, path in new.items()}
    (store.folder / CROPS_DIR).mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=store.folder))
    try:
        found = collect_faces(photos, stage, size=store.size, min_score=min_score,
                              cache_dir=cache_dir, log=log, files=list(new.values()))
        unreadable = {u["file"] for u in found.unreadable}
        for rel, pid in by_file.items():
            if rel not in unreadable:
                store.photos[pid] = []
        for face, vector in zip(found.faces, found.vectors, strict=True):
            pid = by_file[face.file]
            face_id = f"{pid}-{face.face}"
            if face.face == 0:  # a whole picture: its square, as it was embedded
                square_crop(load_rgb(face.staged), store.size).save(
                    store.crop_path(face_id), format="PNG")
            else:
                os.replace(face.staged, store.crop_path(face_id))
            box = face.detected["box"] if face.detected else None
            store.faces[face_id] = Face(face_id, face.file, Path(face.name).stem + ".png", box)
            store.photos[pid].append(face_id)
            store.vectors[face_id] = np.asarray(vector, np.float32)
        if unreadable:
            log(f"{len(unreadable)} unreadable files skipped: "
                f"{'; '.join(sorted(unreadable)[:5])}")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
