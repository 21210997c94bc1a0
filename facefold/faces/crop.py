"""Turn a folder of photos into a folder of aligned face crops.

``PHOTOS/<anything>/<photo>`` becomes ``OUT/<anything>/<photo stem>.png``:
the folder layout is kept, so one folder per person in gives one folder per
person out, ready for ``facefold dataset build OUT …``. ``OUT/crop_report.json``
lists every photo and what became of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import facefold
from facefold import atomic
from facefold.data.images import ImageError, load_rgb
from facefold.faces.detect import Face, align_face, detect_faces, load_detector
from facefold.locks import locks_folders
from facefold.log import Log

REPORT_FILE = "crop_report.json"
MULTIPLE_CHOICES = ("largest", "all")
# How many photos per kind of problem the summary names before "…"; the report lists all.
_SHOWN = 5
_PROGRESS_EVERY = 100  # photos between progress lines


@dataclass
class _Outcome:
    """What happened to the photos, in the report's terms."""

    crops: list[dict[str, Any]] = field(default_factory=list)
    no_face: list[str] = field(default_factory=list)
    multiple_faces: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    taken: set[Path] = field(default_factory=set)  # output files written in this run


@locks_folders("out")
def crop_faces(
    photos: str | Path,
    out: str | Path,
    size: int = 112,
    multiple: str = "largest",
    min_score: float = 0.9,
    log: Log = print,
) -> dict[str, Any]:
    """Detect the faces in every photo under ``photos`` and write aligned crops under ``out``.

    Every non-hidden file below ``photos`` (recursively, hidden folders and
    ``out`` itself skipped) is tried as a photo. Each face found with
    confidence ≥ ``min_score`` is aligned to the ArcFace template and saved as
    a ``size``×``size`` PNG at the photo's relative folder in ``out``, named
    ``<photo stem>.png``. A photo with several faces gives its largest face
    (``multiple="largest"``) or every face as ``<stem>_1.png``, ``<stem>_2.png``
    … largest first (``multiple="all"``). A name already used in this run gets
    ``-2``, ``-3`` … (e.g. ``a.jpg`` and ``a.png`` in one folder). Files are
    written atomically; existing files of the same name are replaced.

    Photos without a face, with several faces, and unreadable files are named
    in the log and in ``out/crop_report.json``; none of them stops the run.
    Returns the report as a dict. Raises ``ValueError`` for a bad parameter,
    ``FileNotFoundError`` when ``photos`` is not a folder, and
    ``ModuleNotFoundError`` when the ``faces`` extra is not installed.
    """
    _check_params(size, multiple, min_score)
    photos, out = Path(photos).resolve(), Path(out).resolve()
    if not photos.is_dir():
        raise FileNotFoundError(f"photo folder {photos} does not exist")
    if out == photos:
        raise ValueError(f"OUT must differ from PHOTOS ({photos}): crops would mix with photos")
    files = _photo_files(photos, exclude=out)
    log(f"looking for faces in {len(files)} files under {photos}")
    load_detector()  # fails here, before any output, when the faces extra is missing
    outcome = _Outcome()
    for number, path in enumerate(files, start=1):
        _crop_photo(path, photos, out, outcome, size=size, multiple=multiple, min_score=min_score)
        if number % _PROGRESS_EVERY == 0:
            log(f"{number}/{len(files)} photos, {sum(len(c['written']) for c in outcome.crops)} "
                "crops so far")
    report = _report(photos, out, files, outcome, size=size, multiple=multiple,
                     min_score=min_score)
    atomic.write_json_atomic(out / REPORT_FILE, report)
    _log_summary(log, report, out)
    return report


def _check_params(size: int, multiple: str, min_score: float) -> None:
    """Raise ``ValueError`` naming the first parameter that is out of range."""
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    if multiple not in MULTIPLE_CHOICES:
        raise ValueError(f"multiple must be one of {', '.join(MULTIPLE_CHOICES)}, got {multiple!r}")
    if not 0 < min_score <= 1:
        raise ValueError(f"min_score must be in (0, 1], got {min_score}")


def _photo_files(root: Path, exclude: Path) -> list[Path]:
    """Every non-hidden file below ``root``, sorted; hidden folders and ``exclude`` are skipped."""
    found: list[Path] = []
    for path in sorted(root.iterdir()):
        if path.name.startswith(".") or path.resolve() == exclude:
            continue
        if path.is_dir():
            found.extend(_photo_files(path, exclude))
        elif path.is_file():
            found.append(path)
    return found


def _crop_photo(
    path: Path,
    photos: Path,
    out: Path,
    outcome: _Outcome,
    *,
    size: int,
    multiple: str,
    min_score: float,
) -> None:
    """Detect, align and write the crops of one photo; record what happened in ``outcome``."""
    rel = path.relative_to(photos).as_posix()
    try:
        img = load_rgb(path)
    except ImageError as err:
        outcome.unreadable.append({"file": rel, "reason": str(err).removeprefix(f"{path}: ")})
        return
    faces = detect_faces(img, min_score=min_score)
    if not faces:
        outcome.no_face.append(rel)
        return
    chosen = faces if multiple == "all" else faces[:1]
    written: list[str] = []
    for name, face in zip(_crop_names(path.stem, len(chosen)), chosen, strict=True):
        target = _unique(out / Path(rel).parent / name, outcome.taken)
        with atomic.atomic_path(target) as tmp:
            align_face(img, face.landmarks, size).save(tmp, format="PNG")
        written.append(target.relative_to(out).as_posix())
    outcome.crops.append(
        {"file": rel, "written": written, "faces": [_describe(f) for f in chosen]}
    )
    if len(faces) > 1:
        outcome.multiple_faces.append(
            {"file": rel, "faces": len(faces), "kept": multiple, "written": written}
        )


def _crop_names(stem: str, count: int) -> list[str]:
    """``[stem.png]`` for one face, ``[stem_1.png, stem_2.png, …]`` for several."""
    if count == 1:
        return [f"{stem}.png"]
    return [f"{stem}_{k}.png" for k in range(1, count + 1)]


def _unique(target: Path, taken: set[Path]) -> Path:
    """``target``, or ``<stem>-2.png``, ``-3`` … when this run already wrote that name."""
    candidate, k = target, 1
    while candidate in taken:
        k += 1
        candidate = target.with_name(f"{target.stem}-{k}{target.suffix}")
    taken.add(candidate)
    return candidate


def _describe(face: Face) -> dict[str, Any]:
    """A face as JSON: box (x, y, width, height), score, landmarks, rounded to 0.1 pixel."""
    return {
        "box": [round(v, 1) for v in face.box],
        "score": round(face.score, 4),
        "landmarks": [[round(float(v), 1) for v in point] for point in face.landmarks],
    }


def _report(
    photos: Path,
    out: Path,
    files: Sequence[Path],
    outcome: _Outcome,
    *,
    size: int,
    multiple: str,
    min_score: float,
) -> dict[str, Any]:
    """The JSON report: settings, totals, then every photo's outcome."""
    return {
        "facefold_version": facefold.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "photos_folder": str(photos),
        "out": str(out),
        "size": size,
        "multiple": multiple,
        "min_score": min_score,
        "files": len(files),
        "crops_written": sum(len(c["written"]) for c in outcome.crops),
        "crops": outcome.crops,
        "no_face": outcome.no_face,
        "multiple_faces": outcome.multiple_faces,
        "unreadable": outcome.unreadable,
    }


def _log_summary(log: Log, report: dict[str, Any], out: Path) -> None:
    """A few lines: crops written, then each kind of problem with the first files named."""
    log(f"{report['crops_written']} crops of {report['size']}x{report['size']} from "
        f"{len(report['crops'])} of {report['files']} files")
    if report["no_face"]:
        log(f"{len(report['no_face'])} photos without a face (score >= {report['min_score']}): "
            f"{_names(report['no_face'])}")
    if report["multiple_faces"]:
        kept = "kept the largest" if report["multiple"] == "largest" else "kept all"
        names = _names([m["file"] + f" ({m['faces']})" for m in report["multiple_faces"]])
        log(f"{len(report['multiple_faces'])} photos with several faces, {kept}: {names}")
    if report["unreadable"]:
        names = _names([f"{u['file']}: {u['reason']}" for u in report["unreadable"]])
        log(f"{len(report['unreadable'])} unreadable files skipped: {names}")
    log(f"wrote {out / REPORT_FILE}")


def _names(items: Sequence[str]) -> str:
    """The first few items joined with '; ', then '; …' when there are more."""
    return "; ".join(items[:_SHOWN]) + ("; …" if len(items) > _SHOWN else "")
