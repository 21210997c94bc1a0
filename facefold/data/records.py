"""The one place that knows the shard format.

A facefold dataset is a folder of TFRecord shards ``data-00.tfrecords`` …
``data-NN.tfrecords`` plus ``labels.txt`` (one name per line, line number =
label index) and ``manifest.json``. Every record is a ``tf.train.Example``
with exactly the 2016 schema:

- ``label``: int64, the person's index in ``labels.txt``
- ``image_raw``: bytes, a JPEG-encoded face crop

Writers may add features (facefold adds ``sha256`` of the source file so that
leakage between shards can be checked), readers require only the two above,
so shards written by the 2016 code load unchanged.

TensorFlow is imported by the functions that need it, not by the module: the run layer
reads labels.txt and image sizes from here, and ``verify``/``identify`` should not pay
TensorFlow's start-up for that.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facefold.atomic import atomic_path, write_text_atomic

SHARD_PATTERN = "data-{index:02d}.tfrecords"
SHARD_REGEX = re.compile(r"^data-(\d{2,})\.tfrecords$")
LABELS_FILE = "labels.txt"
MANIFEST_FILE = "manifest.json"
# The largest side of a dataset's square images that facefold accepts anywhere (build, run.json,
# export.json): far above any model's input, far below sizes that overflow an image library.
MAX_IMAGE_SIZE = 4096

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf


def required_features() -> dict[str, Any]:
    """What a reader needs, as ``tf.io.parse_single_example`` features; anything else in a
    record is ignored."""
    import tensorflow as tf

    return {
        "label": tf.io.FixedLenFeature([], tf.int64),
        "image_raw": tf.io.FixedLenFeature([], tf.string),
    }


class ShardError(ValueError):
    """A shard is unreadable, truncated, or does not follow the schema."""


@dataclass(frozen=True)
class Record:
    """One face crop as stored in a shard."""

    label: int
    image_raw: bytes  # JPEG bytes
    source_sha256: str = ""  # optional: hash of the source file the crop came from


def shard_name(index: int) -> str:
    """``data-00.tfrecords`` for index 0 (the 2016 naming)."""
    return SHARD_PATTERN.format(index=index)


def list_shards(data_dir: str | Path) -> list[Path]:
    """The shard files of a dataset folder, sorted by shard index.

    Raises ``FileNotFoundError`` naming the folder when it holds no shard.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"dataset folder {data_dir} does not exist")
    shards = [p for p in data_dir.iterdir() if SHARD_REGEX.match(p.name)]
    if not shards:
        raise FileNotFoundError(
            f"{data_dir} holds no shards named data-00.tfrecords, data-01.tfrecords, …"
        )
    return sorted(shards, key=lambda p: int(SHARD_REGEX.match(p.name).group(1)))


def read_manifest(data_dir: str | Path) -> dict[str, Any] | None:
    """A dataset's ``manifest.json`` (written by ``dataset build``), or None when it is
    missing or not a JSON object."""
    try:
        manifest = json.loads((Path(data_dir) / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def manifest_shard_hashes(data_dir: str | Path) -> dict[str, str] | None:
    """``{shard file name: SHA-256}`` that the dataset's ``manifest.json`` recorded when it was
    built, or None for a dataset without a manifest (the 2016 format); ``ValueError`` naming
    the file when it cannot be read."""
    path = Path(data_dir) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        hashes = json.loads(path.read_bytes())["shard_sha256"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(hashes, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in hashes.items()):
        raise ValueError(f"{path}: field 'shard_sha256' must map shard names to hashes")
    return hashes


def dataset_image_size(data_dir: str | Path, crop_size: int) -> int:
    """The side of a dataset's square images: its manifest's ``size``, else the first image of
    its first shard, else ``crop_size + 16`` (the 112/96 convention) when the dataset is gone."""
    data_dir = Path(data_dir)
    manifest = data_dir / MANIFEST_FILE
    try:
        if manifest.is_file():
            return int(json.loads(manifest.read_text())["size"])
        first_shard = list_shards(data_dir)[0]
    except (FileNotFoundError, KeyError, ValueError):
        return crop_size + 16
    import tensorflow as tf  # only for a dataset without a manifest

    try:
        first = next(iter(tf.data.TFRecordDataset(str(first_shard)).take(1)))
        raw = tf.io.parse_single_example(first, required_features())["image_raw"]
        return int(tf.io.extract_jpeg_shape(raw)[0].numpy())
    except (FileNotFoundError, StopIteration, KeyError, ValueError, tf.errors.OpError):
        return crop_size + 16


def encode(record: Record) -> bytes:
    """Serialize one record as a ``tf.train.Example``."""
    import tensorflow as tf

    feature = {
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[record.label])),
        "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[record.image_raw])),
    }
    if record.source_sha256:
        feature["sha256"] = tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[record.source_sha256.encode()])
        )
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def decode(serialized: bytes, where: str = "record") -> Record:
    """Parse one serialized ``tf.train.Example`` into a :class:`Record`.

    ``where`` names the file and record index in error messages.
    """
    import tensorflow as tf

    example = tf.train.Example()
    try:
        example.ParseFromString(serialized)
    except Exception as err:  # protobuf raises its own DecodeError
        raise ShardError(f"{where}: not a tf.train.Example ({err})") from err
    features = example.features.feature
    for key, kind in (("label", "int64_list"), ("image_raw", "bytes_list")):
        if key not in features or features[key].WhichOneof("kind") != kind:
            raise ShardError(
                f"{where}: missing feature '{key}' ({kind.split('_')[0]}); "
                f"found {sorted(features.keys())}"
            )
    labels = features["label"].int64_list.value
    images = features["image_raw"].bytes_list.value
    if len(labels) != 1 or len(images) != 1:
        raise ShardError(f"{where}: 'label' and 'image_raw' must hold exactly one value each")
    sha = features["sha256"].bytes_list.value if "sha256" in features else []
    return Record(int(labels[0]), bytes(images[0]), sha[0].decode() if sha else "")


def read_shard(path: str | Path) -> Iterator[Record]:
    """Yield the records of one shard, checking CRCs and the schema.

    Raises :class:`ShardError` naming the file and record index on a
    truncated or corrupt file or a record without the 2016 schema.
    """
    import tensorflow as tf

    path = Path(path)
    index = -1
    try:
        for index, serialized in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
            yield decode(serialized, where=f"{path} record {index}")
    except tf.errors.DataLossError as err:
        raise ShardError(
            f"{path}: corrupt or truncated at record {index + 1} ({tf_error_message(err)})"
        ) from err


def shard_labels(data_dir: str | Path) -> list[np.ndarray]:
    """The labels of every shard's records, in shard order (images are not decoded): what a
    command's plan is checked against before any training."""
    import numpy as np

    return [np.array([record.label for record in read_shard(path)], dtype=np.int64)
            for path in list_shards(data_dir)]


def tf_error_message(err: tf.errors.OpError) -> str:
    """The human part of a TensorFlow error message, without op and function internals."""
    text = err.message.splitlines()[0] if err.message else str(err)
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", text)
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", text).strip()


def read_step_rows(path: str | Path) -> list[dict]:
    """The rows of a ``.jsonl`` log in ``"step"`` order (empty if the file is absent)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda r: r["step"])


def write_shard(path: str | Path, records: Iterable[Record]) -> int:
    """Write records to one TFRecord shard atomically; returns how many were written."""
    import tensorflow as tf

    count = 0
    with atomic_path(path) as tmp, tf.io.TFRecordWriter(str(tmp)) as writer:
        for record in records:
            writer.write(encode(record))
            count += 1
    return count


# Unicode categories that may not appear in a label name: control characters
# (Cc: \r, \x0b, \x85, …), line and paragraph separators (Zl, Zp: U+2028,
# U+2029), invisible format characters (Cf: bidi overrides, zero-width space,
# BOM) and lone surrogates (Cs: a folder name that was not valid UTF-8). Any of
# them would split a line of labels.txt for some reader (str.splitlines, an
# editor) or make two different names look the same.
_BAD_CATEGORIES = {
    "Cc": "a control character",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
    "Cf": "an invisible format character",
    "Cs": "an unpaired surrogate (the name is not valid UTF-8)",
}
# Zero-width non-joiner and joiner are Cf but part of ordinary spelling (Persian,
# Indic scripts, emoji sequences), so names holding them are allowed.
_ALLOWED_FORMAT = {"\u200c", "\u200d"}


# What the recognizer answers for a face it does not know: never a person's name, in any case.
UNKNOWN = "unknown"
# A person's name, not a story: the longest full names in use (several given names, two
# family names, a title) stay well under it, and every answer, table row, CSV cell and
# gallery row repeats the name, so an unbounded one costs in all of them.
MAX_NAME_LENGTH = 100


def normal_name(name: str) -> str:
    """``name`` in Unicode normal form NFC, the one spelling a label has: macOS file systems
    and some keyboards give "é" as "e" plus a combining accent (NFD), which looks the same."""
    return unicodedata.normalize("NFC", name)


def label_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a label (one line of ``labels.txt``), or None when it can.

    A label is a non-empty string of at most :data:`MAX_NAME_LENGTH` characters,
    in NFC (:func:`normal_name`), without surrounding whitespace, without any
    character of :data:`_BAD_CATEGORIES`, not :data:`UNKNOWN` in any case (the
    recognizer's answer for a stranger), not ``.`` or ``..`` and without ``/``
    or ``\\`` (it names a folder in places). The answer names the first
    offending character, e.g. ``"holds U+0085 '\\x85' (a control character)"``.
    """
    if not name:
        return "is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long (at most {MAX_NAME_LENGTH})"
    if name != name.strip():
        return "starts or ends with whitespace"
    for char in name:
        kind = _BAD_CATEGORIES.get(unicodedata.category(char))
        if kind and char not in _ALLOWED_FORMAT:
            return f"holds U+{ord(char):04X} {char!r} ({kind})"
    if name.casefold() == UNKNOWN:
        return f"is the recognizer's answer for a stranger ({UNKNOWN!r}), not a name"
    if name in (".", ".."):
        return "is a path (the current or parent folder), not a name"
    if "/" in name or "\\" in name:
        return "holds a path separator ('/' or '\\')"
    if name != normal_name(name):
        return (f"is not in Unicode normal form NFC (NFC spells it {normal_name(name)!r}, "
                "which looks the same)")
    return None


def read_labels(data_dir: str | Path) -> list[str]:
    """The label names in ``data_dir/labels.txt``, index = label (dataset or run folder).

    Lines are split on ``"\\n"`` only, so no other separator can ever add a
    label. One ``"\\r"`` before each ``"\\n"`` is dropped (a file saved with
    Windows line ends reads the same) and so is a UTF-8 byte-order mark; blank
    lines are allowed only at the end. Raises ``FileNotFoundError`` when the
    folder or file is missing, ``ValueError`` naming the file and line when
    the file is not UTF-8, a line is blank before the last name, a name
    breaks :func:`label_name_problem` or repeats an earlier one.
    """
    if not Path(data_dir).is_dir():
        raise FileNotFoundError(f"dataset folder {data_dir} does not exist")
    path = Path(data_dir) / LABELS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: a dataset or run folder needs its label list")
    try:
        # Bytes, not read_text(): text mode would turn a lone "\r" into a line end.
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason})") from err
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    first_line: dict[str, int] = {}  # name -> 1-based line it first appears on
    for number, name in enumerate(lines, start=1):
        if not name:
            raise ValueError(
                f"{path} line {number} is blank: every line up to the last name must hold "
                "one name (a blank line would shift the label index of every later name)"
            )
        problem = label_name_problem(name)
        if problem:
            raise ValueError(f"{path} line {number}: name {name!r} {problem}")
        if name in first_line:
            raise ValueError(
                f"{path} line {number}: name {name!r} repeats line {first_line[name]}"
            )
        first_line[name] = number
    return lines


def write_labels(data_dir: str | Path, names: list[str]) -> None:
    """Write ``names`` as ``data_dir/labels.txt`` (one per line, UTF-8), atomically.

    Raises ``ValueError`` naming the first name that :func:`read_labels` could
    not read back: one breaking :func:`label_name_problem` or a repeat.
    """
    seen: set[str] = set()
    for index, name in enumerate(names):
        problem = label_name_problem(name)
        if problem:
            raise ValueError(f"label {index} {name!r} {problem}; it cannot be a line of "
                             f"{LABELS_FILE}")
        if name in seen:
            raise ValueError(f"label {index} {name!r} repeats an earlier label")
        seen.add(name)
    write_text_atomic(Path(data_dir) / LABELS_FILE, "".join(f"{n}\n" for n in names))
