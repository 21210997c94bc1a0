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
from facefold.data.images import load_rgb
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
from facefold.machine import cpu_model, onednn_setting, usable_cores
from facefold.models.cnn import CONV_NAME, DENSE_NAME, RESIZE_ARGS, build_model
from facefold.models.presets import resolve_config

# The trainer's compile (optimizer, loss, metric, no XLA): the benchmark must time
# exactly the step `facefold train` runs, so it reuses it rather than restating it.
from facefold.train.optim import compile_model
from facefold.train.precision import PRECISIONS, resolve_precision
from facefold.train.trainer import Log

TRAIN_PASSES = 3  # forward + input gradient + weight gradient
TIMING_ROUNDS = 2  # default alternations of compute / pipeline timings; the best counts
SYNTHETIC_PEOPLE = 10
SYNTHETIC_SIZE = 112  # the 2016 stored size, so the 96x96 crop (and its jitter) applies
LATENCY_WARMUP = 10
MATMUL_SIZE = 2048  # the ceiling's matrices: large enough for oneDNN's best kernels


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


def bench_config(preset: str, size: int | None, batch: int) -> Config:
    """The preset's config with the benchmark's batch and optional input ``size``."""
    model = {"input_size": size} if size else {}
    config = resolve_config(preset, overrides={"model": model, "train": {"batch_size": batch}})
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


# --------------------------------------------------------------------------- peers


def plain_keras_model(spec: ModelSpec, num_classes: int, precision: str) -> keras.Model:
    """The same network as :func:`~facefold.models.cnn.build_model` for a 2016-style spec,
    written the way a Keras tutorial would: one ``Sequential`` of stock layers, Keras's
    default initializers, the mixed-precision policy on every layer. The independent peer
    that facefold's training step is timed against (it is never trained for accuracy)."""
    if spec.batch_norm or spec.residual or spec.global_pool or spec.tta_flip:
        raise ValueError("the plain Keras peer is the 2016 architecture: no batch norm, "
                         "residual blocks, global pooling or flip TTA")
    compute = "mixed_bfloat16" if precision == "bfloat16" else "float32"
    layers: list[keras.layers.Layer] = [
        keras.Input((spec.crop_size, spec.crop_size, spec.channels))]
    if spec.input_size != spec.crop_size:
        interpolation, antialias = RESIZE_ARGS[spec.resize]
        layers.append(keras.layers.Resizing(spec.input_size, spec.input_size,
                                            interpolation=interpolation, antialias=antialias))
    layers.append(keras.layers.Lambda(tf.image.per_image_standardization))
    for width in spec.conv_channels:
        layers += [
            keras.layers.Conv2D(width, spec.kernel_size, padding="same", activation="relu",
                                dtype=compute),
            keras.layers.MaxPool2D(spec.pool_size, strides=2, padding="same", dtype=compute),
        ]
    layers.append(keras.layers.Flatten(dtype=compute))
    decay = keras.regularizers.L2(spec.weight_decay / 2) if spec.weight_decay else None
    layers += [keras.layers.Dense(units, activation="relu", kernel_regularizer=decay,
                                  dtype=compute) for units in spec.dense_units]
    layers.append(keras.layers.Dense(num_classes, dtype="float32"))
    model = keras.Sequential(layers, name="plain_keras")
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def matmul_gflops(precision: str, n: int = MATMUL_SIZE, repeats: int = 5) -> float:
    """GFLOP/s of an n x n matrix product in ``precision`` (2·n³ FLOPs), best of ``repeats``
    after a warm-up: the ceiling that dense layers and oneDNN's convolutions (computed as
    matrix products) can hope for on this machine."""
    dtype = tf.bfloat16 if precision == "bfloat16" else tf.float32
    a = tf.random.stateless_normal((n, n), seed=(1, 2), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)
    product = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.matmul(x, y)[:1, :1], tf.float32)))
    product(a, b).numpy()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


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


def spread(seconds: list[float]) -> dict[str, float]:
    """``min`` / ``median`` / ``max`` seconds per step over rounds: a wide spread means the
    machine was busy (a shared VM), and only the minimum is the model's speed."""
    return {"min": min(seconds), "median": statistics.median(seconds), "max": max(seconds)}


def _rates(seconds: list[float], batch: int, flops: float) -> dict[str, Any]:
    best = min(seconds)
    return {"seconds_per_step": spread(seconds), "images_per_s": batch / best,
            "gflops_per_s": flops / best / 1e9}


def _time_training(
    models: dict[str, keras.Model], cfg: Config, split: Split, steps: int, warmup: int,
    rounds: int, log: Log,
) -> dict[str, dict[str, list[float]]]:
    """Seconds per step of every model, compute only (batches in memory) and, for facefold's
    own models, through the real input pipeline, per round.

    Rounds alternate over every model and both timings, so a burst of other load on the
    machine hits all of them alike instead of masquerading as one being slow (or fast).
    """
    batch = cfg.train.batch_size
    num_classes = int(next(iter(models.values())).output_shape[-1])
    make_batch = batch_maker(split, cfg.augment, cfg.model.crop_size, batch, cfg.train.seed,
                             num_classes)
    in_memory = _batches_in_memory(make_batch)

    def real(start: int, end: int) -> tf.data.Dataset:
        return step_batches(make_batch, start, end)

    times: dict[str, dict[str, list[float]]] = {
        name: {"compute": [], **({} if name.startswith(PEER) else {"pipeline": []})}
        for name in models}
    for round_ in range(1, rounds + 1):
        log(f"bench: round {round_}/{rounds}: {', '.join(models)} ({warmup} warm-up + "
            f"{steps} timed steps each, in memory and through the input pipeline)")
        for name, model in models.items():
            times[name]["compute"].append(
                _seconds_per_step(model, lambda s, e: in_memory, steps, warmup))
            if "pipeline" in times[name]:
                times[name]["pipeline"].append(_seconds_per_step(model, real, steps, warmup))
    return times


# --------------------------------------------------------------------------- entry points

PEER = "plain Keras "
PRECISION_CHOICES = ("both", "auto", "float32", "bfloat16")


def run_bench(
    preset: str = "seed",
    precision: str = "both",
    size: int | None = None,
    batch: int = 128,
    steps: int = 30,
    warmup: int = 5,
    data_dir: str | Path | None = None,
    threads: int = 0,
    latency_calls: int = 200,
    log: Log = print,
    rounds: int = TIMING_ROUNDS,
    peer: bool = True,
    matmul_size: int = MATMUL_SIZE,
) -> dict[str, Any]:
    """Measure training, evaluation and prediction speed of a preset on this machine.

    Takes a preset name, ``precision`` (``both`` = float32 and bfloat16 side by side,
    ``auto`` = the one :func:`~facefold.train.precision.resolve_precision` picks, or one of
    the two), an optional ``size`` overriding ``model.input_size``, the training ``batch``,
    the timed ``steps`` after ``warmup`` untimed ones, a dataset folder (default: a small
    SYNTHETIC one drawn at 112px in a temporary folder), TensorFlow ``threads`` (0 =
    default), the number of single-image ``latency_calls``, of ``rounds`` (the timings of
    every model alternate that many times; the best counts, the spread is reported) and
    whether to time the ``peer``, :func:`plain_keras_model`, for 2016-style presets, and the
    side of the ceiling's matrices.

    Returns ``{"machine", "settings", "flops", "auto", "ceiling", "measured"}``:
    ``flops`` is :func:`count_training_flops`; ``auto`` what ``train.precision: auto``
    picks here and why (None when one precision was asked for); ``ceiling`` the
    :func:`matmul_gflops` of each precision timed;
    ``measured[name]`` for each timed model (a precision, or ``"plain Keras <precision>"``)
    holds ``compute`` (:data:`MEMORY_BATCHES` real batches cycled from memory) and, for
    facefold's models, ``pipeline`` (real training batches): each ``seconds_per_step``
    (``min``/``median``/``max`` over rounds), ``images_per_s`` and ``gflops_per_s`` (of the
    best round) — and ``pipeline_over_compute``, ``of_ceiling`` (compute GFLOP/s over the
    matmul ceiling of its precision), ``eval_images_per_s``, ``latency_median_ms`` /
    ``latency_p95_ms`` (one image, compiled forward). ``peak_memory_mb`` is the process's.
    """
    if min(steps, warmup, latency_calls, rounds) < 1:
        raise ValueError(
            "steps, warmup, latency_calls and rounds must be >= 1, got "
            f"{steps}, {warmup}, {latency_calls}, {rounds}"
        )
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, "
                         f"got {precision!r}")
    _set_threads(threads)
    cfg = bench_config(preset, size, batch)
    with tempfile.TemporaryDirectory(prefix="facefold-bench-") as tmp:
        source = Path(data_dir) if data_dir else _synthetic_dataset(Path(tmp), batch, log)
        split, num_classes = _load_data(source, cfg.model)
    auto = None
    if precision in ("both", "auto"):  # what training would pick here, and why
        chosen, reason = resolve_precision("auto", cfg, num_classes)
        auto = {"precision": chosen, "reason": reason}
        log(f"bench: precision auto -> {chosen} ({reason})")
    precisions = list(PRECISIONS) if precision == "both" else [
        auto["precision"] if auto else precision]
    models = {}
    for p in precisions:
        models[p] = build_model(cfg.model, num_classes, p, cfg.train.seed)
        compile_model(models[p], cfg)
    plain = (peer and not (cfg.model.batch_norm or cfg.model.residual or cfg.model.global_pool
                           or cfg.model.tta_flip))
    if plain:
        models.update({PEER + p: plain_keras_model(cfg.model, num_classes, p)
                       for p in precisions})
    flops = count_training_flops(cfg.model, num_classes, batch)
    times = _time_training(models, cfg, split, steps, warmup, rounds, log)
    log("bench: matrix-product ceiling, evaluation and single-image latency")
    ceiling = {p: matmul_gflops(p, matmul_size) for p in precisions}
    measured: dict[str, dict[str, Any]] = {}
    for name, kinds in times.items():
        p = name.removeprefix(PEER)
        row = {kind: _rates(seconds, batch, flops["train_step"])
               for kind, seconds in kinds.items()}
        row["of_ceiling"] = row["compute"]["gflops_per_s"] / ceiling[p]
        if "pipeline" in row:
            row["pipeline_over_compute"] = (row["pipeline"]["images_per_s"]
                                            / row["compute"]["images_per_s"])
            row["eval_images_per_s"] = _eval_images_per_second(models[name], split, cfg,
                                                               steps * batch)
            row["latency_median_ms"], row["latency_p95_ms"] = _predict_latency_ms(
                models[name], center_crop(split.images[:1], cfg.model.crop_size),
                latency_calls)
        measured[name] = row
    settings = {
        "preset": cfg.preset, "crop_size": cfg.model.crop_size,
        "input_size": cfg.model.input_size, "channels": cfg.model.channels,
        "batch": batch, "steps": steps, "warmup": warmup, "rounds": rounds,
        "latency_calls": latency_calls, "matmul_size": matmul_size,
        "data": str(data_dir) if data_dir else f"SYNTHETIC faces at {SYNTHETIC_SIZE}px (temporary)",
        "images": len(split), "num_classes": num_classes,
    }
    return {"machine": machine_info(), "settings": settings, "flops": flops, "auto": auto,
            "ceiling": ceiling, "measured": measured, "peak_memory_mb": peak_memory_mb()}


def _seconds_cell(rates: dict[str, Any]) -> str:
    """``"0.375 (0.380, 0.392)"``: seconds per step of the best round (median, slowest)."""
    s = rates["seconds_per_step"]
    return f"{s['min']:.3f} ({s['median']:.3f}, {s['max']:.3f})"


def format_bench(result: dict[str, Any]) -> str:
    """The :func:`run_bench` result as a readable table: one column per timed model."""
    mac, s, m = result["machine"], result["settings"], result["measured"]
    names = list(m)
    rows: list[tuple[str, list[str]]] = [
        ("training s/step, compute only: best (median, max)",
         [_seconds_cell(m[n]["compute"]) for n in names]),
        ("training s/step, input pipeline: best (median, max)",
         [_seconds_cell(m[n]["pipeline"]) if "pipeline" in m[n] else "-" for n in names]),
        ("training images/s, compute only / pipeline",
         [f"{m[n]['compute']['images_per_s']:.0f} / "
          + (f"{m[n]['pipeline']['images_per_s']:.0f}" if "pipeline" in m[n] else "-")
          for n in names]),
        ("pipeline / compute (images/s)",
         [f"{m[n]['pipeline_over_compute']:.2f}" if "pipeline" in m[n] else "-"
          for n in names]),
        ("achieved, compute only",
         [f"{m[n]['compute']['gflops_per_s']:.0f} GFLOP/s" for n in names]),
        ("matrix-product ceiling (same precision)",
         [f"{result['ceiling'][n.removeprefix(PEER)]:.0f} GFLOP/s" for n in names]),
        ("achieved / ceiling", [f"{m[n]['of_ceiling']:.0%}" for n in names]),
        ("evaluation (model.evaluate)",
         [f"{m[n]['eval_images_per_s']:.0f} images/s" if "eval_images_per_s" in m[n] else "-"
          for n in names]),
        ("predict 1 image, median / p95",
         [f"{m[n]['latency_median_ms']:.2f} / {m[n]['latency_p95_ms']:.2f} ms"
          if "latency_median_ms" in m[n] else "-" for n in names]),
    ]
    label = max(len(name) for name, _ in rows)
    widths = [max(len(n), *(len(cells[i]) for _, cells in rows)) for i, n in enumerate(names)]
    table = [f"{'':<{label}}  " + "  ".join(f"{n:<{w}}" for n, w in zip(names, widths,
                                                                          strict=True))]
    table += [f"{name:<{label}}  " + "  ".join(f"{c:<{w}}" for c, w in zip(cells, widths,
                                                                            strict=True))
              for name, cells in rows]
    threads = mac["threads"] or "default"
    return "\n".join([
        f"machine: {mac['cpu']}, {mac['cores']} cores, TensorFlow {mac['tensorflow']}, "
        f"threads {threads}, TF_ENABLE_ONEDNN_OPTS {mac['onednn']}",
        "precision auto: " + (f"{result['auto']['precision']} ({result['auto']['reason']})"
                              if result["auto"] else "not asked (one precision requested)"),
        f"model: preset {s['preset']}, {s['input_size']}x{s['input_size']} input from "
        f"{s['crop_size']}x{s['crop_size']}x{s['channels']} crops, {s['num_classes']} classes",
        f"data: {s['data']}, {s['images']} images; batch {s['batch']}, "
        f"{s['steps']} timed steps after {s['warmup']} warm-up, {s['rounds']} rounds",
        f"FLOPs per training step (conv + dense multiply-adds, 3 x forward): "
        f"{result['flops']['train_step'] / 1e9:.2f} GFLOP; ceiling: {s['matmul_size']}² "
        "matrix product",
        "",
        *table,
        "",
        f"peak memory (ru_maxrss): {result['peak_memory_mb']:.0f} MB",
    ])


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
    from facefold.embeddings.shards import EmbeddingWorkers, embedder

    if images < 2:
        raise ValueError(f"images must be >= 2, got {images}")
    embedder(name)  # an unknown name or a missing extra fails here
    with tempfile.TemporaryDirectory() as tmp:
        if data_dir is None:
            data_dir = _synthetic_dataset(Path(tmp), images, log)
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


# --------------------------------------------------------------------------- profile


def _op_times(xplane: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds spent in TensorFlow ops on the host's compute threads, summed by op type and
    by the part of the step the op belongs to (its name's scope), from a profiler trace.

    TensorFlow's profiler writes an XPlane protobuf; each op it ran is an event named
    ``scope/…/name:OpType`` on a ``tf_Compute`` thread line (events with ``::`` in their
    name are the executor's own bookkeeping, not ops). Ops on the two inter-op threads can
    overlap, so the sums can exceed the wall time.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(xplane.read_bytes())
    by_type: dict[str, float] = {}
    by_part: dict[str, float] = {}
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if "::" in name or ":" not in name:
                    continue
                scope, op_type = name.rsplit(":", 1)
                seconds = event.duration_ps / 1e12
                by_type[op_type] = by_type.get(op_type, 0.0) + seconds
                part = _step_part(scope, op_type)
                by_part[part] = by_part.get(part, 0.0) + seconds
    return by_type, by_part


def _step_part(scope: str, op_type: str) -> str:
    """Which part of a training step an op (``scope``, ``op_type``) belongs to."""
    lowered = scope.lower()
    if "adam" in lowered or "ema" in lowered or op_type.startswith(("ResourceApply", "Assign")):
        return "optimizer and weight average"
    if "gradient" in lowered or op_type.endswith(("Grad", "Backprop", "BackpropFilter",
                                                  "BackpropInput")):
        return "backward"
    if op_type in ("IteratorGetNext", "OptionalGetValue", "OptionalHasValue"):
        return "input"
    return "forward and loss"


def profile_training(preset: str = "seed", precision: str = "auto", steps: int = 10,
                     warmup: int = 5, batch: int = 128, data_dir: str | Path | None = None,
                     log: Log = print, peer: bool = False) -> dict[str, Any]:
    """Where a training step's time goes: ``steps`` steps on batches held in memory, traced
    by TensorFlow's profiler after ``warmup`` untimed ones, summed by op type and by part of
    the step (forward and loss, backward, optimizer and weight average, input), in
    ``precision`` (``auto``: the one training picks here); with ``peer``, of the
    :func:`plain_keras_model` instead.

    Returns the wall seconds per step, ``by_type`` and ``by_part`` (seconds per step) and the
    share of the wall time that ops account for (the rest: Python, Keras's step loop, the
    executor between ops; above 1 when the two inter-op threads overlap).
    """
    cfg = bench_config(preset, None, batch)
    with tempfile.TemporaryDirectory(prefix="facefold-profile-") as tmp:
        source = Path(data_dir) if data_dir else _synthetic_dataset(Path(tmp), batch, log)
        split, num_classes = _load_data(source, cfg.model)
        if precision == "auto":
            precision, _ = resolve_precision("auto", cfg, num_classes)
        if peer:
            model = plain_keras_model(cfg.model, num_classes, precision)
        else:
            model = build_model(cfg.model, num_classes, precision, cfg.train.seed)
            compile_model(model, cfg)
        make_batch = batch_maker(split, cfg.augment, cfg.model.crop_size, batch, cfg.train.seed,
                                 num_classes)
        in_memory = _batches_in_memory(make_batch)
        model.fit(in_memory, epochs=1, steps_per_epoch=warmup, verbose=0)
        trace = Path(tmp) / "trace"
        log(f"bench: profiling {steps} training steps of {preset} in {precision}")
        tf.profiler.experimental.start(str(trace))
        start = time.perf_counter()
        model.fit(in_memory, epochs=1, steps_per_epoch=steps, verbose=0)
        wall = (time.perf_counter() - start) / steps
        tf.profiler.experimental.stop()
        files = sorted(trace.rglob("*.xplane.pb"))
        if not files:
            raise RuntimeError(f"TensorFlow's profiler wrote no trace under {trace}")
        by_type, by_part = _op_times(files[-1])
    per_step = {k: v / steps for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])}
    parts = {k: v / steps for k, v in sorted(by_part.items(), key=lambda kv: -kv[1])}
    return {"machine": machine_info(), "preset": PEER + cfg.preset if peer else cfg.preset,
            "precision": precision,
            "batch": batch, "steps": steps, "wall_seconds_per_step": wall,
            "op_share_of_wall": sum(per_step.values()) / wall, "by_type": per_step,
            "by_part": parts}


def format_profile(result: dict[str, Any], top: int = 15) -> str:
    wall, mac = result["wall_seconds_per_step"], result["machine"]
    lines = [f"machine: {mac['cpu']}, {mac['cores']} cores, TensorFlow {mac['tensorflow']}",
             f"{result['preset']}, {result['precision']}, batch {result['batch']}: "
             f"{wall:.3f} s per step (wall, {result['steps']} profiled steps); ops account "
             f"for {result['op_share_of_wall']:.0%} of it", "", "by part of the step:"]
    lines += [f"  {part:<30} {seconds * 1000:8.1f} ms  {seconds / wall:5.1%}"
              for part, seconds in result["by_part"].items()]
    lines += ["", f"by op type (top {top}):"]
    lines += [f"  {op:<30} {seconds * 1000:8.1f} ms  {seconds / wall:5.1%}"
              for op, seconds in list(result["by_type"].items())[:top]]
    return "\n".join(lines)
