"""The embedding bench: a pretrained embedding's throughput, in one process and in worker
processes, and its per-face cost.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from facefold.bench.workload import machine_info, synthetic_dataset
from facefold.data.images import load_rgb
from facefold.log import Log


def bench_embedding(name: str = "dlib128", data_dir: str | Path | None = None,
                    images: int = 64, workers: int | None = None,
                    log: Log = print) -> dict[str, Any]:
    """Embedding throughput in one process against a pool of ``workers`` (default one per
    core), and the per-face cost of the embedding family's prediction (one view, and two
    with the mirror), on ``images`` crops of ``data_dir``'s first shard or SYNTHETIC faces.

    Returns views per second of each, their ratio, whether the pool gave the very same
    vectors, and the median / p95 milliseconds of embedding one face with 1 and 2 views.
    """
    from facefold.data.records import list_shards, read_shard
    from facefold.embeddings import dlib128
    from facefold.embeddings.shards import EmbeddingWorkers, embed_images, embedder

    if images < 2:
        raise ValueError(f"images must be >= 2, got {images}")
    model = embedder(name)
    with tempfile.TemporaryDirectory() as tmp:
        if data_dir is None:
            data_dir = synthetic_dataset(Path(tmp), images, log)
        stored = []
        for i, record in enumerate(read_shard(list_shards(data_dir)[0])):
            stored.append((record.image_raw, f"record {i}"))
            if len(stored) == images:
                break
    dlib128.embed_stored(stored[:1], False)  # warm-up
    started = time.perf_counter()
    one, _ = dlib128.embed_stored(stored, False)
    sequential = len(stored) / (time.perf_counter() - started)
    with EmbeddingWorkers(name, workers) as pool:
        count = pool.workers
        list(pool.map([(stored[:1], False)] * count))  # start and load every worker
        size = math.ceil(len(stored) / (4 * count))  # a few chunks each: the load stays even
        chunks = [(stored[i : i + size], False) for i in range(0, len(stored), size)]
        log(f"bench: embedding {len(stored)} crops in 1 process, then {count} workers")
        started = time.perf_counter()
        pooled = np.concatenate([e for e, _ in pool.map(chunks)])
        parallel = len(stored) / (time.perf_counter() - started)
    pictures = np.stack([np.asarray(load_rgb(data, where)) for data, where in stored[:20]])
    latency = {}
    for views in (1, 2):
        times = []
        for picture in pictures:
            started = time.perf_counter()
            embed_images(picture[None], name, views)
            times.append((time.perf_counter() - started) * 1000)
        latency[views] = {"median_ms": statistics.median(times),
                          "p95_ms": float(np.percentile(times, 95))}
    return {"machine": machine_info(), "embedding": name, "version": model.version,
            "images": len(stored), "workers": count,
            "views_per_s_one_process": sequential, "views_per_s_workers": parallel,
            "speedup": parallel / sequential, "same_vectors": bool(np.array_equal(one, pooled)),
            "per_face_ms": latency}


def format_bench_embedding(result: dict[str, Any]) -> str:
    mac, lat = result["machine"], result["per_face_ms"]
    return "\n".join([
        f"machine: {mac['cpu']}, {mac['cores']} cores; embedding {result['embedding']}, "
        f"{result['images']} crops",
        f"embedding, 1 process:        {result['views_per_s_one_process']:.1f} views/s",
        f"embedding, {result['workers']} workers:        {result['views_per_s_workers']:.1f} "
        f"views/s ({result['speedup']:.2f}x; same vectors: {result['same_vectors']})",
        f"one face, 1 view (image):    {lat[1]['median_ms']:.0f} ms median, "
        f"{lat[1]['p95_ms']:.0f} ms p95",
        f"one face, 2 views (+mirror): {lat[2]['median_ms']:.0f} ms median, "
        f"{lat[2]['p95_ms']:.0f} ms p95",
    ])
