"""Suspected label errors in a dataset (``facefold dataset audit``): crops whose label is likely
wrong or ambiguous, near-duplicates filed under two people, and faces that may not be faces.

**Out-of-fold probabilities.** Every crop needs class probabilities from a model that did not
train on it. From a cross-validation folder (``facefold cv``) they are its cases'
``predictions.npz``: each case predicted its held-out shards. From a dataset folder they are
computed here, cheaply: dlib's 128-d embedding of every crop (image and mirror, averaged; cached
by content, see :mod:`facefold.embeddings.cache`) and a multinomial logistic regression
(scikit-learn) trained on the other shards, shard by shard: the shards are the folds.

**Confident learning** (``cleanlab``, Northcutt et al. 2021): ``find_label_issues`` flags the
crops whose given label is unlikely given per-class thresholds estimated from the probabilities
themselves (kind ``label``); a crop it does not flag whose out-of-fold prediction is another
person is listed too (kind ``ambiguous``): cleanlab estimates how noisy each pair of people
is, and on a few errors spread over many pairs it leaves some out (docs/data.md, "Finding
label errors"). Both are ranked by
the same score, ``1 - p(given label)`` (cleanlab's self-confidence label quality): the most
suspect first. That ranking is :mod:`facefold.data.labelnoise`'s, shared with the labeling page.

**Near-duplicates across people** (kind ``near-duplicate``): two crops whose 256-bit perceptual
hashes lie within ``near_dup_distance`` bits (:mod:`facefold.data.neardup`) but are filed under
two people: the same picture with two names, one of them wrong. Score ``1 - distance / 256``
(or the label score, if higher), so they come first.

**Not a face?** (kind ``not-a-face``, dlib128 only): the landmark fit failed and the whole
image was the chip (the ``fallback`` of the embedding cache). Profile faces fail it too, so
this is a hint, ranked by the label score like the others.

Each suspect names its source file when the dataset's manifest leads to it
(:func:`facefold.data.build.source_file_map`), else its shard and record.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facefold import runs
from facefold.atomic import atomic_path
from facefold.csvcells import safe_row
from facefold.data import neardup, records
from facefold.data.build import source_file_map
from facefold.data.labelnoise import label_kinds, out_of_fold_probabilities, require
from facefold.data.records import list_shards, read_labels, read_shard
from facefold.log import Log

KINDS = ("near-duplicate", "label", "ambiguous", "not-a-face")
EMBEDDING = "dlib128"


@dataclass(frozen=True)
class Suspect:
    """One crop the audit doubts, most suspect first in a list.

    ``source``: the source picture's path (or ``data-NN.tfrecords record R`` when the dataset
    does not lead to it); ``given``: the label it has; ``suggested``: the label it seems to
    have (the out-of-fold prediction, or for a near-duplicate the other crop's label);
    ``score``: 0..1, higher is more suspect; ``kind``: the reasons, ``+``-joined, from
    :data:`KINDS`; ``detail``: the numbers behind them; ``shard``, ``record``: where the crop
    lies; ``sha256``: of the source file ("" if unknown); ``crop``: the stored JPEG.
    """

    source: str
    given: str
    suggested: str
    score: float
    kind: str
    detail: str
    shard: int
    record: int
    sha256: str
    crop: bytes = field(repr=False, compare=False)


@dataclass(frozen=True)
class Crops:
    """Every record of a dataset, in shard order: ``shard``, ``record`` (index in its shard),
    ``labels`` (N,) int, ``jpegs``, ``sha256`` (of the source files, "" when not recorded)."""

    names: list[str]
    shard: np.ndarray
    record: np.ndarray
    labels: np.ndarray
    jpegs: list[bytes]
    sha256: list[str]


def read_crops(data_dir: str | Path) -> Crops:
    """All records of the dataset ``data_dir`` (``FileNotFoundError`` naming a folder that
    holds no shards)."""
    shards = list_shards(data_dir)
    names = read_labels(data_dir)
    shard, record, labels, jpegs, shas = [], [], [], [], []
    for k, path in enumerate(shards):
        for i, rec in enumerate(read_shard(path)):
            shard.append(k)
            record.append(i)
            labels.append(rec.label)
            jpegs.append(rec.image_raw)
            shas.append(rec.source_sha256)
    return Crops(names, np.array(shard), np.array(record), np.array(labels, np.int64), jpegs,
                 shas)


def audit(source: str | Path, *, near_dup_distance: int = neardup.DEFAULT_DISTANCE,
          cache_dir: str | Path | None = None, workers: int | None = None,
          log: Log = print) -> list[Suspect]:
    """The suspects of a dataset folder or of a cross-validation folder's dataset, most
    suspect first (see the module docstring).

    Raises ``FileNotFoundError``/``ValueError`` naming ``source`` when it is neither a dataset
    nor a cv (or finished run) folder with out-of-fold predictions, ``ModuleNotFoundError``
    naming the pip command when cleanlab/scikit-learn (``audit`` extra) or, for a dataset,
    dlib (``dlib`` extra) is missing.
    """
    near_dup_distance = neardup.check_distance(near_dup_distance, "near_dup_distance")
    require("`dataset audit`")
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"{source} does not exist or is not a folder")
    if runs.is_run(source) or runs.is_cv(source):
        data_dir, crops, probabilities, fallback = _from_runs(source, log)
    else:
        data_dir = source
        if not any(records.SHARD_REGEX.match(p.name) for p in source.iterdir()):
            raise FileNotFoundError(
                f"{source} is neither a dataset folder (data-NN.tfrecords, labels.txt) nor a "
                "facefold cv folder (cv.json)")
        crops = read_crops(source)
        probabilities, fallback = _from_embeddings(source, crops, cache_dir, workers, log)
    covered = ~np.isnan(probabilities[:, 0])
    log(f"audit: {int(covered.sum())} of {len(crops.labels)} crops have out-of-fold "
        f"probabilities; out-of-fold accuracy "
        f"{np.mean(probabilities[covered].argmax(1) == crops.labels[covered]):.3f}")
    files = source_file_map(data_dir)
    return rank_suspects(crops, probabilities, fallback, near_dup_distance, files)


def rank_suspects(crops: Crops, probabilities: np.ndarray, fallback: np.ndarray | None,
                  near_dup_distance: int, files: dict[str, Path]) -> list[Suspect]:
    """The suspects among ``crops`` given out-of-fold ``probabilities`` (N, C) (rows of NaN:
    crops without one, judged only as near-duplicates), landmark ``fallback`` (N,) bool or
    None, and ``files`` (source SHA-256 -> path); most suspect first, ties in shard order."""
    kinds, suggested, score, detail = label_kinds(crops.labels, probabilities)
    if near_dup_distance:
        hashes = np.stack([neardup.phash_jpeg(j) for j in crops.jpegs])
        for i, j, distance in neardup.near_pairs(hashes, near_dup_distance).tolist():
            if crops.labels[i] == crops.labels[j]:
                continue
            for a, b in ((i, j), (j, i)):
                if "near-duplicate" not in kinds[a]:
                    kinds[a].insert(0, "near-duplicate")
                near = 1 - distance / neardup.HASH_BITS
                if near >= score[a]:
                    suggested[a] = int(crops.labels[b])
                score[a] = max(score[a], near)
                detail[a].insert(0, f"{distance} bits from {_where(crops, files, b)} "
                                 f"({crops.names[crops.labels[b]]})")
    if fallback is not None:
        for i in np.flatnonzero(fallback):
            kinds[i].append("not-a-face")
            detail[i].append("landmark fit failed")
    listed = [i for i in range(len(kinds)) if kinds[i]]
    listed.sort(key=lambda i: -score[i])  # stable: ties stay in shard order
    return [Suspect(
        source=_where(crops, files, i), given=crops.names[crops.labels[i]],
        suggested=crops.names[suggested[i]], score=float(score[i]), kind="+".join(kinds[i]),
        detail="; ".join(detail[i]), shard=int(crops.shard[i]), record=int(crops.record[i]),
        sha256=crops.sha256[i] if crops.sha256[i] in files else "", crop=crops.jpegs[i],
    ) for i in listed]


def _where(crops: Crops, files: dict[str, Path], i: int) -> str:
    path = files.get(crops.sha256[i])
    return str(path) if path else f"data-{crops.shard[i]:02d}.tfrecords record {crops.record[i]}"


CSV_COLUMNS = ("rank", "source", "given", "suggested", "score", "kind", "detail", "shard",
               "record", "sha256")


def format_suspects(suspects: Sequence[Suspect]) -> str:
    """One line per suspect, most suspect first: rank, score, source file, given -> suggested
    label, kind, detail (tab-separated, so file names with spaces stay one field)."""
    return "\n".join(
        f"{rank}\t{s.score:.3f}\t{s.source}\t{s.given} -> {s.suggested}\t{s.kind}\t{s.detail}"
        for rank, s in enumerate(suspects, start=1))


def write_suspects_csv(path: str | Path, suspects: Sequence[Suspect]) -> None:
    """The suspects as a CSV (:data:`CSV_COLUMNS`), atomically, every cell spreadsheet-safe."""
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for rank, s in enumerate(suspects, start=1):
            writer.writerow(safe_row([rank, s.source, s.given, s.suggested, f"{s.score:.4f}",
                                      s.kind, s.detail, s.shard, s.record, s.sha256]))


# ------------------------------------------------------------- out-of-fold probabilities


def _from_embeddings(data_dir: Path, crops: Crops, cache_dir: str | Path | None,
                     workers: int | None, log: Log) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold probabilities of a dataset's crops from their dlib128 embeddings."""
    from facefold.embeddings.shards import embed_shards

    splits = embed_shards(data_dir, EMBEDDING, count=2, cache_dir=cache_dir, log=log,
                          workers=workers)
    features = np.concatenate([s.images for s in splits]).mean(axis=1)  # image and mirror
    fallback = np.concatenate([s.fallback for s in splits])
    log(f"audit: {len(list_shards(data_dir))}-fold logistic regression on the {EMBEDDING} "
        "embeddings")
    return out_of_fold_probabilities(features, crops.labels, crops.shard,
                                     len(crops.names)), fallback


def _from_runs(folder: Path, log: Log) -> tuple[Path, Crops, np.ndarray, np.ndarray | None]:
    """The dataset, its crops, and the held-out probabilities of a cv (or run) folder: rows of
    NaN for crops no case held out."""
    try:
        dirs = runs.run_dirs(folder)
    except FileNotFoundError:
        raise ValueError(
            f"{folder} has no out-of-fold predictions ({runs.PREDICTIONS_FILE}): a run that "
            "has not finished, or a model fit on every shard (`facefold fit`), which held no "
            "crop out; audit its dataset folder or a `facefold cv` folder instead") from None
    data_dirs = {str(runs.read_run_info(d).get("data_dir", "")) for d in dirs}
    if len(data_dirs) != 1:
        raise ValueError(f"the cases of {folder} were trained on different datasets: "
                         f"{', '.join(sorted(data_dirs))}")
    data_dir = Path(data_dirs.pop())
    crops = read_crops(data_dir)
    probabilities = np.full((len(crops.labels), len(crops.names)), np.nan)
    for run_dir in dirs:
        if runs.read_run_labels(run_dir) != crops.names:
            raise ValueError(f"{run_dir}/labels.txt differs from {data_dir}/labels.txt: the "
                             "dataset changed since the run")
        data = runs.read_predictions(run_dir)  # FileNotFoundError: the case has not finished
        rows = np.flatnonzero(np.isin(crops.shard, runs.read_run_info(run_dir)["eval_shards"]))
        if not np.array_equal(crops.labels[rows], data["labels"]):
            raise ValueError(f"{run_dir}: the held-out shards of {data_dir} no longer match "
                             f"{runs.PREDICTIONS_FILE} (the dataset changed since the run)")
        probabilities[rows] = data["probabilities"]
    log(f"audit: out-of-fold predictions of {len(dirs)} case(s) of {folder}")
    return data_dir, crops, probabilities, _cached_fallback(dirs[0], crops)


def _cached_fallback(run_dir: Path, crops: Crops) -> np.ndarray | None:
    """The landmark fallbacks of the crops from the embedding cache, for a run on an
    embedding (None for a CNN, or when the cache lacks a crop): nothing is computed."""
    from facefold.embeddings.cache import EmbeddingCache, content_hash
    from facefold.machine import default_cache_dir

    embedding = runs.read_run_info(run_dir).get("embedding") or {}
    if not embedding.get("name"):
        return None
    cache = EmbeddingCache(default_cache_dir(), embedding["name"], embedding["model_version"])
    keys = [content_hash(j) for j in crops.jpegs]
    views = [[cache.get(key, mirror) for key in keys] for mirror in (False, True)]
    if any(e is None for e in views[0]):
        return None
    # Either view fell back, as embed_shards counts it; the mirror's entry where it is cached.
    return np.array([any(e is not None and e[1] for e in pair) for pair in zip(*views,
                                                                               strict=True)])


# ------------------------------------------------------------------- measuring the audit


@dataclass(frozen=True)
class Swap:
    """One picture filed under the wrong person on purpose: ``file`` (its path in the swapped
    copy) belongs to ``true`` but sits in ``given``'s folder; ``sha256`` of its bytes."""

    file: Path
    sha256: str
    true: str
    given: str


def inject_swaps(data_dir: str | Path, out: str | Path, fraction: float = 0.03,
                 seed: int = 0) -> list[Swap]:
    """Copy the source pictures of a built dataset to ``out`` (new), one folder per person,
    with ``round(fraction × crops)`` of them swapped in pairs between two people's folders:
    a measuring helper for the audit (docs/examples/audit_swaps.py), never used on real data.

    Only the pictures the dataset holds are copied, so every person keeps exactly as many and
    ``dataset build out --per-class <the same>`` keeps them all. Pairs are drawn with ``seed``
    among pictures of different people; an odd count swaps one picture in a three-way cycle.
    """
    crops = read_crops(data_dir)
    files = source_file_map(data_dir)
    if not files or any(s not in files for s in crops.sha256):
        raise ValueError(f"{data_dir}: its source pictures cannot all be found (manifest.json "
                         "source folder); swaps need them")
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; inject_swaps writes a new folder")
    count = round(fraction * len(crops.labels))
    if count < 2:
        raise ValueError(f"fraction {fraction} of {len(crops.labels)} crops is under 2 swaps")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(crops.labels))
    chosen: list[int] = []
    for i in order:  # distinct pictures; each of another person than the one before it
        if len(chosen) == count:
            break
        # An odd last picture joins the last pair in a cycle of three: a third person.
        before = chosen[-2:] if count % 2 and len(chosen) == count - 1 else chosen[-1:]
        if all(crops.labels[i] != crops.labels[c] for c in before):
            chosen.append(int(i))
    if len(chosen) < count:
        raise ValueError(f"{data_dir}: too few people to swap {count} pictures")
    # Each picture goes to the next one's person (a cycle over the chosen ones, in pairs).
    cycle = [chosen[k:k + 2] for k in range(0, count - count % 2, 2)]
    if count % 2:
        cycle[-1].append(chosen[-1])
    target = {}
    for group in cycle:
        for a, b in zip(group, group[1:] + group[:1], strict=True):
            target[a] = int(crops.labels[b])
    bad = [a for a, t in target.items() if t == crops.labels[a]]
    assert not bad, "a swap kept a picture in its own folder"
    swaps = []
    for i in range(len(crops.labels)):
        path = files[crops.sha256[i]]
        person = crops.names[target.get(i, int(crops.labels[i]))]
        copy = out / person / f"{path.parent.name}-{path.name}"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
        if i in target:
            swaps.append(Swap(copy, crops.sha256[i], crops.names[crops.labels[i]], person))
    return swaps


def recall_at(suspects: Sequence[Suspect], swapped: set[str], k: int) -> float:
    """The share of ``swapped`` (source SHA-256s) among the first ``k`` suspects."""
    found = {s.sha256 for s in suspects[:k]} & swapped
    return len(found) / len(swapped)
