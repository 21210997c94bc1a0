"""Build a sharded facefold dataset from a folder of face pictures.

Input: ``SRC/<person>/<any image file>``. Output: ``OUT/data-00.tfrecords`` …,
``OUT/labels.txt`` and ``OUT/manifest.json`` in the format owned by
:mod:`facefold.data.records`. Every shard holds the same number of crops of
every person (±1), so any shard can be the held-out fold of a K-fold
cross-validation.

The dataset is written to a hidden sibling folder ``.OUT.building-XXXXXXXX``
and swapped with ``OUT`` only once it is complete, so a killed build leaves
either the old dataset or the new one in ``OUT``, never a mix (see
:func:`_publish`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import facefold
from facefold import atomic
from facefold.data import neardup, records
from facefold.data.images import ImageError, encode_jpeg, file_sha256, load_rgb, square_crop
from facefold.locks import locks_folders
from facefold.log import Log

# How many reasons the summary prints before "…"; the manifest lists them all.
_SHOWN = 5

# Written into a dataset folder by `dataset inspect` (the CLI's default): it
# shows the old crops, so an overwrite drops it with the old dataset.
MONTAGE_FILE = "montage.png"
# Temporary folders (see facefold.atomic): ".OUT.building-XXXXXXXX" beside OUT holds a
# build until it is swapped in; "OUT/.building-XXXXXXXX" is used where OUT cannot be
# swapped whole (a mount point, or a parent folder we may not write).


@dataclass(frozen=True)
class _Crop:
    """One distinct, readable source picture, already cropped and encoded."""

    file: str  # path relative to SRC, with "/" separators
    sha256: str  # of the source file's bytes
    jpeg: bytes
    phash: np.ndarray | None = field(default=None, compare=False, repr=False)  # of the JPEG crop


@dataclass
class _Scan:
    """What the source folder holds once unreadable files and duplicates are set aside."""

    crops: dict[str, list[_Crop]] = field(default_factory=dict)  # person -> distinct crops
    files: dict[str, int] = field(default_factory=dict)  # person -> files found
    skipped: list[dict[str, str]] = field(default_factory=list)
    duplicates: list[dict[str, str]] = field(default_factory=list)
    near_duplicates: list[dict[str, Any]] = field(default_factory=list)


@locks_folders("out", "spare")
def build_dataset(
    src: str | Path,
    out: str | Path,
    *,
    shards: int = 6,
    per_class: int = 180,
    size: int = 112,
    seed: int = 0,
    overwrite: bool = False,
    jpeg_quality: int = 95,
    near_duplicates: int = neardup.DEFAULT_DISTANCE,
    spare: str | Path | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Turn ``SRC/<person>/<images>`` into a balanced, sharded dataset in ``out``.

    Every person with at least ``per_class`` distinct readable pictures gets
    exactly ``per_class`` of them (sampled with ``seed``), square-cropped to
    ``size`` pixels and spread over ``shards`` shards so each shard holds
    ``per_class // shards`` or one more of every person. Label indices are
    assigned at random (also from ``seed``). Unreadable files, exact duplicate
    files and people with too few pictures are left out and listed in the
    summary and the manifest. So are near-duplicates: a crop whose 256-bit
    perceptual hash is at most ``near_duplicates`` bits from an earlier kept
    crop anywhere in the tree (0 disables; the default 16 is explained in
    :mod:`facefold.data.neardup`).

    ``spare`` names a new (or empty) folder for the kept people's pictures that sampling
    left out, as the same crops, one sub-folder per person: pictures no shard holds, for
    ``facefold evaluate MODEL SPARE`` to check a model on pictures it never saw. Without
    the near-duplicate check they may be near-copies of shard pictures (the log says so).
    The shards are the same with or without it.

    Nothing in ``out`` changes until the new dataset is complete in a
    temporary sibling folder (so the disk needs room for both); then the two
    are swapped in one step. Files in ``out`` that are not part of a dataset
    (notes, sub-folders) are kept; the old shards, ``labels.txt``,
    ``manifest.json`` and ``montage.png`` are replaced. A temporary folder
    left by a killed build is removed by the next build.

    Returns the manifest as a dict. Raises ``ValueError`` for a bad parameter,
    a person folder whose name cannot be a label (see
    :func:`facefold.data.records.label_name_problem`) or when fewer than two
    people qualify, ``FileExistsError`` when ``out`` already holds a dataset
    and ``overwrite`` is false or is a file.
    """
    _check_params(shards=shards, per_class=per_class, size=size, jpeg_quality=jpeg_quality)
    near_duplicates = neardup.check_distance(near_duplicates)
    src, out = Path(src).resolve(), Path(out).resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"source folder {src} does not exist")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; the output must be a folder (new or existing)")
    _restore_interrupted_swap(out, log)
    existing = _existing_outputs(out)
    if existing and not overwrite:
        raise FileExistsError(
            f"{out} already holds a dataset ({', '.join(p.name for p in existing[:3])}"
            f"{', …' if len(existing) > 3 else ''}); "
            "pass --overwrite (overwrite=True) to replace it"
        )

    spare = _check_spare(Path(spare).resolve(), src, out) if spare is not None else None

    folders = person_folders(src, exclude=out)
    names = person_names(src, folders)
    hidden = hidden_folders(src, out)
    log(f"scanning {len(folders)} person folders in {src}")
    scan = _scan(src, dict(zip(names, folders, strict=True)), size=size,
                 jpeg_quality=jpeg_quality, near=near_duplicates)
    _drop_near_duplicates(scan, near_duplicates)
    kept, dropped = _select_people(scan, per_class)

    rng = np.random.default_rng(seed)
    people = [kept[i] for i in rng.permutation(len(kept))]
    shard_records, spares = _distribute(people, scan.crops, per_class, shards, rng)

    # Only now, with everything validated, is anything written.
    _remove_stale_temporaries(out)
    with _staging_folder(out) as stage:
        counts, hashes = _write(stage, shard_records, people)
        manifest = _manifest(
            src=src, seed=seed, size=size, per_class=per_class, shards=shards,
            jpeg_quality=jpeg_quality, near_duplicates=near_duplicates, people=people,
            counts=counts, hashes=hashes, scan=scan, dropped=dropped, hidden=hidden,
            kept_sha={r.source_sha256 for shard in shard_records for r in shard},
        )
        if spare is not None:
            manifest["spare"] = _write_spare(spare, spares)
        atomic.write_json_atomic(stage / records.MANIFEST_FILE, manifest)
        _publish(stage, out)
    _log_summary(log, manifest, out)
    if spare is not None:
        _log_spare(log, manifest)
    return manifest


def _check_spare(spare: Path, src: Path, out: Path) -> Path:
    """The spare folder, refused (``FileExistsError``/``ValueError`` naming it) when it is a
    file, a non-empty folder, or inside the source or the dataset folder."""
    if spare.exists() and (not spare.is_dir() or any(spare.iterdir())):
        raise FileExistsError(f"spare folder {spare} exists and is not empty: choose a new one")
    for inside, what in ((src, "source"), (out, "dataset")):
        if spare == inside or inside in spare.parents:
            raise ValueError(f"spare folder {spare} is inside the {what} folder {inside}: "
                             "choose one outside it")
    return spare


def _write_spare(spare: Path, spares: dict[str, list[_Crop]]) -> dict[str, Any]:
    """Write the spare crops, ``SPARE/<person>/<source stem>-<sha256[:8]>.jpg``, into a
    temporary sibling renamed onto ``spare`` when complete; returns the manifest entry."""
    with atomic.staging_folder(spare) as tmp:
        for name, crops in spares.items():
            folder = tmp / name
            folder.mkdir(parents=True)
            for crop in crops:
                (folder / f"{Path(crop.file).stem}-{crop.sha256[:8]}.jpg").write_bytes(crop.jpeg)
        atomic.swap_in(tmp, spare)  # an existing spare folder is empty, checked before the scan
    return {"folder": str(spare), "pictures": {n: len(c) for n, c in spares.items()}}


def _log_spare(log: Log, manifest: dict[str, Any]) -> None:
    counts = manifest["spare"]["pictures"]
    log(f"spare: {sum(counts.values())} pictures no shard holds in {manifest['spare']['folder']}"
        f" ({min(counts.values())}-{max(counts.values())} per person)")
    if not manifest["near_dup_distance"]:
        log("spare: the near-duplicate check is off (--near-dup-distance 0), so some spare "
            "pictures may be near-copies of shard pictures and flatter a check on them")


def _manifest(
    *,
    src: Path,
    seed: int,
    size: int,
    per_class: int,
    shards: int,
    jpeg_quality: int,
    near_duplicates: int,
    people: Sequence[str],
    counts: list[list[int]],
    hashes: dict[str, str],
    kept_sha: set[str],
    scan: _Scan,
    dropped: list[dict[str, Any]],
    hidden: list[str],
) -> dict[str, Any]:
    """The contents of ``manifest.json`` for a build with these parameters and results."""
    return {  # key order: what was built, how, the result, then what was left out
        "facefold_version": facefold.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": str(src),
        "seed": seed,
        "size": size,
        "per_class": per_class,
        "shards": shards,
        "jpeg_quality": jpeg_quality,
        "near_dup_distance": near_duplicates,
        "near_dup_hash": neardup.HASH_NAME,
        "people": list(people),
        "counts": counts,
        "shard_sha256": hashes,
        # Which source file each record came from (records carry the file's SHA-256), so that
        # `dataset audit` names files and `dataset fix` moves them; older manifests lack it and
        # readers hash the source folder instead (source_file_map).
        "source_files": {c.sha256: c.file for name in people for c in scan.crops[name]
                         if c.sha256 in kept_sha},
        "skipped": scan.skipped,
        "duplicates": scan.duplicates,
        "near_duplicates": scan.near_duplicates,
        "dropped_people": dropped,
        "hidden_folders": hidden,
    }


def _check_params(*, shards: int, per_class: int, size: int, jpeg_quality: int) -> None:
    """Raise ``ValueError`` naming the first parameter that is out of range."""
    if shards < 2:
        raise ValueError(f"shards must be at least 2 (one to hold out, one to train), got {shards}")
    if per_class < shards:
        raise ValueError(
            f"per_class must be at least shards={shards} so every shard holds every person, "
            f"got per_class={per_class}"
        )
    if not 16 <= size <= records.MAX_IMAGE_SIZE:
        raise ValueError(f"size must be 16 to {records.MAX_IMAGE_SIZE} pixels, got {size}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")


def _existing_outputs(out: Path) -> list[Path]:
    """Dataset files already in ``out`` (manifest first, so removing them in order
    marks the old dataset incomplete before any shard disappears)."""
    if not out.is_dir():
        return []
    found = [out / name for name in (records.MANIFEST_FILE, records.LABELS_FILE)]
    found = [p for p in found if p.exists()]
    shards = [p for p in out.iterdir() if records.SHARD_REGEX.match(p.name)]
    return found + sorted(shards)


def _dataset_owned(name: str) -> bool:
    """Whether a file named ``name`` directly in a dataset folder belongs to the dataset.

    These are replaced by a new build; anything else in the folder is the user's and kept.
    """
    if name in (records.MANIFEST_FILE, records.LABELS_FILE, MONTAGE_FILE):
        return True
    if records.SHARD_REGEX.match(name):
        return True
    # A .tmp file a killed writer left behind (see atomic.atomic_path).
    ours = (".data-", f".{records.LABELS_FILE}.", f".{records.MANIFEST_FILE}.")
    return name.startswith(ours) and name.endswith(".tmp")


def _restore_interrupted_swap(out: Path, log: Log) -> None:
    """Put the old dataset back when a build was killed between the two renames of a swap
    (see :func:`facefold.atomic.restore_interrupted_swap`)."""
    old = atomic.restore_interrupted_swap(out)
    if old is not None:
        log(f"restored {out} from {old.name}, left by a build killed while swapping folders")


def _remove_stale_temporaries(out: Path) -> None:
    """Delete what a killed earlier build left behind: its temporary folders and ``.tmp`` files.

    Safe because none of them holds the only copy of a user's file: a
    building folder holds hard links or copies of them (see
    :func:`facefold.atomic.remove_stale_temporaries` for the folders beside ``out``).
    """
    atomic.remove_stale_temporaries(out)
    if not out.is_dir():
        return
    for path in out.iterdir():
        if atomic.is_temporary(path.name, atomic.BUILDING) and path.is_dir():
            shutil.rmtree(path)
        elif _dataset_owned(path.name) and path.name.endswith(".tmp"):
            path.unlink()


def _staging_folder(out: Path) -> AbstractContextManager[Path]:
    """A new empty folder to build the dataset in, removed again with what it holds at the end
    (:func:`facefold.atomic.staging_folder`): a sibling of ``out``, or a hidden folder inside
    ``out`` when ``out`` is a mount point or its parent is not writable."""
    in_place = out.is_dir() and (os.path.ismount(out) or not os.access(out.parent, os.W_OK))
    return atomic.staging_folder(out, inside=in_place)


def _publish(stage: Path, out: Path) -> None:
    """Make the complete dataset in ``stage`` the one in ``out``, keeping the user's files.

    With ``stage`` beside ``out``: the user's files are hard-linked (or
    copied) into ``stage``, then the two folders are exchanged in one atomic
    step, so ``out`` is at every moment the complete old or new dataset.
    With ``stage`` inside ``out`` the files are moved one by one instead, the
    manifest removed first and put back last, so a kill leaves ``out``
    without ``manifest.json``: the mark of an interrupted build.
    """
    if stage.parent == out:
        for path in [*_existing_outputs(out), out / MONTAGE_FILE]:
            path.unlink(missing_ok=True)
        for path in sorted(stage.iterdir(), key=lambda p: p.name == records.MANIFEST_FILE):
            os.replace(path, out / path.name)
        return
    if out.exists():
        _carry_user_files(out, stage)
        shutil.copymode(out, stage)
    atomic.swap_in(stage, out)


def _carry_user_files(out: Path, stage: Path) -> None:
    """Hard-link (or, where the file system has no hard links, copy) into ``stage``
    every entry of ``out`` that is not part of the dataset."""
    for path in sorted(out.iterdir()):
        if _dataset_owned(path.name) or atomic.is_temporary(path.name, atomic.BUILDING):
            continue
        target = stage / path.name
        if path.is_symlink():
            os.symlink(os.readlink(path), target)
        elif path.is_dir():
            shutil.copytree(path, target, symlinks=True, copy_function=atomic.link_or_copy)
        else:
            atomic.link_or_copy(path, target)


def person_folders(src: Path, exclude: Path | None = None) -> list[Path]:
    """The non-hidden sub-folders of ``src``, sorted (loose files like SOURCE.txt are ignored),
    but ``exclude`` (an output folder inside ``src``): one folder per person. Also the listing
    of ``facefold evaluate MODEL FOLDER``."""
    return sorted(
        p
        for p in src.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.resolve() != exclude
    )


def hidden_folders(src: Path, out: Path) -> list[str]:
    """The names of the sub-folders of ``src`` that :func:`person_folders` leaves out for
    starting with a dot (``.git``, ``.thumbnails``), sorted, but the temporary folders of a
    build into ``out`` (when ``out`` is inside ``src``): listed in the summary, so that no
    person is left out without a word."""
    return sorted(p.name for p in src.iterdir()
                  if p.is_dir() and p.name.startswith(".")
                  and not any(atomic.is_temporary(p.name, kind, out.name)
                              for kind in (atomic.BUILDING, atomic.OLD)))


def person_names(src: Path, folders: Sequence[Path]) -> list[str]:
    """The label names of the person ``folders`` of ``src``: their names in NFC
    (:func:`facefold.data.records.normal_name`).

    Raises ``ValueError`` naming every folder whose name cannot be a label, and
    the folders whose names are one name spelled two ways (NFC and NFD: they
    look the same, so they would be one person filed as two). Refused, not
    skipped: a name holding e.g. ``"\\x85"`` would have been split into two
    labels by a reader using ``str.splitlines``, and a person quietly left out
    is easy to miss; renaming the folder is the fix.
    """
    names = [records.normal_name(f.name) for f in folders]
    bad = [(f.name, problem) for f, name in zip(folders, names, strict=True)
           if (problem := records.label_name_problem(name))]
    if bad:
        shown = "; ".join(f"{name!r} {problem}" for name, problem in bad[:20])
        raise ValueError(
            f"{len(bad)} person folder name{'s' if len(bad) > 1 else ''} in {src} cannot be "
            f"label names: {shown}{'; …' if len(bad) > 20 else ''}. A label is one line of "
            f"{records.LABELS_FILE}: a name of at most {records.MAX_NAME_LENGTH} characters, "
            f"not {records.UNKNOWN!r}, no path, no control, line-separator or invisible format "
            "characters and no whitespace at either end; rename the folder (nothing was written)"
        )
    first: dict[str, str] = {}  # NFC name -> the first folder name spelling it
    for folder, name in zip(folders, names, strict=True):
        if name in first:
            raise ValueError(
                f"person folders {first[name]!r} and {folder.name!r} in {src} are one name "
                f"spelled two ways (both are {name!r} in Unicode NFC): merge them or rename "
                "one (nothing was written)"
            )
        first[name] = folder.name
    return names


def person_files(folder: Path) -> list[Path]:
    """The non-hidden files directly inside a person's folder, sorted by name: the pictures
    of one person (unreadable ones are the reader's to report)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _scan(
    src: Path, folders: dict[str, Path], *, size: int, jpeg_quality: int, near: int
) -> _Scan:
    """Read, crop and encode every file of ``folders`` (label name -> person folder); set
    aside unreadable files and exact duplicates.

    With ``near`` > 0 each crop also gets its perceptual hash, for
    :func:`_drop_near_duplicates`.

    Duplicates are looked for across the whole tree, not per person: the same
    picture filed under two names would be label noise and, once the two
    copies land in different shards, leakage between folds.
    """
    scan = _Scan()
    jobs: list[tuple[str, Path]] = []
    for name, folder in folders.items():
        files = person_files(folder)
        scan.files[name] = len(files)
        scan.crops[name] = []
        jobs.extend((name, path) for path in files)

    def work(path: Path) -> tuple[str, bytes | str, np.ndarray | None]:
        sha, outcome = _crop_file(path, size=size, jpeg_quality=jpeg_quality)
        readable = isinstance(outcome, bytes)
        return sha, outcome, neardup.phash_jpeg(outcome) if near and readable else None

    # Pillow and hashlib release the GIL while decoding and hashing, so threads
    # give a real speed-up; map() keeps the sorted order, so results are deterministic.
    with ThreadPoolExecutor() as pool:
        results = list(pool.map(work, [path for _, path in jobs]))

    first_file: dict[str, str] = {}  # source sha256 -> first file with those bytes
    first_crop: dict[bytes, str] = {}  # crop bytes -> first file giving that crop
    for (person, path), (sha, outcome, phash) in zip(jobs, results, strict=True):
        rel = path.relative_to(src).as_posix()
        if sha in first_file:
            scan.duplicates.append(
                {"file": rel, "duplicate_of": first_file[sha], "identical": "file"}
            )
            continue
        first_file[sha] = rel
        if isinstance(outcome, str):
            scan.skipped.append({"file": rel, "reason": outcome})
        elif outcome in first_crop:
            # Different files, same pixels after cropping (e.g. a PNG and a PGM
            # of one picture): one would leak into the other's fold.
            scan.duplicates.append(
                {"file": rel, "duplicate_of": first_crop[outcome], "identical": "crop"}
            )
        else:
            first_crop[outcome] = rel
            scan.crops[person].append(_Crop(rel, sha, outcome, phash))
    return scan


def _drop_near_duplicates(scan: _Scan, max_distance: int) -> None:
    """Remove every crop within ``max_distance`` bits of an earlier kept crop, and record it.

    Compared across the whole tree in scan order (person folders, then files,
    by name), so the first picture of each group stays. A pair across two
    people is kept in the record like any other: it is label noise or leakage
    either way, and its two paths name both people.
    """
    order = [crop for crops in scan.crops.values() for crop in crops]
    if not max_distance or len(order) < 2:
        return
    dropped = neardup.first_of_each_group(np.stack([c.phash for c in order]), max_distance)
    for j, (i, distance) in sorted(dropped.items()):
        scan.near_duplicates.append(
            {"file": order[j].file, "near": order[i].file, "distance": distance}
        )
    gone = {order[j].file for j in dropped}
    for person, crops in scan.crops.items():
        scan.crops[person] = [c for c in crops if c.file not in gone]


def _crop_file(path: Path, *, size: int, jpeg_quality: int) -> tuple[str, bytes | str]:
    """``(file sha256, JPEG crop)``, or ``(file sha256, reason)`` when it is no readable image."""
    sha = file_sha256(path)
    try:
        img = load_rgb(path)
    except ImageError as err:
        return sha, str(err).removeprefix(f"{path}: ")
    return sha, encode_jpeg(square_crop(img, size), quality=jpeg_quality)


def _select_people(scan: _Scan, per_class: int) -> tuple[list[str], list[dict[str, Any]]]:
    """Split people into those with at least ``per_class`` distinct readable pictures and the rest.

    Returns ``(kept names sorted, dropped entries)``; raises ``ValueError``
    listing everyone's count when fewer than two people qualify.
    """
    kept: list[str] = []
    dropped: list[dict[str, Any]] = []
    for name, crops in scan.crops.items():
        if len(crops) >= per_class:
            kept.append(name)
        elif scan.files[name] == 0:
            dropped.append({"name": name, "images": 0, "reason": "empty folder"})
        else:
            dropped.append(
                {
                    "name": name,
                    "images": len(crops),
                    "reason": f"{len(crops)} distinct readable images, fewer than "
                    f"per_class={per_class}",
                }
            )
    if len(kept) < 2:
        counts = sorted(((-len(c), n) for n, c in scan.crops.items()))  # most images first
        listing = ", ".join(f"{n} {-k}" for k, n in counts[:20]) or "no person folders at all"
        raise ValueError(
            f"only {len(kept)} of {len(counts)} people have at least per_class={per_class} "
            f"distinct readable images, need at least 2 (images per person: {listing}"
            f"{', …' if len(counts) > 20 else ''}); lower per_class or add pictures"
        )
    return sorted(kept), sorted(dropped, key=lambda d: d["name"])


def _extra_shards(label: int, per_class: int, shards: int) -> set[int]:
    """The shards that get one more crop of this person than ``per_class // shards``.

    The extras are dealt out round-robin across people (person 0 gets shards
    0.., person 1 continues where person 0 stopped), so shard totals also
    differ by at most one.
    """
    extra = per_class % shards
    return {(label * extra + j) % shards for j in range(extra)}


def _distribute(
    people: Sequence[str],
    crops: dict[str, list[_Crop]],
    per_class: int,
    shards: int,
    rng: np.random.Generator,
) -> tuple[list[list[records.Record]], dict[str, list[_Crop]]]:
    """Sample ``per_class`` crops per person and deal them out to shards, shuffled within each.

    ``people`` is in label order; returns one list of records per shard, and per person the
    crops not sampled (in scan order).
    """
    out: list[list[records.Record]] = [[] for _ in range(shards)]
    spares: dict[str, list[_Crop]] = {}
    base = per_class // shards
    for label, name in enumerate(people):
        chosen = rng.choice(len(crops[name]), per_class, replace=False)
        picked = [crops[name][i] for i in chosen]
        left = set(range(len(crops[name]))) - {int(i) for i in chosen}
        spares[name] = [crops[name][i] for i in sorted(left)]
        extras = _extra_shards(label, per_class, shards)
        start = 0
        for shard in range(shards):
            count = base + (shard in extras)
            out[shard].extend(
                records.Record(label=label, image_raw=c.jpeg, source_sha256=c.sha256)
                for c in picked[start : start + count]
            )
            start += count
    # Shuffle so a shard read front to back is not sorted by person.
    return [[shard[i] for i in rng.permutation(len(shard))] for shard in out], spares


def _write(
    out: Path, shard_records: Sequence[Sequence[records.Record]], people: Sequence[str]
) -> tuple[list[list[int]], dict[str, str]]:
    """Write the shards and ``labels.txt``; return per-shard per-label counts and shard hashes."""
    out.mkdir(parents=True, exist_ok=True)
    counts: list[list[int]] = []
    hashes: dict[str, str] = {}
    for index, shard in enumerate(shard_records):
        path = out / records.shard_name(index)
        records.write_shard(path, shard)
        hashes[path.name] = file_sha256(path)
        per_label = np.bincount([r.label for r in shard], minlength=len(people))
        counts.append([int(c) for c in per_label])
    records.write_labels(out, list(people))
    return counts, hashes


def _log_summary(log: Log, manifest: dict[str, Any], out: Path) -> None:
    """A few lines: who was kept or dropped, what was skipped, how big each shard is."""
    dropped = manifest["dropped_people"]
    line = f"{len(manifest['people'])} people kept, {len(dropped)} dropped"
    if dropped:
        shown = "; ".join(f"{d['name']}: {d['reason']}" for d in dropped[:_SHOWN])
        line += f" ({shown}{'; …' if len(dropped) > _SHOWN else ''})"
    log(line)
    skipped = manifest["skipped"]
    if skipped:
        shown = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:_SHOWN])
        log(f"{len(skipped)} files skipped ({shown}{'; …' if len(skipped) > _SHOWN else ''})")
    hidden = manifest["hidden_folders"]
    if hidden:
        shown = ", ".join(hidden[:_SHOWN])
        log(f"{len(hidden)} hidden folder{'s' if len(hidden) > 1 else ''} skipped, not people "
            f"(names start with a dot): {shown}{', …' if len(hidden) > _SHOWN else ''}")
    if manifest["duplicates"]:
        log(f"{len(manifest['duplicates'])} duplicates removed")
    near = manifest["near_duplicates"]
    if near:
        across = [n for n in near if n["file"].split("/")[0] != n["near"].split("/")[0]]
        line = (
            f"{len(near)} near-duplicates removed (perceptual hash within "
            f"{manifest['near_dup_distance']} of {neardup.HASH_BITS} bits of a kept picture)"
        )
        if across:
            shown = "; ".join(f"{n['file']} ~ {n['near']}" for n in across[:_SHOWN])
            line += (
                f"; {len(across)} of them across two people, check the labels: "
                f"{shown}{'; …' if len(across) > _SHOWN else ''}"
            )
        log(line)
    totals = ", ".join(
        f"{name.removesuffix('.tfrecords')} {sum(c)}"
        for name, c in zip(manifest["shard_sha256"], manifest["counts"], strict=True)
    )
    size = manifest["size"]
    log(f"shards: {totals} ({size}x{size} crops, {manifest['per_class']} per person)")
    log(f"wrote {out}{os.sep}{records.MANIFEST_FILE}")


def source_file_map(data_dir: str | Path) -> dict[str, Path]:
    """``{source file SHA-256: its path now}`` for the records of a built dataset (records carry
    the SHA-256 of the file they were cropped from).

    Read from ``manifest.json``'s ``source_files`` when every file listed is still in place;
    otherwise (a manifest written before that entry existed, or files moved since, e.g. by
    ``dataset fix``) the person folders of the manifest's ``source`` are hashed again. Empty
    when there is no manifest or the source folder is gone: the records then have no file.
    """
    path = Path(data_dir) / records.MANIFEST_FILE
    if not path.is_file():
        return {}
    manifest = json.loads(path.read_text(encoding="utf-8"))
    src = Path(str(manifest.get("source", "")))
    listed = manifest.get("source_files")
    if isinstance(listed, dict):
        found = {sha: src / rel for sha, rel in listed.items()}
        if all(p.is_file() for p in found.values()):
            return found
    if not src.is_dir():
        return {}
    files = [f for folder in person_folders(src) for f in person_files(folder)]
    with ThreadPoolExecutor() as pool:  # hashlib releases the GIL
        return dict(zip(pool.map(file_sha256, files), files, strict=True))
