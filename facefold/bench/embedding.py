"""The embedding bench: dlib's descriptor and the Keras network side by side — throughput in
one process and in worker processes, and the per-face cost.
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
                    images: int = 128, workers: int | None = None,
                    log: Log = print) -> dict[str, Any]:
    """dlib's own descriptor and the Keras network side by side, on ``images`` crops of
    ``data_dir``'s first shard or SYNTHETIC faces: for each backend, views per second in one
    process (all crops in one call: one batch for Keras) and in a pool of ``workers``
    (default one per core), whether the pool gave the very same vectors, and the median /
    p95 milliseconds of embedding one face with 1 and 2 views (the mirror).

    Returns ``{"machine", "embedding", "images", "workers", "backends": {backend: …},
    "keras_over_dlib": {"one_process", "workers"}}`` (throughput ratios).
    """
    from facefold.data.records import list_shards, read_shard
    from facefold.embeddings import dlib128
    from facefold.embeddings.pictures import embedder
    from facefold.embeddings.shards import EmbeddingWorkers

    if images < 2:
        raise ValueError(f"images must be >= 2, got {images}")
    embedder(name)  # an unknown name or a missing extra fails here
    with tempfile.TemporaryDirectory() as tmp:
        if data_dir is None:
            data_dir = synthetic_dataset(Path(tmp), images, log)
        stored = []
        for i, record in enumerate(read_shard(list_shards(data_dir)[0])):
            stored.append((record.image_raw, f"record {i}"))
            if len(stored) == images:
                break
    pictures = np.stack([np.asarray(load_rgb(data, where)) for data, where in stored])
    backends = {}
    for backend in ("dlib", "keras"):
        model = dlib128.load(backend)
        model.embed(pictures[:2])  # warm-up: the graph traced, the first allocations made
        log(f"bench: {backend}: embedding {len(stored)} crops in 1 process, then in workers")
        started = time.perf_counter()
        one, _ = model.embed(pictures)
        sequential = len(stored) / (time.perf_counter() - started)
        with EmbeddingWorkers(name, workers, backend) as pool:
            count = pool.workers
            list(pool.map([(stored[:2], False)] * count))  # start and load every worker
            size = math.ceil(len(stored) / (2 * count))  # two chunks each: even load, big batches
            chunks = [(stored[i : i + size], False) for i in range(0, len(stored), size)]
            started = time.perf_counter()
            pooled = np.concatenate([e for e, _ in pool.map(chunks)])
            parallel = len(stored) / (time.perf_counter() - started)
        latency = {}
        for views in (1, 2):
            times = []
            for picture in pictures[:20]:
                started = time.perf_counter()
                for view in range(views):
                    model.embed(picture[None], mirror=bool(view))
                times.append((time.perf_counter() - started) * 1000)
            latency[views] = {"median_ms": statistics.median(times),
                              "p95_ms": float(np.percentile(times, 95))}
        backends[backend] = {
            "version": model.version, "views_per_s_one_process": sequential,
            "views_per_s_workers": parallel, "speedup": parallel / sequential,
            "same_vectors": bool(np.array_equal(one, pooled)), "per_face_ms": latency,
            "ms_per_view": 1000 / max(sequential, parallel)}
    dlib, keras_ = backends["dlib"], backends["keras"]
    return {"machine": machine_info(), "embedding": name, "images": len(stored),
            "workers": count, "backends": backends, "keras_over_dlib": {
                "one_process": keras_["views_per_s_one_process"]
                / dlib["views_per_s_one_process"],
                "workers": keras_["views_per_s_workers"] / dlib["views_per_s_workers"]}}


def format_bench_embedding(result: dict[str, Any]) -> str:
    mac, dlib, keras_ = result["machine"], result["backends"]["dlib"], result["backends"]["keras"]
    ratio = result["keras_over_dlib"]

    def row(label: str, d: str, k: str, r: str = "") -> str:
        return f"{label:<28}{d:>22}{k:>22}  {r}".rstrip()

    def latency(b: dict[str, Any], views: int) -> str:
        lat = b["per_face_ms"][views]
        return f"{lat['median_ms']:.0f} / {lat['p95_ms']:.0f} ms"

    workers = result["workers"]
    return "\n".join([
        f"machine: {mac['cpu']}, {mac['cores']} cores; embedding {result['embedding']}, "
        f"{result['images']} crops",
        row("", "dlib", "keras", "keras / dlib"),
        row("views/s, 1 process", f"{dlib['views_per_s_one_process']:.1f}",
            f"{keras_['views_per_s_one_process']:.1f}", f"{ratio['one_process']:.1f}x"),
        row(f"views/s, {workers} workers", f"{dlib['views_per_s_workers']:.1f}",
            f"{keras_['views_per_s_workers']:.1f}", f"{ratio['workers']:.1f}x"),
        row("ms per view (the faster)", f"{dlib['ms_per_view']:.1f}",
            f"{keras_['ms_per_view']:.1f}"),
        row("workers / 1 process", f"{dlib['speedup']:.2f}x", f"{keras_['speedup']:.2f}x"),
        row("workers: same vectors", str(dlib["same_vectors"]), str(keras_["same_vectors"])),
        row("one face, 1 view (median/p95)", latency(dlib, 1), latency(keras_, 1)),
        row("one face, 2 views (+mirror)", latency(dlib, 2), latency(keras_, 2)),
    ])
