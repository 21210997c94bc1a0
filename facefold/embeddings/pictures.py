"""Embeddings and aligned chips of pictures to name: what ``predict`` computes per face.

Apart from :mod:`facefold.embeddings.shards` (a dataset's shards, cached, for training) so
that cutting chips imports no TensorFlow: an export holding the embedding's network, run by
the LiteRT interpreter, is given chips without TensorFlow in the process.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facefold.config import EMBEDDING_DIMS
from facefold.embeddings import dlib128


def embedder(name: str) -> dlib128.Dlib128:
    """The loaded model of embedding ``name`` (one of :data:`~.dlib128.NAMES`);
    ``ModuleNotFoundError`` naming the pip command when its extra is missing."""
    # dlib128 through load() alone: the seam where tests put a fake embedder in its place.
    return dlib128.load() if dlib128.check_name(name) == dlib128.NAME else dlib128.load(name=name)


def embed_images(
    images: np.ndarray, name: str, count: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Uncached embeddings of RGB uint8 images (N, S, S, 3): ``(N, count, D)`` float32 views
    (the image, then its mirror) and (N,) bool fallbacks. What ``predict`` runs on a picture."""
    return _views(embedder(name).embed, images, count)


def chip_images(
    images: np.ndarray, name: str, count: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """The aligned chips of RGB uint8 images (N, S, S, 3) for embedding ``name``:
    ``(N, count, C, C, 3)`` uint8 views (the image's chip, then its mirror's) and (N,) bool
    fallbacks; what an export of a head (chips in, names out) is given. The mirror's chip is
    cut from the mirrored image, as :func:`embed_images` does: the landmark fit is not
    mirror-symmetric, so the mirror of the chip would be another view."""
    return _views(embedder(name).chips, images, count)


def _views(compute: Callable[..., tuple[np.ndarray, np.ndarray]], images: np.ndarray,
           count: int) -> tuple[np.ndarray, np.ndarray]:
    """``compute(images, mirror=...)`` of view 0 (the images) and view 1 (their mirrors) up to
    ``count`` views, stacked on axis 1, and whether any view of an image fell back."""
    done = [compute(images, mirror=bool(view)) for view in range(count)]
    return np.stack([v for v, _ in done], axis=1), np.any([f for _, f in done], axis=0)


# The ``input`` of an embedding entry whose export holds the embedding's network: chips.
CHIPS = "chips"


def takes_chips(meta: Any) -> bool:
    """Whether an embedding entry is an export's that takes chips (its network inside)."""
    return isinstance(meta, dict) and meta.get("input") == CHIPS


def check_embedding_meta(meta: Any, where: Path, installed: bool = True) -> dict[str, Any]:
    """An embedding entry (of a run or an export), checked field by field and, with
    ``installed``, against the installed embedding model: a head must get the embeddings it
    learned on — those of its recorded model version or of a version of the same weights
    (:func:`facefold.embeddings.dlib128.same_weights_versions`: a head trained on dlib's own
    descriptor runs on the Keras network)."""
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: field 'embedding' must be an object, got {meta!r}")
    name, version = meta.get("name"), meta.get("model_version")
    if name not in EMBEDDING_DIMS:
        raise ValueError(f"{where}: field 'embedding.name' must be one of "
                         f"{', '.join(EMBEDDING_DIMS)}, got {name!r}")
    views, dim = meta.get("views"), meta.get("dim")
    if views not in (1, 2) or dim != EMBEDDING_DIMS[name]:
        raise ValueError(f"{where}: fields 'embedding.views' (1 or 2) and 'embedding.dim' "
                         f"({EMBEDDING_DIMS[name]}) are {views!r} and {dim!r}")
    if takes_chips(meta) and not _positive(meta.get("chip_size")):
        raise ValueError(f"{where}: field 'embedding.chip_size' must be a positive integer, "
                         f"got {meta.get('chip_size')!r}")
    if not installed:
        return meta
    model = embedder(name)
    if version not in model.equivalent_versions:
        raise ValueError(
            f"{where} was trained on {name} embeddings of model version "
            f"{str(version)[:12]}…, but the installed weights give version "
            f"{model.version[:12]}…: train the head again on this version"
        )
    return meta


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def chip_inputs(meta: dict[str, Any], where: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Pictures -> chips (dlib's landmark fit), for an export holding the network. The
    installed chips are checked at the first picture, not when loading: given chips
    directly, such an export runs without the extra that cuts them."""
    checked: list[dict[str, Any]] = []

    def chips(images: np.ndarray) -> np.ndarray:
        if not checked:
            checked.append(check_embedding_meta(meta, where))
        return chip_images(images, meta["name"], meta["views"])[0]

    return chips
