"""A labeling session's files made by hand, for the tests of ``facefold label``.

:func:`make_photos` writes PHOTOS (noise pictures, one face each) and FACES/.facefold-label
as :func:`facefold.label.store.add_photos` would have left it after finding their faces:
so ``facefold label PHOTOS --out FACES`` starts at once, with no detector and no dlib
descriptor to compute. Each person's descriptors are a random direction plus small noise,
so Chinese whispers groups them exactly by person (their cosine distance to another person's
is about 1, to their own person's about 0.01, far under the 0.0625 of the grouping).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from facefold.label.store import STATE_DIR, Face, FaceStore, photo_id, save_store


@dataclass
class Photos:
    photos: Path
    faces: Path  # FACES
    truth: dict[str, str]  # face id -> person
    store: FaceStore
    directions: dict[str, np.ndarray] = field(default_factory=dict)

    def ids_of(self, person: str) -> list[str]:
        return sorted(f for f, p in self.truth.items() if p == person)


def make_photos(root: Path, people: dict[str, int], seed: int = 0, size: int = 32) -> Photos:
    """``people`` = {name: number of photos}; photos ``PHOTOS/<name>_<k>.png`` (the name is
    in the file name for the reader of a failing test only: the session never sees it)."""
    photos, faces = root / "photos", root / "faces"
    photos.mkdir(parents=True)
    store = FaceStore(faces / STATE_DIR, size)
    (store.folder / "crops").mkdir(parents=True)
    kit = Photos(photos, faces, {}, store)
    add_photos(kit, people, np.random.default_rng(seed))
    return kit


def add_photos(kit: Photos, people: dict[str, int], rng: np.random.Generator,
               prefix: str = "") -> None:
    """Write ``people``'s photos (``PHOTOS/<prefix><name>_<k>.png``) and their faces into the
    store; a person seen before keeps their direction, so new photos are of the same person."""
    store = kit.store
    for name, count in people.items():
        direction = kit.directions.setdefault(name, rng.normal(size=128))
        for k in range(1, count + 1):
            path = kit.photos / f"{prefix}{name}_{k}.png"
            # Blocks of colour rather than pixel noise: distinct to the near-duplicate check
            blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(blocks).resize((store.size, store.size), Image.NEAREST).save(path)
            pid = photo_id(path)
            stat = path.stat()
            store.paths[str(path.resolve())] = {"size": stat.st_size,
                                                "mtime_ns": stat.st_mtime_ns, "id": pid}
            face_id = f"{pid}-0"
            store.photos[pid] = [face_id]
            store.faces[face_id] = Face(face_id, path.name, f"{path.stem}.png", None)
            vector = direction / np.linalg.norm(direction) + rng.normal(scale=0.01, size=128)
            store.vectors[face_id] = vector.astype(np.float32)
            Image.open(path).save(store.crop_path(face_id))
            kit.truth[face_id] = name
    save_store(store)


def folders(faces: Path) -> dict[str, list[str]]:
    """``{person: sorted file names}`` of the person folders in FACES (hidden ones left out)."""
    return {p.name: sorted(f.name for f in p.iterdir() if not f.name.startswith("."))
            for p in sorted(faces.iterdir()) if p.is_dir() and not p.name.startswith(".")}
