"""What a dataset *is*: the fingerprint a run's identity holds, and how two differ in words."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from facefold.data.records import MANIFEST_FILE, list_shards, manifest_shard_hashes, read_labels

# run.json of runs written before fingerprints: what a legacy run lacks.
LEGACY_DATA = "data (the run was written by a facefold without data fingerprints)"


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file; cached per (path, size, mtime) so a process hashes a shard once."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, computed once per process while its size and mtime stay."""
    path = Path(path).resolve()
    stat = path.stat()
    return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)


def data_fingerprint(data_dir: str | Path) -> dict[str, Any]:
    """What a dataset *is*: ``{"digest", "shards": [sha256 per shard], "labels": [...]}``.

    ``digest`` is the SHA-256 of the label list and the shard hashes in order, so two
    folders with the same files have the same fingerprint wherever they lie.
    """
    paths = list_shards(data_dir)
    shards = []
    for path in paths:
        shards.append(file_sha256(path))
    check_against_manifest(data_dir, {p.name: h for p, h in zip(paths, shards, strict=True)})
    labels = read_labels(data_dir)
    digest = hashlib.sha256(json.dumps({"labels": labels, "shards": shards}).encode())
    return {"digest": digest.hexdigest(), "shards": shards, "labels": labels}


def check_against_manifest(data_dir: str | Path, hashes: dict[str, str]) -> None:
    """The shards' SHA-256 ``hashes`` (by file name) must be the ones the manifest recorded
    when the dataset was built (a rewritten shard can have valid CRCs and shifted labels);
    ``ValueError`` naming the shard and the manifest otherwise. Datasets without a manifest
    (the 2016 format) have nothing to check against. Costs nothing more: the fingerprint
    hashes every shard anyway (its cost: docs/performance.md, "The check of the shards")."""
    recorded = manifest_shard_hashes(data_dir)
    if recorded is None:
        return
    manifest = Path(data_dir) / MANIFEST_FILE
    for name in sorted(set(recorded) | set(hashes)):
        if name not in hashes:
            raise ValueError(f"{Path(data_dir) / name} is listed in {manifest} but missing")
        if name not in recorded:
            raise ValueError(f"{Path(data_dir) / name} is not listed in {manifest} (left over "
                             "from another build?)")
        if recorded[name] != hashes[name]:
            raise ValueError(f"{Path(data_dir) / name}: SHA-256 differs from {manifest} (the "
                             "file changed after the build): build the dataset again")


def describe_data_difference(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """A sentence on how two fingerprints differ (people, shards), for error messages."""
    if not old:
        return LEGACY_DATA
    parts = []
    if old.get("labels") != new["labels"]:
        before, after = old.get("labels") or [], new["labels"]
        parts.append(f"{len(before)} people ({', '.join(before[:3])}…) against {len(after)} "
                     f"({', '.join(after[:3])}…)" if before != after[: len(before)] or
                     len(before) != len(after) else "the label order")
    shards_old, shards_new = old.get("shards") or [], new["shards"]
    if len(shards_old) != len(shards_new):
        parts.append(f"{len(shards_old)} shards against {len(shards_new)}")
    else:
        changed = [k for k, (a, b) in enumerate(zip(shards_old, shards_new, strict=True))
                   if a != b]
        if changed:
            parts.append(f"the content of shard(s) {', '.join(map(str, changed))}")
    return "the dataset differs: " + ("; ".join(parts) or "its fingerprint")
