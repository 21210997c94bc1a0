"""Check a facefold dataset folder before training on it.

:func:`inspect_dataset` reads every record of every shard and collects all
problems (corrupt files, schema, labels, undecodable images, imbalance
between shards, images shared by two shards, near-duplicate images in two
shards, disagreement with ``manifest.json``) into one :class:`DatasetError`, so a user fixes them in
one go instead of one per run.
"""

from __future__ import annotations

import io
import json
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facefold import atomic
from facefold.data import neardup, records
from facefold.data.images import PHOTO_FORMATS, file_sha256
from facefold.data.jpegcheck import jpeg_stream_problem

# Per shard and kind of problem, how many records are named before "… and N more".
_NAMED_PER_KIND = 5
# Montage limits: rows (people) and the side of one crop in pixels.
_MONTAGE_ROWS = 50
_MONTAGE_CELL = 64


class DatasetError(ValueError):
    """A dataset folder fails its checks; ``problems`` lists every failure found."""

    def __init__(self, data_dir: Path, problems: list[str]) -> None:
        self.problems = problems
        listing = "\n".join(f"- {p}" for p in problems)
        super().__init__(f"{data_dir}: {len(problems)} problem(s) found:\n{listing}")


@dataclass(frozen=True)
class InspectReport:
    """What a dataset that passed :func:`inspect_dataset` holds."""

    data_dir: Path
    labels: list[str]  # index = label
    shards: list[str]  # shard file names, in shard order
    counts: list[list[int]]  # counts[shard][label]
    shard_bytes: list[int]  # file size of each shard
    total: int  # records in all shards
    image_sizes: dict[str, int]  # "WxH" -> number of images of that size
    manifest_checked: bool  # False when there is no manifest.json (e.g. a 2016 dataset)
    near_dup_distance: int = 0  # pHash bits within which images in two shards fail; 0 = off


@dataclass
class _Seen:
    """First place each image (by crop bytes or by source file) was met."""

    where: dict[str, tuple[str, int]] = field(default_factory=dict)  # key -> (shard, record)
    # (earlier shard, later shard) -> how many images they share, and the first pair of records
    shared: Counter[tuple[str, str]] = field(default_factory=Counter)
    example: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)


class _Hashed(NamedTuple):
    """Where a perceptual hash came from, to name both records of a near-duplicate pair."""

    shard: str
    index: int
    label: int
    crop: str  # SHA-256 of the JPEG bytes
    source: str  # SHA-256 of the source file, "" when unknown


class _Inspector:
    """Collects counts, montage samples and problems while the shards are read."""

    def __init__(
        self, data_dir: Path, labels: list[str], per_person: int, near_distance: int
    ) -> None:
        self.data_dir = data_dir
        self.labels = labels
        self.per_person = per_person
        self.near_distance = near_distance  # 0: no perceptual hashing at all
        self.hashes: list[np.ndarray] = []  # one 256-bit pHash per good record …
        self.hashed: list[_Hashed] = []  # … and where it came from
        self.problems: list[str] = []
        self.counts: dict[str, np.ndarray] = {}  # shard name -> per-label counts
        self.complete: set[str] = set()  # shards read to the end without ShardError
        self.samples: dict[int, list[bytes]] = {}  # label -> a few crops for the montage
        self.sizes: Counter[str] = Counter()
        self.seen = _Seen()

    def read_shard(self, path: Path) -> None:
        """Read one shard, checking each record; a corrupt tail is one problem, not a crash."""
        counts = np.zeros(len(self.labels), dtype=np.int64)
        self.counts[path.name] = counts
        named: Counter[str] = Counter()  # kind -> problems listed one by one
        overflow: Counter[str] = Counter()  # kind -> problems only counted
        try:
            for index, record in enumerate(records.read_shard(path)):
                for kind, problem in self._check_record(path.name, index, record, counts):
                    if named[kind] < _NAMED_PER_KIND:
                        named[kind] += 1
                        self.problems.append(problem)
                    else:
                        overflow[kind] += 1
        except records.ShardError as err:
            self.problems.append(str(err))
        else:
            self.complete.add(path.name)
        self.problems.extend(
            f"{path.name}: … and {n} more records with a {kind}" for kind, n in overflow.items()
        )

    def _check_record(
        self, shard: str, index: int, record: records.Record, counts: np.ndarray
    ) -> list[tuple[str, str]]:
        """Check one record; returns (kind, message) for each problem and updates the tallies."""
        where = f"{shard} record {index}"
        found: list[tuple[str, str]] = []
        n = len(self.labels)
        if 0 <= record.label < n:
            counts[record.label] += 1
        else:
            message = (
                f"{where}: label out of range: {record.label} is not in 0..{n - 1} "
                f"({records.LABELS_FILE} has {n} names)"
            )
            found.append(("label out of range", message))
        problem, phash = self._check_image(record.image_raw)
        if problem:
            found.append(("bad image", f"{where}: bad image: {problem}"))
        elif not found:
            bucket = self.samples.setdefault(record.label, [])
            if len(bucket) < self.per_person:
                bucket.append(record.image_raw)
            if phash is not None:
                crop = sha256(record.image_raw).hexdigest()
                self.hashes.append(phash)
                self.hashed.append(_Hashed(shard, index, record.label, crop, record.source_sha256))
        self._note_shared(shard, index, record)
        return found

    def _check_image(self, raw: bytes) -> tuple[str, np.ndarray | None]:
        """``("", pHash)`` for a JPEG that decodes cleanly, else ``(what is wrong, None)``.

        Cleanly: every pixel decodes and the compressed data checks out
        (:func:`~facefold.data.jpegcheck.jpeg_stream_problem`). Only the photo
        formats' readers are tried, so a record holding e.g. EPS never reaches
        Ghostscript. The pHash is None when near-duplicates are not checked.
        """
        try:
            with Image.open(io.BytesIO(raw), formats=list(PHOTO_FORMATS)) as img:
                img.load()  # decode every pixel: catches truncated data
                kind, size = img.format, img.size
                # Hashed from the pixels already decoded here: the builder hashes the same bytes.
                phash = neardup.phash(img) if self.near_distance and kind == "JPEG" else None
        except Exception as err:  # Pillow raises many types for bad data
            return f"image_raw does not decode ({type(err).__name__}: {err})", None
        if kind != "JPEG":
            return f"image_raw is {kind}, the schema asks for JPEG", None
        # Damage inside the compressed data is only a warning to libjpeg (in Pillow and in
        # TensorFlow alike): the picture comes out partly garbage without an error.
        damage = jpeg_stream_problem(raw)
        if damage:
            return f"image_raw is a damaged JPEG ({damage})", None
        self.sizes[f"{size[0]}x{size[1]}"] += 1
        return "", phash

    def _note_shared(self, shard: str, index: int, record: records.Record) -> None:
        """Remember where this image was seen; count it if another shard already had it."""
        keys = ["crop:" + sha256(record.image_raw).hexdigest()]
        if record.source_sha256:
            keys.append("source:" + record.source_sha256)
        for key in keys:
            first = self.seen.where.get(key)
            if first and first[0] != shard:
                pair = (first[0], shard)
                self.seen.shared[pair] += 1
                self.seen.example.setdefault(pair, (first[1], index))
                break
        for key in keys:
            self.seen.where.setdefault(key, (shard, index))

    def check_shared(self) -> None:
        """One problem per pair of shards that hold the same picture."""
        for (a, b), n in self.seen.shared.items():
            ia, ib = self.seen.example[(a, b)]
            self.problems.append(
                f"{a} and {b} share {n} image(s) (e.g. {a} record {ia} = {b} record {ib}): "
                "a picture in two shards leaks between cross-validation folds"
            )

    def check_near_duplicates(self) -> None:
        """One problem per near-duplicate pair in two shards (the first few; the rest counted).

        Pairs that are the same picture are left to :meth:`check_shared`,
        which already names them.
        """
        if not self.near_distance or len(self.hashes) < 2:
            return
        pairs = neardup.near_pairs(np.stack(self.hashes), self.near_distance)
        leaks = [(i, j, d) for i, j, d in pairs.tolist() if self._leaks(i, j)]
        for i, j, distance in leaks[:_NAMED_PER_KIND]:
            a, b = self.hashed[i], self.hashed[j]
            self.problems.append(
                f"{a.shard} record {a.index} ('{self.labels[a.label]}') and {b.shard} record "
                f"{b.index} ('{self.labels[b.label]}') are near-duplicates (perceptual hash "
                f"distance {distance} ≤ {self.near_distance} of {neardup.HASH_BITS} bits): "
                "one picture in two shards leaks between cross-validation folds"
            )
        if len(leaks) > _NAMED_PER_KIND:
            self.problems.append(
                f"… and {len(leaks) - _NAMED_PER_KIND} more near-duplicate pairs across shards"
            )

    def _leaks(self, i: int, j: int) -> bool:
        """True when hashed records ``i`` and ``j`` are in two shards and not the same picture."""
        a, b = self.hashed[i], self.hashed[j]
        same_picture = a.crop == b.crop or (a.source != "" and a.source == b.source)
        return a.shard != b.shard and not same_picture

    def check_balance(self) -> None:
        """Every person in every shard, with counts differing by at most one across shards."""
        shards = [name for name in self.counts if name in self.complete]
        if not shards:
            return
        table = np.stack([self.counts[name] for name in shards])  # (shards, labels)
        for label, name in enumerate(self.labels):
            column = table[:, label]
            if not column.any():
                self.problems.append(f"'{name}' (label {label}) has no image in any shard")
                continue
            for shard, count in zip(shards, column, strict=True):
                if count == 0:
                    self.problems.append(f"{shard} holds no image of '{name}' (label {label})")
            if column.max() - column.min() > 1:
                listing = ", ".join(f"{s} {c}" for s, c in zip(shards, column, strict=True))
                self.problems.append(
                    f"'{name}' (label {label}) is unbalanced across shards: {listing} "
                    "(counts may differ by at most 1)"
                )

    def check_manifest(self, shard_paths: list[Path]) -> bool:
        """Compare shard hashes, counts and people with manifest.json; False when there is none."""
        path = self.data_dir / records.MANIFEST_FILE
        if not path.is_file():
            return False
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            hashes: dict[str, str] = manifest["shard_sha256"]
            counts: list[list[int]] = manifest["counts"]
            people: list[str] = manifest["people"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            self.problems.append(f"{path}: unreadable ({type(err).__name__}: {err})")
            return True
        if people != self.labels:
            self.problems.append(
                f"{records.LABELS_FILE} does not match the people in {records.MANIFEST_FILE}"
            )
        present = {p.name: p for p in shard_paths}
        for name in sorted(set(hashes) - set(present)):
            self.problems.append(f"{name} is listed in {records.MANIFEST_FILE} but missing")
        for name in sorted(set(present) - set(hashes)):
            self.problems.append(
                f"{name} is not listed in {records.MANIFEST_FILE} (left over from another build?)"
            )
        for index, name in enumerate(hashes):
            if name not in present:
                continue
            if file_sha256(present[name]) != hashes[name]:
                self.problems.append(
                    f"{name}: SHA-256 differs from {records.MANIFEST_FILE} "
                    "(the file changed after the build)"
                )
            if name in self.complete:
                expected = counts[index] if index < len(counts) else []
                self._compare_counts(name, list(self.counts[name]), expected)
        return True

    def _compare_counts(self, shard: str, found: list[int], expected: list[int]) -> None:
        """One problem naming the shard and the first person whose count differs."""
        if found == expected:
            return
        if len(found) != len(expected):
            detail = f"manifest has {len(expected)} people, {records.LABELS_FILE} {len(found)}"
        else:
            label = next(i for i, (a, b) in enumerate(zip(found, expected, strict=True)) if a != b)
            detail = (
                f"first difference: '{self.labels[label]}' (label {label}) has {found[label]} "
                f"here, {expected[label]} in the manifest"
            )
        self.problems.append(
            f"{shard}: per-person counts differ from {records.MANIFEST_FILE} ({detail})"
        )


def inspect_dataset(
    data_dir: str | Path,
    montage: Path | None = None,
    per_person: int = 6,
    near_dup_distance: int | None = None,
) -> InspectReport:
    """Read every record of a dataset folder and check it is safe to train on.

    Checks CRCs and truncation, the record schema, that labels index
    ``labels.txt``, that every image decodes as JPEG, that each person's count
    differs by at most one across shards and no shard lacks a person, that no
    picture sits in two shards, not even as a near-duplicate, and (when
    ``manifest.json`` exists) shard hashes and counts against it.

    Near-duplicates are two records whose 256-bit perceptual hashes are at
    most ``near_dup_distance`` bits apart; None takes the manifest's
    ``near_dup_distance`` (the builder's setting), or 16 when there is none
    (see :mod:`facefold.data.neardup`). 0 turns this check off.

    With ``montage``, also writes a PNG grid there: one row per person (at
    most 50), ``per_person`` crops each, name at the row start. It is written
    even when checks fail, to help see what went wrong.

    Returns an :class:`InspectReport`; raises :class:`DatasetError` listing
    every problem found, ``FileNotFoundError`` when the folder holds no shard.
    """
    data_dir = Path(data_dir)
    shard_paths = records.list_shards(data_dir)
    try:
        labels = records.read_labels(data_dir)
    except (FileNotFoundError, ValueError) as err:
        raise DatasetError(data_dir, [str(err)]) from err

    if near_dup_distance is None:
        near_dup_distance = _manifest_near_dup_distance(data_dir)
    near_dup_distance = neardup.check_distance(near_dup_distance, "near_dup_distance")
    inspector = _Inspector(data_dir, labels, per_person, near_dup_distance)
    for path in shard_paths:
        inspector.read_shard(path)
    inspector.check_shared()
    inspector.check_near_duplicates()
    inspector.check_balance()
    manifest_checked = inspector.check_manifest(shard_paths)

    if montage is not None:
        write_montage(montage, labels, inspector.samples, per_person)
    if inspector.problems:
        raise DatasetError(data_dir, inspector.problems)
    counts = [[int(c) for c in inspector.counts[p.name]] for p in shard_paths]
    return InspectReport(
        data_dir=data_dir,
        labels=labels,
        shards=[p.name for p in shard_paths],
        counts=counts,
        shard_bytes=[p.stat().st_size for p in shard_paths],
        total=sum(map(sum, counts)),
        image_sizes=dict(inspector.sizes),
        manifest_checked=manifest_checked,
        near_dup_distance=near_dup_distance,
    )


def _manifest_near_dup_distance(data_dir: Path) -> int:
    """The ``near_dup_distance`` the dataset was built with, else the default.

    A missing or unreadable manifest falls back to the default here; the
    manifest check reports it.
    """
    try:
        manifest = json.loads((data_dir / records.MANIFEST_FILE).read_text(encoding="utf-8"))
        distance = manifest["near_dup_distance"]
        return neardup.check_distance(distance)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return neardup.DEFAULT_DISTANCE


def draw_montage(data_dir: str | Path, path: str | Path, per_person: int = 6) -> None:
    """Write the montage of a dataset without inspecting it: the first ``per_person`` crops of
    each person, read in shard order (what a report shows; ``inspect_dataset`` checks)."""
    labels = records.read_labels(data_dir)
    samples: dict[int, list[bytes]] = {}
    for shard in records.list_shards(data_dir):
        for record in records.read_shard(shard):
            crops = samples.setdefault(record.label, [])
            if len(crops) < per_person:
                crops.append(record.image_raw)
        if all(len(samples.get(k, [])) >= per_person for k in range(len(labels))):
            break
    write_montage(path, labels, samples, per_person)


def write_montage(
    path: str | Path, labels: list[str], samples: dict[int, list[bytes]], per_person: int
) -> None:
    """Write a PNG grid atomically: one row per label (first 50), up to ``per_person`` crops each.

    ``samples`` maps label -> JPEG bytes. Each row starts with the person's
    name; a last line says how many people did not fit.
    """
    font = ImageFont.load_default(size=14)
    shown = labels[:_MONTAGE_ROWS]
    names = [f"{i} {n}" if len(n) <= 24 else f"{i} {n[:23]}…" for i, n in enumerate(shown)]
    text_width = int(max((font.getlength(n) for n in names), default=0)) + 12
    cell = _MONTAGE_CELL
    footer = 24 if len(labels) > len(shown) else 0
    grid = Image.new(
        "RGB", (text_width + per_person * cell, len(shown) * cell + footer), (255, 255, 255)
    )
    draw = ImageDraw.Draw(grid)
    for row, name in enumerate(names):
        draw.text((6, row * cell + cell // 2), name, fill=(0, 0, 0), font=font, anchor="lm")
        for col, raw in enumerate(samples.get(row, [])[:per_person]):
            with Image.open(io.BytesIO(raw)) as img:
                tile = img.convert("RGB").resize((cell, cell), Image.Resampling.LANCZOS)
            grid.paste(tile, (text_width + col * cell, row * cell))
    if footer:
        more = f"… and {len(labels) - len(shown)} more people not shown"
        draw.text((6, len(shown) * cell + 4), more, fill=(0, 0, 0), font=font)
    with atomic.atomic_path(path) as tmp:
        grid.save(tmp, format="PNG")


def format_report(report: InspectReport) -> str:
    """A plain-text table: one row per shard (images, min/max per person, bytes), then people."""
    sizes = report.image_sizes
    shapes = ", ".join(f"{k}: {n}" for k, n in sizes.items()) if len(sizes) > 1 else "".join(sizes)
    lines = [
        f"{report.data_dir}: {len(report.shards)} shards, {len(report.labels)} people, "
        f"{report.total} images ({shapes})",
        f"{'shard':<20} {'images':>7} {'min/person':>11} {'max/person':>11} {'bytes':>12}",
    ]
    for name, counts, size in zip(report.shards, report.counts, report.shard_bytes, strict=True):
        lines.append(
            f"{name:<20} {sum(counts):>7} {min(counts, default=0):>11} "
            f"{max(counts, default=0):>11} {size:>12,}"
        )
    people = " ".join(f"{i}={name}" for i, name in enumerate(report.labels))
    lines.append(textwrap.fill(f"people (label=name): {people}", width=100, break_long_words=False))
    lines.append(
        f"near-duplicates across shards: none within {report.near_dup_distance} of "
        f"{neardup.HASH_BITS} bits of perceptual hash"
        if report.near_dup_distance
        else "near-duplicates across shards: not checked (near_dup_distance 0)"
    )
    lines.append(
        f"{records.MANIFEST_FILE}: shard hashes and counts verified"
        if report.manifest_checked
        else f"no {records.MANIFEST_FILE}: shard hashes not verified "
        "(a 2016 dataset, or an interrupted build)"
    )
    return "\n".join(lines)
