"""How fast does a model train, evaluate and predict here, and how close to the FLOP count?

Two halves:

* :func:`count_training_flops` counts, from a :class:`~facefold.config.ModelSpec`
  alone, the floating-point operations of one training step.
* :func:`run_bench` measures, in one run on this machine: training images/s on
  a few real batches held in memory (compute only) and through the real input pipeline,
  evaluation images/s, single-image prediction latency, the achieved GFLOP/s
  and the peak memory. :func:`format_bench` prints the result as a table.

What is counted
---------------
Only the multiply-adds of the convolutions and dense layers, 2 FLOPs each
(bias adds excluded)::

    conv  (per image) = 2 · k · k · C_in · C_out · H · W   at the conv's output size
                                                            (SAME padding, stride 1)
    dense (per image) = 2 · in · out

A training step is taken as 3 × forward (forward, gradient w.r.t. the inputs,
gradient w.r.t. the weights) × batch, the usual convention. Ignored — not
counted anywhere — are pooling, ReLU, per-image standardization, the
antialiased resize of the ``size*`` presets, bias adds, batch norm, the
additions of residual blocks, dropout, the softmax/loss and the Adam update
(about 10 FLOPs per parameter: ~0.04 GFLOP per step for the seed model, under
0.1 % of the total). The count is slightly high as well:
TensorFlow never computes the first convolution's input gradient (the images
need none), which is 2 · forward(conv1) · batch, about 4 % of a seed step.

Hand count for the ``seed`` preset (96×96×3 input, 40 people), per image::

    conv1  2·9·3·32·96·96      =  15,925,248
    conv2  2·9·32·48·48·48     =  63,700,992
    conv3  2·9·48·72·24·24     =  35,831,808
    conv4  2·9·72·108·12·12    =  20,155,392
    fc1    2·(6·6·108)·1024    =   7,962,624   (6·6·108 = 3888 after the 4th pool)
    fc2    2·1024·256          =     524,288
    logits 2·256·40            =      20,480
    forward                    = 144,120,832   ≈ 0.144 GFLOP
    training step, batch 128   = 3 · 128 · 144,120,832 = 55,342,399,488 ≈ 55.3 GFLOP

(with 18 people: 55,338,074,112 — the class count barely matters).

The ``modern`` preset (stem conv, residual stages 2–4 with 1×1 projections,
global average pooling; 18 people), per image::

    conv1a 2·9·3·16·96·96      =   7,962,624
    stage 2 at 48×48 (16 -> 32): conv2a 21,233,664 + conv2b 42,467,328 + shortcut 2,359,296
    stage 3 at 24×24 (32 -> 48): conv3a 15,925,248 + conv3b 23,887,872 + shortcut 1,769,472
    stage 4 at 12×12 (48 -> 96): conv4a 11,943,936 + conv4b 23,887,872 + shortcut 1,327,104
    logits 2·96·18             =       3,456
    forward                    = 152,767,872; training step, batch 128 ≈ 58.7 GFLOP

Flip TTA doubles the forward pass of evaluation and prediction, not of training.
"""

from __future__ import annotations

import io
import math
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from facefold.config import Config, ModelSpec
from facefold.data.build import build_dataset
from facefold.data.pipeline import (
    BatchMaker,
    Split,
    batch_maker,
    center_crop,
    concat,
    decode_shards,
    evaluation_batches,
    step_batches,
)
from facefold.data.records import read_labels
from facefold.data.synthetic import make_synthetic_faces
from facefold.models.cnn import CONV_NAME, DENSE_NAME, build_model
from facefold.models.presets import resolve_config
from facefold.train.precision import cpu_model, resolve_precision

# The trainer's compile (optimizer, loss, metric, no XLA): the benchmark must time
# exactly the step `facefold train` runs, so it reuses it rather than restating it.
from facefold.train.trainer import Log, compile_model

TRAIN_PASSES = 3  # forward + input gradient + weight gradient
TIMING_ROUNDS = 2  # default alternations of compute / pipeline timings; the best counts
SYNTHETIC_PEOPLE = 10
SYNTHETIC_SIZE = 112  # the 2016 stored size, so the 96x96 crop (and its jitter) applies
LATENCY_WARMUP = 10


# --------------------------------------------------------------------------- FLOPs


def count_training_flops(spec: ModelSpec, num_classes: int, batch: int) -> dict[str, Any]:
    """FLOPs of one training step of the CNN built from ``spec``, counted analytically.

    Takes the architecture, the number of classes and the batch size. Returns
    ``{"per_layer_forward": {"conv1": …, "fc1": …, "logits": …}`` (forward FLOPs
    per image), ``"forward_per_image"`` (their sum), ``"train_step"``
    (``3 × forward_per_image × batch``), ``"batch"`` and ``"num_classes"``}.
    Only conv and dense multiply-adds count; see the module docstring for what
    is left out and the hand count of the seed model (≈ 55.3 GFLOP at batch 128).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    layers: dict[str, int] = {}
    side, width_in = spec.input_size, spec.channels
    for i, width in enumerate(spec.conv_channels, start=1):
        layers.update(_stage_flops(spec, i, width_in, width, side))
        side, width_in = math.ceil(side / 2), width  # max-pool stride 2, SAME padding
    # The flattened last pool, or one value per channel after global average pooling.
    units_in = width_in if spec.global_pool else side * side * width_in
    for i, units in enumerate(spec.dense_units, start=1):
        layers[DENSE_NAME.format(i)] = 2 * units_in * units
        units_in = units
    layers["logits"] = 2 * units_in * num_classes
    forward = sum(layers.values())
    return {
        "per_layer_forward": layers,
        "forward_per_image": forward,
        "train_step": TRAIN_PASSES * forward * batch,
        "batch": batch,
        "num_classes": num_classes,
    }


def _stage_flops(spec: ModelSpec, i: int, width_in: int, width: int, side: int) -> dict[str, int]:
    """Forward FLOPs per image of the convs of stage ``i`` (``width_in`` -> ``width`` channels
    at ``side`` x ``side``), keyed by layer name as :func:`facefold.models.cnn.build_model`
    names them: ``conv{i}``, or ``conv{i}a`` (+ ``conv{i}b``, ``conv{i}_shortcut``)."""

    def conv(kernel: int, channels_in: int) -> int:
        # SAME, stride 1: the conv's output has the input's side.
        return 2 * kernel**2 * channels_in * width * side * side

    name, residual = CONV_NAME.format(i), spec.residual and i > 1  # stage 1 is never residual
    if not spec.batch_norm and not residual:
        return {name: conv(spec.kernel_size, width_in)}
    layers = {f"{name}a": conv(spec.kernel_size, width_in)}
    if residual:
        layers[f"{name}b"] = conv(spec.kernel_size, width)
        if width_in != width:  # a projection only where the width changes
            layers[f"{name}_shortcut"] = conv(1, width_in)
    return layers


# --------------------------------------------------------------------------- machine


def machine_info(precision: str) -> dict[str, Any]:
    """This machine as the benchmark reports it; ``precision`` is the requested one.

    Returns the CPU model, the cores this process may use, TensorFlow's
    intra-op threads (0 = its default, one per core), the TensorFlow version and
    the resolved precision with the reason.
    """
    resolved, reason = resolve_precision(precision)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores": cores,
        "threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "tensorflow": tf.__version__,
        "precision": resolved,
        "precision_reason": reason,
    }


def _set_threads(threads: int) -> None:
    """Apply ``threads`` intra-op threads unless already in force (TF allows it only at start)."""
    if not threads or tf.config.threading.get_intra_op_parallelism_threads() == threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
    except RuntimeError as err:
        raise ValueError(
            f"threads={threads} must be set before TensorFlow starts (use `facefold --threads`)"
        ) from err


# --------------------------------------------------------------------------- data


def bench_config(preset: str, precision: str, size: int | None, batch: int) -> Config:
    """The preset's config with the benchmark's precision, batch and optional input ``size``."""
    model = {"input_size": size} if size else {}
    train = {"batch_size": batch, "precision": precision}
    config = resolve_config(preset, overrides={"model": model, "train": train})
    config.require_cnn("bench")
    return config


def _synthetic_dataset(out: Path, batch: int, log: Log) -> Path:
    """Draw and shard SYNTHETIC faces, enough for two training batches; returns the dataset."""
    per_person = max(12, math.ceil(2 * batch / SYNTHETIC_PEOPLE))
    log(f"bench: drawing {SYNTHETIC_PEOPLE} SYNTHETIC people x {per_person} faces")
    faces = make_synthetic_faces(
        out / "faces", people=SYNTHETIC_PEOPLE, per_person=per_person, size=SYNTHETIC_SIZE
    )
    build_dataset(faces, out / "data", shards=2, per_class=per_person, size=SYNTHETIC_SIZE,
                  log=lambda _: None)
    return out / "data"


def _load_data(data_dir: Path, spec: ModelSpec) -> tuple[Split, int]:
    """Every shard of ``data_dir`` decoded into one split, and the number of classes."""
    split = concat(decode_shards(data_dir, spec.channels))
    side = min(split.images.shape[1:3])
    if side < spec.crop_size:
        raise ValueError(
            f"{data_dir} holds {side}px images, smaller than the model's {spec.crop_size}px crop"
        )
    return split, len(read_labels(data_dir))


# --------------------------------------------------------------------------- timing


# Compute-only training cycles through this many real batches held in memory. Not one batch:
# a model that memorizes a single batch drives its gradients towards zero, and arithmetic on
# subnormal floats made compute-only steps 1.7x slower in some runs here.
MEMORY_BATCHES = 8


def _batches_in_memory(make_batch: BatchMaker, count: int = MEMORY_BATCHES) -> tf.data.Dataset:
    """Training batches ``0 … count - 1``, made once and then repeated from memory forever:
    training minus the input pipeline."""
    x, y = zip(*(make_batch(tf.constant(s, tf.int64)) for s in range(count)), strict=True)
    return tf.data.Dataset.from_tensor_slices((tf.stack(x), tf.stack(y))).repeat()


def _seconds_per_step(
    model: keras.Model, batches: Callable[[int, int], tf.data.Dataset], steps: int, warmup: int
) -> float:
    """Seconds per ``model.fit`` step on ``batches(start, end)``, after ``warmup`` untimed steps.

    The warm-up traces the step function and lets oneDNN pick its kernels. The
    dataset is built before the clock starts; its first batch is timed, as in training.
    """
    model.fit(batches(0, warmup), epochs=1, steps_per_epoch=warmup, shuffle=False, verbose=0)
    timed = batches(warmup, warmup + steps)
    start = time.perf_counter()
    model.fit(timed, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)
    return (time.perf_counter() - start) / steps


def _eval_images_per_second(
    model: keras.Model, split: Split, cfg: Config, min_images: int
) -> float:
    """Images/s of ``model.evaluate`` over the central crops, timing at least ``min_images``."""
    batches = evaluation_batches(split, cfg.model.crop_size, cfg.train.eval_batch_size)
    model.evaluate(batches, verbose=0)  # traces both the full and the last, partial batch
    passes = max(1, math.ceil(min_images / len(split)))
    start = time.perf_counter()
    model.evaluate(batches.repeat(passes), verbose=0)
    return passes * len(split) / (time.perf_counter() - start)


def _predict_latency_ms(model: keras.Model, image: tf.Tensor, calls: int) -> tuple[float, float]:
    """Median and 95th-percentile milliseconds of a forward pass on ``image`` (1, S, S, C).

    Times a ``tf.function`` around the model call, the way a server holding the
    loaded model would predict. ``model.predict`` is not used: its per-call
    set-up (data adapter, callbacks, batching) costs more than this forward pass.
    """
    forward = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec(image.shape, tf.float32)],
    )
    for _ in range(LATENCY_WARMUP):
        forward(image).numpy()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        forward(image).numpy()  # .numpy() waits for the result
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), float(np.percentile(times, 95))


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux ``ru_maxrss`` is in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(
    model: keras.Model, cfg: Config, split: Split,
    steps: int, warmup: int, latency_calls: int, log: Log, rounds: int = TIMING_ROUNDS,
) -> dict[str, float]:
    """Every timing of :func:`run_bench` on one compiled model (see there for the keys)."""
    spec, batch = cfg.model, cfg.train.batch_size
    make_batch = batch_maker(split, cfg.augment, spec.crop_size, batch, cfg.train.seed)
    in_memory = _batches_in_memory(make_batch)

    def real(start: int, end: int) -> tf.data.Dataset:
        return step_batches(make_batch, start, end)

    # Alternate the two measurements and keep each one's best round, so a burst of
    # other load on the machine cannot masquerade as a slow (or fast) input pipeline.
    times: dict[str, list[float]] = {"compute": [], "pipeline": []}
    for round_ in range(1, rounds + 1):
        log(f"bench: round {round_}/{rounds}: training on batches in memory, then through "
            f"the input pipeline ({warmup} warm-up + {steps} steps each)")
        times["compute"].append(_seconds_per_step(model, lambda s, e: in_memory, steps, warmup))
        times["pipeline"].append(_seconds_per_step(model, real, steps, warmup))
    compute, pipeline = min(times["compute"]), min(times["pipeline"])
    log("bench: evaluation and single-image latency")
    evaluation = _eval_images_per_second(model, split, cfg, steps * batch)
    median, p95 = _predict_latency_ms(model, center_crop(split.images[:1], spec.crop_size),
                                      latency_calls)
    return {
        "compute_seconds_per_step": compute,
        "compute_images_per_s": batch / compute,
        "pipeline_seconds_per_step": pipeline,
        "pipeline_images_per_s": batch / pipeline,
        "pipeline_over_compute": compute / pipeline,
        "eval_images_per_s": evaluation,
        "latency_median_ms": median,
        "latency_p95_ms": p95,
    }


# --------------------------------------------------------------------------- entry points


def run_bench(
    preset: str = "seed",
    precision: str = "auto",
    size: int | None = None,
    batch: int = 128,
    steps: int = 30,
    warmup: int = 5,
    data_dir: str | Path | None = None,
    threads: int = 0,
    latency_calls: int = 200,
    log: Log = print,
    rounds: int = TIMING_ROUNDS,
) -> dict[str, Any]:
    """Measure training, evaluation and prediction speed of a preset on this machine.

    Takes a preset name, ``precision`` (auto|float32|bfloat16), an optional
    ``size`` overriding ``model.input_size``, the training ``batch``, the timed
    ``steps`` after ``warmup`` untimed ones, a dataset folder (default: a small
    SYNTHETIC one drawn at 112px in a temporary folder), TensorFlow ``threads``
    (0 = default), the number of single-image ``latency_calls`` and of ``rounds``
    (compute-only and pipeline timings alternate that many times; the best of each
    counts, so more rounds resist bursts of load from other tenants of a shared VM).

    Returns ``{"machine", "settings", "flops", "measured"}``: ``flops`` is
    :func:`count_training_flops`; ``measured`` holds positive floats:
    ``compute_*`` (:data:`MEMORY_BATCHES` real batches cycled from memory),
    ``pipeline_*`` (real :func:`~facefold.data.pipeline.training_batches`),
    ``*_seconds_per_step``, ``*_images_per_s``,
    ``pipeline_over_compute`` (pipeline images/s ÷ compute images/s; 1.0 = the
    pipeline costs nothing), ``eval_images_per_s`` (``model.evaluate``),
    ``latency_median_ms`` / ``latency_p95_ms`` (one image, compiled forward),
    ``gflops_per_s`` (counted FLOPs per step ÷ compute seconds per step) and
    ``peak_memory_mb`` (``ru_maxrss`` of the whole process).
    """
    if min(steps, warmup, latency_calls, rounds) < 1:
        raise ValueError(
            "steps, warmup, latency_calls and rounds must be >= 1, got "
            f"{steps}, {warmup}, {latency_calls}, {rounds}"
        )
    _set_threads(threads)
    cfg = bench_config(preset, precision, size, batch)
    machine = machine_info(cfg.train.precision)
    with tempfile.TemporaryDirectory(prefix="facefold-bench-") as tmp:
        source = Path(data_dir) if data_dir else _synthetic_dataset(Path(tmp), batch, log)
        split, num_classes = _load_data(source, cfg.model)
    model = build_model(cfg.model, num_classes, machine["precision"], cfg.train.seed)
    compile_model(model, cfg)
    flops = count_training_flops(cfg.model, num_classes, batch)
    measured = _measure(model, cfg, split, steps, warmup, latency_calls, log,
                        rounds)
    measured["gflops_per_s"] = flops["train_step"] / measured["compute_seconds_per_step"] / 1e9
    measured["peak_memory_mb"] = peak_memory_mb()
    settings = {
        "preset": cfg.preset, "crop_size": cfg.model.crop_size,
        "input_size": cfg.model.input_size, "channels": cfg.model.channels,
        "batch": batch, "steps": steps, "warmup": warmup, "rounds": rounds,
        "latency_calls": latency_calls,
        "data": str(data_dir) if data_dir else f"SYNTHETIC faces at {SYNTHETIC_SIZE}px (temporary)",
        "images": len(split), "num_classes": num_classes,
    }
    return {"machine": machine, "settings": settings, "flops": flops, "measured": measured}


def _train_rate(measured: dict[str, float], kind: str) -> str:
    """``"123.4 images/s (1.037 s/step)"`` for ``kind`` = compute or pipeline."""
    images, seconds = measured[f"{kind}_images_per_s"], measured[f"{kind}_seconds_per_step"]
    return f"{images:.1f} images/s ({seconds:.3f} s/step)"


def format_bench(result: dict[str, Any]) -> str:
    """The :func:`run_bench` result as a readable table (machine and settings first)."""
    mac, s, m = result["machine"], result["settings"], result["measured"]
    threads = mac["threads"] or "default"
    rows = [
        ("training, compute only (batches in memory)", _train_rate(m, "compute")),
        ("training, real input pipeline", _train_rate(m, "pipeline")),
        ("pipeline / compute (images/s)", f"{m['pipeline_over_compute']:.2f}"),
        ("evaluation (model.evaluate)", f"{m['eval_images_per_s']:.1f} images/s"),
        ("predict 1 image (tf.function)",
         f"{m['latency_median_ms']:.2f} ms median, {m['latency_p95_ms']:.2f} ms p95"),
        ("achieved, compute only", f"{m['gflops_per_s']:.1f} GFLOP/s"),
        ("peak memory (ru_maxrss)", f"{m['peak_memory_mb']:.0f} MB"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join([
        f"machine: {mac['cpu']}, {mac['cores']} cores, TensorFlow {mac['tensorflow']}, "
        f"threads {threads}",
        f"precision: {mac['precision']} ({mac['precision_reason']})",
        f"model: preset {s['preset']}, {s['input_size']}x{s['input_size']} input from "
        f"{s['crop_size']}x{s['crop_size']}x{s['channels']} crops, {s['num_classes']} classes",
        f"data: {s['data']}, {s['images']} images; batch {s['batch']}, "
        f"{s['steps']} timed steps after {s['warmup']} warm-up, best of {s['rounds']} rounds",
        f"FLOPs per training step (conv + dense multiply-adds, 3 x forward): "
        f"{result['flops']['train_step'] / 1e9:.2f} GFLOP",
        "",
        *(f"{name:<{width}}  {value}" for name, value in rows),
    ])


def bench_model(model_dir: str | Path, data_dir: str | Path | None = None, faces: int = 40,
                log: Log = print) -> dict[str, Any]:
    """Time a model folder naming face crops, the whole way a deployed model does it (picture
    -> square crop -> network, or embedding then head -> name or "unknown"): one face per call
    (``faces`` calls, after one warm-up) and one call of ``faces`` crops. The crops are the first
    of ``data_dir``'s first shard, else SYNTHETIC faces of the model's image size."""
    from PIL import Image

    from facefold.data.records import list_shards, read_shard
    from facefold.predict import Predictor

    if faces < 1:
        raise ValueError(f"faces must be >= 1, got {faces}")
    predictor = Predictor.load(model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        if data_dir is None:
            data_dir = _synthetic_dataset(Path(tmp), faces, log)
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
    return {"machine": machine_info("float32"), "model": str(model_dir),
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
