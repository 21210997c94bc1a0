"""The gallery: people enrolled in a model folder without retraining (``facefold enroll``).

It lives in ``MODEL/gallery.sqlite``, an SQLite database (Python's own ``sqlite3``), so that
every writer — the CLI, the Python API, a running ``facefold serve`` — adds people under a
transaction and none can overwrite what another added::

    meta(key, value)                  format version and the feature dimension
    pictures(picture PRIMARY KEY,     what the feature was computed from: a hash of the
                                      picture's pixels (or ``migrated:NAME``, below)
             name, feature, count)    the person, the sum of ``count`` unit-length features

A person's row in the predictor is the sum of their pictures' features and how many there
are (their centroid is its direction). One row per picture makes enrolling idempotent by
content: the same picture again changes nothing, and a picture already enrolled under
another name is refused.

A gallery of an older facefold (``gallery.npz``: names, sums, counts) is read as it is
and moved into the database, one row per person, by the first write.

Readers see a consistent state at any time (SQLite's locking); :meth:`Gallery.read` costs a
file ``stat`` when nothing changed since the last read, so a server reads it before every
answer and sees what other processes enrolled.
"""

from __future__ import annotations

import hashlib
import sqlite3
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facefold import runs
from facefold.data.records import label_name_problem

DATABASE_FILE = runs.GALLERY_FILE
LEGACY_FILE = runs.LEGACY_GALLERY_FILE
FORMAT = "1"
# How long a writer waits for another one's transaction before giving up: enrolling a person
# takes milliseconds once the features are computed, so this only bounds a stuck process.
BUSY_SECONDS = 60.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pictures (
    picture TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    feature BLOB NOT NULL,
    count INTEGER NOT NULL CHECK (count > 0)
);
"""


def picture_key(pixels: np.ndarray) -> str:
    """The content key of a picture: SHA-256 of its shape, type and pixels (so the same photo
    decoded again, from any file name, gets the same key)."""
    pixels = np.ascontiguousarray(pixels)
    digest = hashlib.sha256(f"{pixels.shape}{pixels.dtype.str}".encode())
    digest.update(pixels.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class People:
    """The enrolled people in enrollment order: ``names``, ``sums`` (E, D) float32 sums of
    unit-length features, ``counts`` (E,) how many pictures made each sum."""

    names: list[str]
    sums: np.ndarray
    counts: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> People:
        return cls([], np.zeros((0, dim), np.float32), np.zeros(0, np.int64))


class GalleryError(ValueError):
    """A gallery file that cannot be read, or one that does not fit the model."""


class Gallery:
    """The gallery of the model folder ``folder`` whose features have ``dim`` values."""

    def __init__(self, folder: str | Path, dim: int) -> None:
        self.folder = Path(folder)
        self.dim = dim
        self.path = self.folder / DATABASE_FILE
        self._seen: tuple | None = None
        self._people = People.empty(dim)

    # ------------------------------------------------------------------ reading

    def read(self) -> People:
        """The people enrolled now (empty when there is no gallery)."""
        state = self._file_state()
        if state != self._seen:
            self._people = self._read_now()
            self._seen = state
        return self._people

    def _file_state(self) -> tuple:
        """What changes whenever a writer commits: the database header's change counter,
        which SQLite increments at every commit in its default (rollback journal) mode —
        exact where a file time could miss two commits in one clock tick."""
        try:
            with self.path.open("rb") as handle:
                header = handle.read(28)
            return ("database", self.path.stat().st_ino, header[24:28])
        except FileNotFoundError:
            pass
        except OSError as err:  # a directory, a file we may not read: say which
            raise GalleryError(f"{self.path}: cannot be read as a gallery "
                               f"({err.strerror or err})") from None
        try:
            info = (self.folder / LEGACY_FILE).stat()
            return ("legacy", info.st_ino, info.st_size, info.st_mtime_ns)
        except FileNotFoundError:
            return ("none",)

    def _read_now(self) -> People:
        if not self.path.exists():
            return read_legacy(self.folder / LEGACY_FILE, self.dim)
        try:  # read-only: a reader never creates or changes the file (the folder may be too)
            db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                 timeout=BUSY_SECONDS)
            try:
                rows = db.execute(
                    "SELECT name, feature, count FROM pictures ORDER BY rowid").fetchall()
            finally:
                db.close()
        except sqlite3.OperationalError as err:
            if "no such table" in str(err):  # created by a writer that has not committed yet
                return read_legacy(self.folder / LEGACY_FILE, self.dim)
            raise GalleryError(f"{self.path}: cannot be read ({err})") from None
        except sqlite3.DatabaseError as err:
            raise GalleryError(f"{self.path}: not a facefold gallery ({err})") from None
        return self._people_of(rows)

    def _people_of(self, rows: Sequence[tuple[str, bytes, int]]) -> People:
        order: dict[str, int] = {}
        for name, _, _ in rows:
            order.setdefault(name, len(order))
        sums = np.zeros((len(order), self.dim), np.float32)
        counts = np.zeros(len(order), np.int64)
        for name, blob, count in rows:
            # Rows written by another program are checked like a labels file's names.
            problem = (label_name_problem(name) if isinstance(name, str)
                       else "is not text")
            if problem or not isinstance(blob, bytes) or not isinstance(count, int) or count < 1:
                raise GalleryError(f"{self.path}: a row of {name!r} is not a facefold "
                                   f"gallery row (name {problem or 'fine'}, count {count!r})")
            feature = np.frombuffer(blob, np.float32)
            if feature.shape != (self.dim,) or not np.isfinite(feature).all():
                raise GalleryError(f"{self.path}: the row of {name!r} holds {feature.size} "
                                   f"values or non-finite ones; the model's features have "
                                   f"{self.dim}")
            sums[order[name]] += feature
            counts[order[name]] += count
        return People(list(order), sums, counts)

    # ------------------------------------------------------------------ writing

    def add(self, name: str, features: np.ndarray, pictures: Sequence[str] | None = None
            ) -> tuple[int, int]:
        """Enroll ``name`` from unit-length ``features`` (N, D), one per picture, whose content
        keys are ``pictures`` (:func:`picture_key`; None: every row counts as new).

        Pictures already enrolled under ``name`` are skipped; one enrolled under another name
        is refused (``ValueError`` naming both) and nothing is written. Returns ``(added, total)``:
        how many pictures this call added and how many the person has now.
        """
        features = np.asarray(features, np.float32)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must be (N, {self.dim}), got {features.shape}")
        if pictures is None:
            pictures = [f"features:{hashlib.sha256(f.tobytes()).hexdigest()}" for f in features]
        if len(pictures) != len(features):
            raise ValueError(f"{len(pictures)} picture keys for {len(features)} features")
        with self._transaction() as db:
            added = 0
            for key, feature in zip(pictures, features, strict=True):
                owner = db.execute("SELECT name FROM pictures WHERE picture = ?",
                                   (key,)).fetchone()
                if owner is None:
                    db.execute("INSERT INTO pictures VALUES (?, ?, ?, 1)",
                               (key, name, feature.tobytes()))
                    added += 1
                elif owner[0] != name:
                    raise ValueError(f"a picture given for {name!r} is already enrolled as "
                                     f"{owner[0]!r}")
            (total,) = db.execute("SELECT COALESCE(SUM(count), 0) FROM pictures WHERE name = ?",
                                  (name,)).fetchone()
        return added, int(total)

    def clear(self) -> None:
        """Remove every enrolled person (and a legacy gallery)."""
        with self._transaction() as db:
            db.execute("DELETE FROM pictures")
        (self.folder / LEGACY_FILE).unlink(missing_ok=True)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken before anything is read, so that two writers run one
        after the other; the legacy gallery is moved in by the first one."""
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None)
        except sqlite3.Error as err:
            raise GalleryError(f"{self.path}: cannot be opened ({err})") from None
        try:
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            self._check_meta(db)
            self._migrate(db)
            yield db
            db.execute("COMMIT")
        except sqlite3.DatabaseError as err:  # locked past BUSY_SECONDS, disk full, not SQLite
            if db.in_transaction:
                db.execute("ROLLBACK")
            what = ("cannot be written" if isinstance(err, sqlite3.OperationalError)
                    else "is not a facefold gallery")
            raise GalleryError(f"{self.path} {what} ({err}); nothing was enrolled") from None
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()
        (self.folder / LEGACY_FILE).unlink(missing_ok=True)  # moved in: the database rules

    def _check_meta(self, db: sqlite3.Connection) -> None:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if not meta:
            db.executemany("INSERT INTO meta VALUES (?, ?)",
                           [("format", FORMAT), ("dim", str(self.dim))])
        elif meta.get("format") != FORMAT or meta.get("dim") != str(self.dim):
            raise GalleryError(f"{self.path}: format {meta.get('format')!r} with "
                               f"{meta.get('dim')} values per feature; this facefold writes "
                               f"format {FORMAT} and the model has {self.dim}")

    def _migrate(self, db: sqlite3.Connection) -> None:
        legacy = self.folder / LEGACY_FILE
        if not legacy.is_file() or db.execute("SELECT 1 FROM pictures LIMIT 1").fetchone():
            return
        old = read_legacy(legacy, self.dim)
        db.executemany("INSERT INTO pictures VALUES (?, ?, ?, ?)", [
            (f"migrated:{name}", name, row.astype(np.float32).tobytes(), int(count))
            for name, row, count in zip(old.names, old.sums, old.counts, strict=True)])


def read_legacy(path: Path, dim: int) -> People:
    """The people of an older facefold's ``gallery.npz`` (empty when there is none)."""
    if not path.is_file():
        return People.empty(dim)
    try:
        with np.load(path, allow_pickle=False) as data:
            names = [str(n) for n in data["names"]]
            sums, counts = data["sums"].astype(np.float32), data["counts"].astype(np.int64)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise GalleryError(f"{path}: not a facefold gallery ({err})") from None
    for name in names:
        if problem := label_name_problem(name):
            raise GalleryError(f"{path}: the name {name!r} {problem}")
    if sums.shape != (len(names), dim) or counts.shape != (len(names),) or (
            counts < 1).any() or not np.isfinite(sums).all():
        raise GalleryError(f"{path}: names ({len(names)}), sums {sums.shape} and counts "
                           f"{counts.shape} do not fit together or the model's {dim} features, "
                           "or hold a count below 1 or a non-finite sum")
    return People(names, sums, counts)
