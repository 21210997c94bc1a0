"""The model bench: a model folder naming face crops, timed the whole way a deployed model
runs.
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from facefold.bench.workload import machine_info, synthetic_dataset
from facefold.log import Log


def bench_model(model_dir: str | Path, data_dir: str | Path | None = None, faces: int = 40,
                log: Log = print, crops: bool | None = None) -> dict[str, Any]:
    """Time a model folder naming face crops, the whole way a deployed model does it (picture
    -> square crop -> network, or embedding then head -> name or "unknown"): one face per call
    (``faces`` calls, after one warm-up) and one call of ``faces`` crops. The crops are the first
    of ``data_dir``'s first shard, else SYNTHETIC faces of the model's image size. ``crops``
    overrides a CNN run's ``model.tta_crops`` (None: as trained)."""
    from PIL import Image

    from facefold.data.records import list_shards, read_shard
    from facefold.predict import Predictor
    from facefold.predict.loading import load_model_folder

    if faces < 1:
        raise ValueError(f"faces must be >= 1, got {faces}")
    predictor = Predictor(load_model_folder(model_dir, crops=crops))
    with tempfile.TemporaryDirectory() as tmp:
        if data_dir is None:
            data_dir = synthetic_dataset(Path(tmp), faces, log)
        pictures = []
        for record in read_shard(list_shards(data_dir)[0]):
            pictures.append(Image.open(io.BytesIO(record.image_raw)).convert("RGB"))
            if len(pictures) == faces:
                break
    predictor.recognize(pictures[:1])  # warm-up: tracing, loading the embedding model
    times = []
    for picture in pictures:
        started = time.perf_counter()
        predictor.recognize([picture])
        times.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    predictor.recognize(pictures)
    batch_ms = (time.perf_counter() - started) * 1000 / len(pictures)
    return {"machine": machine_info(), "model": str(model_dir), "tta_crops": crops,
            "family": predictor.info.family, "faces": len(pictures),
            "per_face_median_ms": statistics.median(times),
            "per_face_p95_ms": float(np.percentile(times, 95)),
            "per_face_in_a_batch_ms": batch_ms}


def format_bench_model(result: dict[str, Any]) -> str:
    return (f"{result['model']} ({result['family']} family) on {result['machine']['cpu']}, "
            f"{result['machine']['cores']} cores: one face per call "
            f"{result['per_face_median_ms']:.1f} ms median, {result['per_face_p95_ms']:.1f} ms "
            f"p95 over {result['faces']} crops; {result['per_face_in_a_batch_ms']:.1f} ms per "
            f"face in one call of {result['faces']}")
