"""Group unlabeled face photos by identity: one folder per person, to be named by hand.

``PHOTOS`` (any folder tree of photos or face crops) becomes::

    OUT/group-001/<source file name>   the faces of one person, most typical first
    OUT/group-002/…                    groups largest first
    OUT/unassigned/                    faces in groups smaller than min_size
    OUT/contact_sheet.png              one row per group: its name, a few of its faces
    OUT/index.html                     every group with every face (relative links)
    OUT/cluster_report.json            members (source file, box), settings, counts, skipped

Each face is found and aligned as by ``faces crop`` (MTCNN, five-point template, ``size``
pixels); a picture with no face found that looks like a face crop (the fallback rule of
:func:`facefold.data.images.looks_like_face_crop`) is one face, whole. Faces are
embedded with dlib128 (:mod:`facefold.embeddings.dlib128`), cached by their pixels, and
grouped by Chinese whispers or average-linkage agglomerative clustering on the cosine
distance of the descriptors (1 - cosine similarity). :func:`score_grouping` measures a
grouping against known labels; :func:`sweep` measures a grid of thresholds on a folder of
known people.
"""

from __future__ import annotations

import html
import math
import os
import time
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import facefold
from facefold import atomic
from facefold.data.images import ImageError, load_rgb, looks_like_face_crop, square_crop
from facefold.data.inspect import write_montage
from facefold.embeddings import dlib128
from facefold.embeddings.cache import EmbeddingCache, content_hash
from facefold.embeddings.pictures import embedder
from facefold.embeddings.shards import CHUNK
from facefold.faces import detect
from facefold.faces.crop import _crop_names, _describe, _names, _photo_files, _unique
from facefold.locks import locks_folders
from facefold.log import Log
from facefold.machine import default_cache_dir
from facefold.machine import describe as describe_machine

METHODS = ("chinese-whispers", "average")
DEFAULT_METHOD = "chinese-whispers"
# Cosine distance between dlib128 descriptors below which faces join (Chinese whispers: an
# edge of the graph; average linkage: the mean distance between two groups). Chosen by
# sweep() with the folder names hidden (min_size 2): the threshold with the best worst ARI
# over celeb21 and ORL, faces detected / taken whole (--crops); the sweep's tables and
# commands: docs/cluster-faces.md, "Measured: celeb21 and ORL with the labels hidden".
# Cosine, not Euclidean, distance: the descriptors' lengths vary with the picture, not only
# the person, so no Euclidean threshold that suits celeb21 keeps ORL's people apart.
DEFAULT_THRESHOLDS = {"chinese-whispers": 0.0625, "average": 0.085}
SWEEP_THRESHOLDS = (0.05, 0.055, 0.06, 0.0625, 0.065, 0.07, 0.075, 0.08, 0.085, 0.09, 0.095)
# A group of fewer faces is no group: one face alone names nobody.
DEFAULT_MIN_SIZE = 2

UNASSIGNED = "unassigned"
REPORT_FILE = "cluster_report.json"
SHEET_FILE = "contact_sheet.png"
INDEX_FILE = "index.html"
SHEET_FACES = 8  # faces per row of the contact sheet, most typical first
_STAGED = ".faces"  # inside the staging folder: every face before it has a group
_PROGRESS_EVERY = 100  # pictures between progress lines


@dataclass(frozen=True)
class FaceCrop:
    """One face of one picture, as clustered."""

    file: str  # the picture, relative to PHOTOS
    face: int  # 1, 2 … in the picture, largest first; 0 = the whole picture is the face
    name: str  # file name in its group folder
    detected: dict[str, Any] | None  # box, score, landmarks; None for a whole picture
    staged: Path | None  # where it waits for its group (None when nothing is written)


@dataclass
class Collected:
    """The faces of a folder of pictures, embedded, and the pictures that gave none."""

    files: int
    faces: list[FaceCrop]
    vectors: np.ndarray  # (N, 128) float32
    fallback: np.ndarray  # (N,) bool: dlib's landmark fit failed, the whole crop was the chip
    unreadable: list[dict[str, str]] = field(default_factory=list)
    no_face: list[str] = field(default_factory=list)
    computed: int = 0  # faces not found in the embedding cache
    seconds: dict[str, float] = field(default_factory=dict)


@locks_folders("out")
def cluster_faces(
    photos: str | Path,
    out: str | Path,
    method: str = DEFAULT_METHOD,
    threshold: float | None = None,
    min_size: int = DEFAULT_MIN_SIZE,
    size: int = 112,
    min_score: float = 0.9,
    crops: bool = False,
    overwrite: bool = False,
    labels_from_folders: bool = False,
    cache_dir: str | Path | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Group the faces of every picture under ``photos`` by identity into folders under ``out``.

    Every non-hidden file below ``photos`` is tried (see the module docstring for what
    ``out`` then holds). ``method`` is one of :data:`METHODS`; ``threshold`` the cosine
    distance below which faces join (default: :data:`DEFAULT_THRESHOLDS` of the method);
    groups of fewer than ``min_size`` faces go to ``unassigned/``. ``crops=True`` takes every
    picture whole as one face crop (no detection, no ``faces`` extra). ``labels_from_folders``
    scores the grouping against each picture's top folder under ``photos`` (ARI, purity,
    completeness; see :func:`score_grouping`), which the clustering never sees.

    ``out`` is built in a hidden sibling folder and renamed into place at the end, so it is
    never half written. A non-empty ``out`` is refused unless ``overwrite`` and it holds an
    earlier ``cluster_report.json``. Unreadable files and pictures without a face are
    listed in the report, not fatal. Returns the report. Raises ``ValueError`` for a bad
    parameter, ``FileNotFoundError`` / ``FileExistsError`` for the folders, and
    ``ModuleNotFoundError`` naming the pip command when dlib (or MTCNN) is missing.
    """
    threshold = _check_params(method, threshold, min_size, size, min_score)
    photos, out = Path(photos).resolve(), Path(out).resolve()
    atomic.restore_interrupted_swap(out)  # a run killed between the two renames of a swap
    _check_folders(photos, out, overwrite)
    atomic.remove_stale_temporaries(out)  # left by a killed run
    with atomic.staging_folder(out) as stage:
        found = collect_faces(photos, stage, exclude=out, size=size, min_score=min_score,
                              crops=crops, cache_dir=cache_dir, log=log)
        started = time.perf_counter()
        labels = cluster_embeddings(found.vectors, method, threshold)
        groups, unassigned = group_faces(labels, unit_vectors(found.vectors), min_size)
        found.seconds["cluster"] = time.perf_counter() - started
        report = _report(photos, out, found, method=method, threshold=threshold,
                         min_size=min_size, size=size, min_score=min_score, crops=crops)
        report["groups"], report["unassigned"] = _place_all(stage, found, groups, unassigned)
        if labels_from_folders:
            report["evaluation"] = score_grouping(folder_labels(found.faces), groups,
                                                  len(found.faces))
        _write_sheet(stage, report)
        _write_index(stage, report)
        atomic.write_json_atomic(stage / REPORT_FILE, report)
        atomic.swap_in(stage, out)  # the old out is then in stage, removed with it
    _log_summary(log, report, out)
    return report


def _check_params(method: str, threshold: float | None, min_size: int, size: int,
                  min_score: float) -> float:
    """The threshold to use; ``ValueError`` naming the first parameter out of range."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    threshold = DEFAULT_THRESHOLDS[method] if threshold is None else float(threshold)
    if not 0 < threshold <= 2:
        raise ValueError(f"threshold must be a cosine distance in (0, 2], got {threshold}")
    if min_size < 1:
        raise ValueError(f"min_size must be at least 1 face, got {min_size}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    if not 0 < min_score <= 1:
        raise ValueError(f"min_score must be in (0, 1], got {min_score}")
    return threshold


def _check_folders(photos: Path, out: Path, overwrite: bool) -> None:
    """Refuse, before any work, what would mix, lose or half-replace a folder."""
    if not photos.is_dir():
        raise FileNotFoundError(f"photo folder {photos} does not exist")
    if out == photos or out in photos.parents:
        raise ValueError(f"OUT ({out}) must not be PHOTOS or hold it: it is replaced whole")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"OUT {out} exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"OUT {out} is not empty; choose another folder, or pass "
                              "--overwrite to replace an earlier `faces cluster` output")
    if not (out / REPORT_FILE).is_file():
        raise FileExistsError(f"OUT {out} holds no {REPORT_FILE}, so it is not an earlier "
                              "`faces cluster` output: not replaced, even with --overwrite")


def collect_faces(
    photos: str | Path,
    stage: Path | None = None,
    exclude: Path | None = None,
    size: int = 112,
    min_score: float = 0.9,
    crops: bool = False,
    cache_dir: str | Path | None = None,
    log: Log = print,
    files: Sequence[Path] | None = None,
) -> Collected:
    """Find, align and embed every face of every picture under ``photos`` (see the module).

    Each face is staged as a file in ``stage/.faces/`` (an aligned crop as PNG, a whole
    picture hard-linked or copied) unless ``stage`` is None. ``exclude`` is a folder
    below ``photos`` left out. Embeddings are looked up in the cache (``cache_dir``, default
    :func:`~facefold.machine.default_cache_dir`) by the face's pixels first. ``files``
    (pictures below ``photos``) takes only those pictures instead of every one.
    """
    given, photos = Path(photos), Path(photos).resolve()
    if files is None:
        files = _photo_files(photos, exclude=Path(exclude).resolve() if exclude else photos)
    files = [_below(photos, given, Path(f)) for f in files]
    model = embedder(dlib128.NAME)  # fails here, before any work, without the dlib extra
    if not crops:
        _load_detector()
    log(f"looking for faces in {len(files)} files under {photos}")
    batches = _Embedder(model, EmbeddingCache(cache_dir or default_cache_dir(), model.name,
                                              model.version))
    found = Collected(len(files), [], np.zeros((0, model.dim), np.float32), np.zeros(0, bool))
    started = time.perf_counter()
    for number, path in enumerate(files, start=1):
        for face, pixels in _picture_faces(path, photos, stage, found, size=size,
                                           min_score=min_score, detector=not crops):
            found.faces.append(face)
            batches.add(pixels)
        if number % _PROGRESS_EVERY == 0:
            log(f"{number}/{len(files)} pictures, {len(found.faces)} faces so far")
    found.vectors, found.fallback = batches.result()
    found.computed = batches.computed
    found.seconds = {"faces": time.perf_counter() - started, "embedding": batches.seconds}
    return found


def _below(photos: Path, given: Path, file: Path) -> Path:
    """``file`` as a path below ``photos`` (resolved), whether it was named below ``photos``
    as given or as resolved; not resolved itself, since a picture may be a symbolic link to
    a file elsewhere (its name below ``photos`` is what the results report)."""
    file = file.absolute()
    for root in (given.absolute(), photos):
        if file.is_relative_to(root):
            return photos / file.relative_to(root)
    return file.resolve()


def _load_detector() -> None:
    """Build MTCNN now; without it, say what to install, or to pass --crops."""
    try:
        detect.load_detector()
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(f"{err}; or, when the pictures are face crops already, "
                                  "--crops takes each one whole", name=err.name) from err


def _picture_faces(
    path: Path, photos: Path, stage: Path | None, found: Collected, *, size: int,
    min_score: float, detector: bool
) -> list[tuple[FaceCrop, np.ndarray]]:
    """The faces of one picture with their pixels (S, S, 3), staged; a picture that gives
    none is recorded in ``found`` as unreadable or without a face."""
    rel = path.relative_to(photos).as_posix()
    try:
        img = load_rgb(path)
    except ImageError as err:
        found.unreadable.append({"file": rel, "reason": str(err).removeprefix(f"{path}: ")})
        return []
    crops = _face_crops(img, size=size, min_score=min_score, detector=detector)
    if not crops:
        found.no_face.append(rel)
        return []
    whole = crops[0][0] is None
    names = [path.name] if whole else _crop_names(path.stem, len(crops))
    faces = []
    for k, ((face, crop), name) in enumerate(zip(crops, names, strict=True), start=1):
        staged = None
        if stage is not None:
            staged = stage / _STAGED / f"{len(found.faces) + k - 1:07d}{Path(name).suffix}"
            _stage(staged, path if whole else crop)
        faces.append((FaceCrop(rel, 0 if whole else k, name,
                               None if whole else _describe(face), staged), np.asarray(crop)))
    return faces


def _face_crops(
    img: Image.Image, *, size: int, min_score: float, detector: bool
) -> list[tuple[detect.Face | None, Image.Image]]:
    """Every detected face aligned to ``size``×``size``, largest first; else the picture's
    centre square as one face (``face`` None) when it looks like a face crop or ``detector``
    is off; else nothing."""
    faces = detect.detect_faces(img, min_score=min_score) if detector else []
    if faces:
        return [(face, detect.align_face(img, face.landmarks, size)) for face in faces]
    if not detector or looks_like_face_crop(img):
        return [(None, square_crop(img, size))]
    return []


def _stage(target: Path, source: Path | Image.Image) -> None:
    """Write an aligned crop as PNG, or link (else copy) a whole picture, to ``target``."""
    target.parent.mkdir(exist_ok=True)
    if isinstance(source, Path):
        atomic.link_or_copy(source, target)
    else:
        source.save(target, format="PNG")


class _Embedder:
    """dlib128 descriptors of face crops, added one by one and computed in chunks of
    :data:`~facefold.embeddings.shards.CHUNK`; each looked up in the cache by its pixels."""

    def __init__(self, model: dlib128.Dlib128, cache: EmbeddingCache) -> None:
        self.model, self.cache = model, cache
        self.vectors: list[np.ndarray | None] = []
        self.fallback: list[bool] = []
        self.pending: list[tuple[int, str, np.ndarray]] = []  # index, cache key, pixels
        self.computed, self.seconds = 0, 0.0

    def add(self, pixels: np.ndarray) -> None:
        key = pixel_key(pixels)
        entry = self.cache.get(key)
        self.vectors.append(None if entry is None else entry[0])
        self.fallback.append(False if entry is None else entry[1])
        if entry is None:
            self.pending.append((len(self.vectors) - 1, key, pixels))
            if len(self.pending) >= CHUNK:
                self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        started = time.perf_counter()
        vectors, failed = self.model.embed(np.stack([p for _, _, p in self.pending]))
        for (i, key, _), vector, bad_fit in zip(self.pending, vectors, failed, strict=True):
            self.cache.put(key, False, vector, bool(bad_fit))
            self.vectors[i], self.fallback[i] = vector, bool(bad_fit)
        self.computed += len(self.pending)
        self.seconds += time.perf_counter() - started
        self.pending = []

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors (N, D) float32, fallback (N,) bool)`` of everything added."""
        self.flush()
        if not self.vectors:
            return np.zeros((0, self.model.dim), np.float32), np.zeros(0, bool)
        return np.stack(self.vectors).astype(np.float32), np.array(self.fallback, bool)


def pixel_key(pixels: np.ndarray) -> str:
    """The embedding-cache key of a face crop: SHA-256 of its shape and RGB bytes (a face cut
    from a photo has no stored bytes of its own, and equal pixels embed equally)."""
    pixels = np.ascontiguousarray(pixels, np.uint8)
    return content_hash(f"rgb{pixels.shape}".encode() + pixels.tobytes())


def unit_vectors(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` (N, D) scaled to length 1 (float64); a zero vector stays zero."""
    vectors = np.asarray(vectors, np.float64)
    lengths = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(lengths > 0, lengths, 1.0)


def cluster_embeddings(vectors: np.ndarray, method: str, threshold: float) -> np.ndarray:
    """Cluster labels 0, 1 … (N,) of embeddings (N, D) by cosine distance (1 - cos).

    ``chinese-whispers``: dlib's Chinese whispers on the graph joining faces closer than
    ``threshold`` (as Euclidean distance sqrt(2·threshold) of the unit vectors, the same
    thing). ``average``: agglomerative clustering with average linkage (SciPy), merging
    while the mean distance between two clusters is at most ``threshold``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    units = unit_vectors(vectors)
    if len(units) < 2:
        return np.zeros(len(units), int)
    if method == "chinese-whispers":
        dlib = dlib128._import_dlib()
        found = dlib.chinese_whispers_clustering([dlib.vector(v.tolist()) for v in units],
                                                 math.sqrt(2 * threshold))
        return np.unique(np.asarray(found), return_inverse=True)[1]
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(units, method="average", metric="cosine")
    return fcluster(tree, t=threshold, criterion="distance") - 1


def group_faces(
    labels: np.ndarray, vectors: np.ndarray, min_size: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """``(groups, unassigned)``: the clusters of at least ``min_size`` faces as index arrays,
    largest first (ties: earliest face first), each ordered most typical first (closest to
    its mean embedding); and the indices of the other faces, in input order."""
    labels = np.asarray(labels)
    members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    big = sorted((m for m in members if len(m) >= min_size), key=lambda m: (-len(m), m[0]))
    groups = []
    for m in big:
        distance = np.linalg.norm(vectors[m] - vectors[m].mean(axis=0), axis=1)
        groups.append(m[np.argsort(distance, kind="stable")])
    small = [m for m in members if len(m) < min_size]
    return groups, np.sort(np.concatenate(small)) if small else np.zeros(0, int)


def partition(groups: Sequence[np.ndarray], count: int) -> np.ndarray:
    """Cluster labels (count,) of a grouping: group k's faces get k, and every face in no
    group a label of its own (an unassigned face is claimed to be like no other)."""
    labels = np.arange(len(groups), len(groups) + count)
    for k, members in enumerate(groups):
        labels[np.asarray(members, int)] = k
    return labels


def adjusted_rand_index(truth: Sequence, predicted: Sequence) -> float:
    """Hubert and Arabie's adjusted Rand index of two labelings of the same items.

    1.0 for the same partition (whatever the label names), about 0 for a random one,
    negative for worse than random. Both all-one-cluster or both all-singletons: 1.0.
    """
    if len(truth) != len(predicted):
        raise ValueError(f"labelings differ in length: {len(truth)} and {len(predicted)}")
    _, a = np.unique(np.asarray(truth), return_inverse=True)
    _, b = np.unique(np.asarray(predicted), return_inverse=True)
    table = np.zeros((a.max(initial=-1) + 1, b.max(initial=-1) + 1), np.int64)
    np.add.at(table, (a, b), 1)

    def pairs(counts: np.ndarray) -> float:
        return float((counts * (counts - 1) // 2).sum())

    both, rows, cols = pairs(table), pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    total = len(truth) * (len(truth) - 1) / 2
    expected = rows * cols / total if total else 0.0
    best = (rows + cols) / 2
    return 1.0 if best == expected else (both - expected) / (best - expected)


def score_grouping(truth: Sequence[str], groups: Sequence[np.ndarray], count: int) -> dict:
    """How well ``groups`` (index arrays into ``count`` faces) match the labels ``truth``.

    - ``ari``: :func:`adjusted_rand_index` of ``truth`` and :func:`partition` (every
      unassigned face alone);
    - ``purity``: of the faces in groups, the share that are their group's majority person;
    - ``completeness``: of all faces, the share in the group that holds most of their
      person's faces (unassigned faces count as misses), i.e. what naming each person's
      biggest group gets right;
    - ``people``, ``groups``, ``grouped``, ``unassigned``: counts.
    """
    truth = np.asarray(truth)
    grouped = sum(len(m) for m in groups)
    majority = sum(Counter(truth[m]).most_common(1)[0][1] for m in groups if len(m))
    best: dict[str, int] = {}
    for m in groups:
        for person, n in Counter(truth[m]).items():
            best[person] = max(best.get(person, 0), n)
    return {
        "ari": round(adjusted_rand_index(truth, partition(groups, count)), 4),
        "purity": round(majority / grouped, 4) if grouped else None,
        "completeness": round(sum(best.values()) / count, 4) if count else None,
        "people": len(set(truth.tolist())),
        "groups": len(groups),
        "grouped": grouped,
        "unassigned": count - grouped,
    }


def folder_labels(faces: Sequence[FaceCrop]) -> list[str]:
    """Each face's top folder under PHOTOS (``PHOTOS/<person>/…``), ``"."`` for loose files."""
    return [face.file.split("/")[0] if "/" in face.file else "." for face in faces]


def _place_all(
    stage: Path, found: Collected, groups: list[np.ndarray], unassigned: np.ndarray
) -> tuple[list[dict], list[dict]]:
    """Move every staged face into its group folder; the report's groups and unassigned."""
    width = max(3, len(str(len(groups))))
    taken: set[Path] = set()
    report = []
    for k, members in enumerate(groups, start=1):
        name = f"group-{k:0{width}d}"
        report.append({"name": name, "faces": len(members),
                       "members": [_place(stage, name, found, i, taken) for i in members]})
    (stage / UNASSIGNED).mkdir()
    rest = [_place(stage, UNASSIGNED, found, i, taken) for i in unassigned]
    if (stage / _STAGED).exists():
        (stage / _STAGED).rmdir()
    return report, rest


def _place(stage: Path, folder: str, found: Collected, index: int, taken: set[Path]) -> dict:
    """Move face ``index`` into ``stage/folder`` under its name (``-2`` … when taken)."""
    face = found.faces[int(index)]
    target = _unique(stage / folder / face.name, taken)
    target.parent.mkdir(exist_ok=True)
    os.rename(face.staged, target)
    return {"file": face.file, "face": face.face, "written": target.relative_to(stage).as_posix(),
            "detected": face.detected, "landmark_fallback": bool(found.fallback[int(index)])}


def _write_sheet(stage: Path, report: dict) -> None:
    """``contact_sheet.png``: a row per group (then unassigned), its most typical faces.

    write_montage numbers its rows from 0: row 0 is a legend, so that row k is group k.
    """
    rows = [("folder (faces)", 0, [])]
    rows += [(g["name"], g["faces"], g["members"]) for g in report["groups"]]
    if report["unassigned"]:
        rows.append((UNASSIGNED, len(report["unassigned"]), report["unassigned"]))
    samples = {row: [(stage / m["written"]).read_bytes() for m in members[:SHEET_FACES]]
               for row, (_, _, members) in enumerate(rows)}
    names = [label if not n else f"{label} ({n})" for label, n, _ in rows]
    write_montage(stage / SHEET_FILE, names, samples, SHEET_FACES)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:1em}} h2{{font-size:1.1em;margin:1.2em 0 .3em}}
img{{width:80px;height:80px;object-fit:cover;margin:1px}} p{{color:#444}}</style></head>
<body><h1>{title}</h1>
<p>{summary} Rename a folder to the person's name, move a wrong face to its folder, or
delete a group; each face's source file shows when the pointer rests on it.</p>
{sections}
</body></html>
"""


def _write_index(stage: Path, report: dict) -> None:
    """``index.html``: every group and the unassigned faces, images linked relatively."""
    parts = [(g["name"], g["members"]) for g in report["groups"]]
    parts.append((UNASSIGNED, report["unassigned"]))
    sections = []
    for name, members in parts:
        images = "".join(
            f'<img src="{urllib.parse.quote(m["written"])}" loading="lazy" '
            f'title="{html.escape(m["file"])}" alt="{html.escape(m["written"])}">'
            for m in members)
        sections.append(f'<h2 id="{name}">{name}: {len(members)} faces</h2>\n<div>{images}</div>')
    summary = (f"{report['faces']} faces from {report['files']} files in "
               f"{len(report['groups'])} groups, {len(report['unassigned'])} unassigned "
               f"({report['method']}, threshold {report['threshold']}).")
    title = f"faces of {html.escape(Path(report['photos_folder']).name)}"
    atomic.write_text_atomic(stage / INDEX_FILE, _PAGE.format(
        title=title, summary=html.escape(summary), sections="\n".join(sections)))


def _timing(found: Collected) -> dict[str, Any]:
    seconds = found.seconds
    per_face = 1000 * seconds["embedding"] / found.computed if found.computed else None
    return {"seconds": {k: round(v, 1) for k, v in seconds.items()},
            "faces_embedded": found.computed, "faces_cached": len(found.faces) - found.computed,
            "ms_per_embedded_face": round(per_face, 1) if per_face else None,
            "machine": describe_machine()}


def _report(photos: Path, out: Path, found: Collected, **settings: Any) -> dict[str, Any]:
    """The report without its groups: settings, counts, skipped files, timing."""
    return {
        "facefold_version": facefold.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "photos_folder": str(photos),
        "out": str(out),
        **settings,
        "embedding": dlib128.NAME,
        "files": found.files,
        "faces": len(found.faces),
        "whole_pictures": sum(f.face == 0 for f in found.faces),
        "landmark_fallbacks": int(found.fallback.sum()),
        "skipped": {"unreadable": found.unreadable, "no_face": found.no_face},
        "timing": _timing(found),
    }


def _log_summary(log: Log, report: dict[str, Any], out: Path) -> None:
    grouped = sum(g["faces"] for g in report["groups"])
    log(f"{report['faces']} faces from {report['files']} files ({report['whole_pictures']} "
        f"pictures taken whole): {len(report['groups'])} groups of {grouped} faces, "
        f"{len(report['unassigned'])} unassigned ({report['method']}, threshold "
        f"{report['threshold']}, min size {report['min_size']})")
    skipped = report["skipped"]
    if skipped["no_face"]:
        log(f"{len(skipped['no_face'])} pictures without a face: {_names(skipped['no_face'])}")
    if skipped["unreadable"]:
        names = _names([f"{u['file']}: {u['reason']}" for u in skipped["unreadable"]])
        log(f"{len(skipped['unreadable'])} unreadable files skipped: {names}")
    log(_timing_line(report["timing"]))
    if "evaluation" in report:
        log(_evaluation_line(report["evaluation"]))
    log(f"wrote {out}/: group folders, {UNASSIGNED}/, {SHEET_FILE}, {INDEX_FILE}, {REPORT_FILE}")


def _timing_line(timing: dict[str, Any]) -> str:
    s = timing["seconds"]
    rate = (f" ({timing['ms_per_embedded_face']} ms per face)"
            if timing["ms_per_embedded_face"] else "")
    return (f"{s['faces']} s to find and embed the faces ({timing['faces_embedded']} embedded"
            f"{rate}, {timing['faces_cached']} cached), {s.get('cluster', 0)} s to cluster; "
            f"{timing['machine']}")


def _evaluation_line(score: dict[str, Any]) -> str:
    return (f"against the folder names: ARI {score['ari']}, purity {score['purity']}, "
            f"completeness {score['completeness']} ({score['people']} people, "
            f"{score['groups']} groups, {score['unassigned']} unassigned)")


def sweep(
    photos: str | Path,
    thresholds: Sequence[float] = SWEEP_THRESHOLDS,
    methods: Sequence[str] = METHODS,
    min_size: int = DEFAULT_MIN_SIZE,
    size: int = 112,
    min_score: float = 0.9,
    crops: bool = False,
    cache_dir: str | Path | None = None,
    log: Log = print,
) -> list[dict[str, Any]]:
    """Score every method × threshold on ``photos/<person>/…`` with the folder names hidden.

    The faces are found and embedded once (cached, as by :func:`cluster_faces`; nothing is
    written but the cache), then clustered per setting and scored by :func:`score_grouping`
    against the top folder names. Logs a table and the timing; returns one row per setting.
    """
    found = collect_faces(photos, None, size=size, min_score=min_score, crops=crops,
                          cache_dir=cache_dir, log=log)
    truth = folder_labels(found.faces)
    rows = []
    log(f"{len(found.faces)} faces of {len(set(truth))} people from {found.files} files; "
        f"{len(found.unreadable)} unreadable, {len(found.no_face)} without a face")
    log(f"{'method':<17} {'threshold':>9} {'ARI':>7} {'purity':>7} {'complete':>8} "
        f"{'groups':>6} {'unassigned':>10}")
    found.seconds["cluster"] = 0.0
    for method in methods:
        for threshold in thresholds:
            started = time.perf_counter()
            labels = cluster_embeddings(found.vectors, method, threshold)
            groups, _ = group_faces(labels, unit_vectors(found.vectors), min_size)
            found.seconds["cluster"] += time.perf_counter() - started
            row = {"method": method, "threshold": threshold,
                   **score_grouping(truth, groups, len(found.faces))}
            rows.append(row)
            log(f"{method:<17} {threshold:>9} {row['ari']:>7} {row['purity'] or '-':>7} "
                f"{row['completeness'] or '-':>8} {row['groups']:>6} {row['unassigned']:>10}")
    log(_timing_line(_timing(found)))
    return rows
