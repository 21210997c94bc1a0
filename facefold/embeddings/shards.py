"""A dataset's shards as embeddings: what an embedding head trains and is evaluated on.

:func:`embed_shards` reads every record of every shard, looks its image up in
the cache by the SHA-256 of its stored JPEG bytes
(:mod:`facefold.embeddings.cache`) and computes only the missing ones: the
image decoded to RGB (:func:`facefold.data.images.load_rgb`, as ``predict``
decodes a picture), whole, as the model sees it at prediction time.

Which inputs a config needs is its model family's business
(:mod:`facefold.models.families`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from facefold.data.pipeline import Split
from facefold.data.records import ShardError, list_shards, read_labels, read_shard
from facefold.embeddings import dlib128
from facefold.embeddings.cache import EmbeddingCache, content_hash
from facefold.embeddings.pictures import embedder
from facefold.log import Log
from facefold.machine import default_cache_dir, start_tensorflow, usable_cores

# Images embedded per call of the model: a progress line each, bounded memory.
CHUNK = 64


@dataclass(frozen=True)
class EmbeddingSplit(Split):
    """Embeddings of face images: ``images`` (N, V, D) float32 — view 0 of the image as stored,
    view 1 (V = 2) of its mirror —, ``labels`` (N,) int32, ``fallback`` (N,) bool: the landmark
    fit failed in some view and the whole image was the chip (see :mod:`~.dlib128`)."""

    fallback: np.ndarray


class EmbeddingWorkers:
    """Processes that embed chunks of stored images in parallel.

    ``workers`` processes (default: one per usable core); with one, the chunks are embedded
    in this process and nothing is started. Worth it with either backend: dlib's own
    descriptor computes on one core, and beside the batched Keras network the landmark fit
    and chip (dlib, on one core) still leave room for a second worker (their cost:
    docs/performance.md, "The dlib128 descriptor: dlib against Keras").

    Workers are *spawned*, not forked: this process may hold TensorFlow's thread pools,
    which do not survive a fork. Each loads the model of the same backend once (a few
    seconds for ``keras``) and runs :func:`~facefold.embeddings.dlib128.embed_stored`;
    results come back in the order the chunks were given, and are the same numbers as
    sequential embedding (same code, same chunks, in another process). ``backend``: the
    descriptor's (default: the embedding's model, :func:`embedder`).
    """

    def __init__(self, name: str, workers: int | None = None, backend: str | None = None
                 ) -> None:
        # A missing extra fails here, in this process, with the pip command.
        self.model = embedder(name) if backend is None else dlib128.load(backend, name)
        self.backend = getattr(self.model, "backend", dlib128.BACKENDS[0])
        self.workers = max(1, workers or usable_cores())
        if not isinstance(self.model, dlib128.Dlib128):
            # A worker can only load the real model; an embedder put in its place (a test's
            # fake) lives in this process alone.
            self.workers = 1
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> EmbeddingWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def map(self, chunks: Sequence[tuple[Sequence[tuple[bytes, str]], bool]]
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(embeddings, fallback)`` of each ``(stored images, mirror)`` chunk, in order."""
        if self.workers == 1:
            for stored, mirror in chunks:
                yield self.model.embed(dlib128.decode_stored(stored), mirror)
            return
        if self._pool is None:  # started at the first work: a fully cached dataset starts none
            self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"),
                                             initializer=start_tensorflow)
        futures = [self._pool.submit(dlib128.embed_stored, stored, mirror, self.backend,
                                     self.model.name)
                   for stored, mirror in chunks]
        for future in futures:
            yield future.result()


def _embed_shard(path: Path, model: dlib128.Dlib128, cache: EmbeddingCache, count: int,
                 num_classes: int, workers: EmbeddingWorkers, log: Log) -> EmbeddingSplit:
    """Embed one shard's records, in order, computing only what the cache lacks."""
    records = list(read_shard(path))
    if not records:
        raise ShardError(f"{path} holds no records")
    labels = np.array([r.label for r in records], np.int32)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise ShardError(f"{path} record {bad[0]}: label {labels[bad[0]]} is outside the label "
                         f"list (0..{num_classes - 1})")
    keys = [content_hash(r.image_raw) for r in records]
    vectors = np.zeros((len(records), count, model.dim), np.float32)
    fallback = np.zeros(len(records), bool)
    missing: list[tuple[int, int]] = []  # (view, record) pairs the cache lacks
    for i, key in enumerate(keys):
        for view in range(count):
            entry = cache.get(key, bool(view))
            if entry is None:
                missing.append((view, i))
            else:
                vectors[i, view], fallback[i] = entry[0], fallback[i] or entry[1]
    if not missing:
        return EmbeddingSplit(vectors, labels, fallback)
    log(f"[{model.name}] {path.name}: embedding {len(missing)} of {len(records) * count} "
        f"image views (the rest are cached), {workers.workers} worker(s)")
    started = time.perf_counter()
    by_view = [[i for v, i in missing if v == view] for view in range(count)]
    chunks = [(view, indices[start : start + CHUNK]) for view, indices in enumerate(by_view)
              for start in range(0, len(indices), CHUNK)]
    work = [([(records[i].image_raw, f"{path} record {i}") for i in chunk], bool(view))
            for view, chunk in chunks]
    for (view, chunk), (embeddings, failed) in zip(chunks, workers.map(work), strict=True):
        for i, vector, bad_fit in zip(chunk, embeddings, failed, strict=True):
            cache.put(keys[i], bool(view), vector, bool(bad_fit))
            vectors[i, view], fallback[i] = vector, fallback[i] or bool(bad_fit)
    seconds = time.perf_counter() - started
    log(f"[{model.name}] {path.name}: {len(missing)} views in {seconds:.0f} s "
        f"({len(missing) / seconds:.1f} views/s)")
    return EmbeddingSplit(vectors, labels, fallback)


def embed_shards(
    data_dir: str | Path, name: str, count: int = 1, cache_dir: str | Path | None = None,
    log: Log = print, workers: int | None = None,
) -> list[EmbeddingSplit]:
    """Every shard of a dataset as embeddings ``name`` with ``count`` views, in shard order.

    Cached in ``cache_dir`` (default :func:`~facefold.machine.default_cache_dir`);
    what is missing is computed by ``workers`` processes (:class:`EmbeddingWorkers`; default
    one per usable core).
    Logs how many images fell back to the whole image. Raises ``ModuleNotFoundError`` naming
    the pip command when the extra is missing, :class:`ShardError` naming a bad record.
    """
    model = embedder(name)
    cache = EmbeddingCache(cache_dir or default_cache_dir(), name, model.version)
    num_classes = len(read_labels(data_dir))
    with EmbeddingWorkers(name, workers) as pool:
        splits = [_embed_shard(p, model, cache, count, num_classes, pool, log)
                  for p in list_shards(data_dir)]
    fallbacks = sum(int(s.fallback.sum()) for s in splits)
    if fallbacks:
        log(f"[{name}] {fallbacks} of {sum(len(s) for s in splits)} images: landmark fit "
            "failed, the whole image was the chip")
    return splits
