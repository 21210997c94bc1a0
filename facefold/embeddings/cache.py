"""Embeddings cached by image content: computed once per image, whatever dataset holds it.

An entry is one small ``.npz`` file::

    ROOT/<embedding>/<sha[:2]>/<sha>.npz          the image as stored
    ROOT/<embedding>/<sha[:2]>/<sha>-mirror.npz   its left-right mirror

where ``sha`` is the SHA-256 of the image's JPEG bytes as stored in the
record. It holds the ``embedding``, whether the landmark fit fell back to the
whole image (``fallback``) and the ``version`` of the model that computed it.
An entry of another model version (new weights, new chip parameters) is
ignored and overwritten when recomputed, never used; so is an unreadable
one. Entries are written atomically, so a killed process leaves no half
entry, and processes sharing a cache at most compute an image twice.

``ROOT`` is ``$FACEFOLD_CACHE``, else ``$XDG_CACHE_HOME/facefold``, else
``~/.cache/facefold`` (see :func:`facefold.machine.default_cache_dir`).
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from facefold.atomic import atomic_path


def content_hash(data: bytes) -> str:
    """SHA-256 of an image's stored bytes, 64 lowercase hex digits (the cache key)."""
    return hashlib.sha256(data).hexdigest()


class EmbeddingCache:
    """The entries of one embedding (``name``) computed by model ``version``."""

    def __init__(self, root: str | Path, name: str, version: str) -> None:
        self.folder = Path(root) / name
        self.version = version

    def path(self, sha: str, mirror: bool = False) -> Path:
        """Where the entry of image ``sha`` (or of its mirror) lives."""
        return self.folder / sha[:2] / f"{sha}{'-mirror' if mirror else ''}.npz"

    def get(self, sha: str, mirror: bool = False) -> tuple[np.ndarray, bool] | None:
        """``(embedding, fallback)`` of an entry of this version; None when there is none."""
        try:
            with np.load(self.path(sha, mirror)) as entry:
                if str(entry["version"]) != self.version:
                    return None
                return entry["embedding"].astype(np.float32), bool(entry["fallback"])
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return None  # missing or unreadable: computed again

    def put(self, sha: str, mirror: bool, embedding: np.ndarray, fallback: bool) -> None:
        """Store an entry atomically (replacing one of another version)."""
        with atomic_path(self.path(sha, mirror)) as tmp, tmp.open("wb") as handle:
            np.savez(handle, embedding=np.asarray(embedding, np.float32),
                     fallback=np.bool_(fallback), version=np.str_(self.version))
