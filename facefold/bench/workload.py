"""What every benchmark runs on: this machine as reported, the preset's config, the
data (a dataset's shards or SYNTHETIC faces) and training batches held in memory.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import tensorflow as tf

from facefold.config import Config, ModelSpec
from facefold.data.build import build_dataset
from facefold.data.pipeline import (
    BatchMaker,
    Split,
    concat,
    decode_shards,
    without_autotuning,
)
from facefold.data.records import read_labels
from facefold.data.synthetic import make_synthetic_faces
from facefold.log import Log
from facefold.machine import cpu_model, onednn_setting, usable_cores
from facefold.models.families import family_of
from facefold.models.presets import resolve_config

SYNTHETIC_PEOPLE = 10
SYNTHETIC_SIZE = 112  # the 2016 stored size, so the 96x96 crop (and its jitter) applies
# Compute-only training cycles through this many real batches held in memory. Not one batch:
# a model that memorizes a single batch drives its gradients towards zero, and arithmetic on
# subnormal floats made compute-only steps slower in some runs here.
MEMORY_BATCHES = 8


def machine_info() -> dict[str, Any]:
    """This machine as the benchmark reports it: the CPU model, the cores this process may
    use, TensorFlow's intra-op threads (0 = its default, one per core) and its version."""
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "tensorflow": tf.__version__,
        "onednn": onednn_setting() or "TensorFlow's default",
    }


def bench_config(preset: str, size: int | None, batch: int) -> Config:
    """The preset's config with the benchmark's batch and optional input ``size``."""
    model = {"input_size": size} if size else {}
    config = resolve_config(preset, overrides={"model": model, "train": {"batch_size": batch}})
    family_of(config).require_conv_layers(config, "bench")
    return config


def synthetic_dataset(out: Path, batch: int, log: Log) -> Path:
    """Draw and shard SYNTHETIC faces, enough for two training batches; returns the dataset."""
    per_person = max(12, math.ceil(2 * batch / SYNTHETIC_PEOPLE))
    log(f"bench: drawing {SYNTHETIC_PEOPLE} SYNTHETIC people x {per_person} faces")
    faces = make_synthetic_faces(
        out / "faces", people=SYNTHETIC_PEOPLE, per_person=per_person, size=SYNTHETIC_SIZE
    )
    build_dataset(faces, out / "data", shards=2, per_class=per_person, size=SYNTHETIC_SIZE,
                  log=lambda _: None)
    return out / "data"


def load_data(data_dir: Path, spec: ModelSpec) -> tuple[Split, int]:
    """Every shard of ``data_dir`` decoded into one split, and the number of classes."""
    split = concat(decode_shards(data_dir, spec.channels))
    side = min(split.images.shape[1:3])
    if side < spec.crop_size:
        raise ValueError(
            f"{data_dir} holds {side}px images, smaller than the model's {spec.crop_size}px crop"
        )
    return split, len(read_labels(data_dir))


def batches_in_memory(make_batch: BatchMaker, count: int = MEMORY_BATCHES) -> tf.data.Dataset:
    """Training batches ``0 … count - 1``, made once and then repeated from memory forever:
    training minus the input pipeline. Without tf.data's autotuning
    (:func:`~facefold.data.pipeline.without_autotuning`): with it, a timed fit sometimes
    ended only when the autotuning thread next woke (docs/performance.md, "The 2x mode")."""
    x, y = zip(*(make_batch(tf.constant(s, tf.int64)) for s in range(count)), strict=True)
    return without_autotuning(tf.data.Dataset.from_tensor_slices((tf.stack(x), tf.stack(y)))
                              .repeat())

