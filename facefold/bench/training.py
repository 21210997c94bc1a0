"""The training bench (:func:`run_bench`): training, evaluation and prediction speed of a
preset on this machine, in both precisions, beside the plain Keras peer and the ceiling.
"""

from __future__ import annotations

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

from facefold.bench.ceiling import MATMUL_SIZE, matmul_gflops
from facefold.bench.flops import count_training_flops
from facefold.bench.peer import PEER, plain_keras_model
from facefold.bench.workload import (
    SYNTHETIC_SIZE,
    batches_in_memory,
    bench_config,
    load_data,
    machine_info,
    synthetic_dataset,
)
from facefold.choices import PRECISION_SETTINGS, PRECISIONS
from facefold.config import Config
from facefold.data.pipeline import (
    Split,
    batch_maker,
    center_crop,
    evaluation_batches,
    step_batches,
)
from facefold.log import Log
from facefold.machine import in_new_process, set_tf_threads
from facefold.models.cnn import build_model

# The trainer's compile (optimizer, loss, metric, no XLA): the benchmark must time
# exactly the step `facefold train` runs, so it reuses it rather than restating it.
from facefold.train.optim import compile_model
from facefold.train.precision import resolve_precision
from facefold.train.steptime import SLOW_FACTOR, two_modes

TIMING_ROUNDS = 2  # default alternations of compute / pipeline timings; the best counts
LATENCY_WARMUP = 10
PRECISION_CHOICES = ("both", *PRECISION_SETTINGS)


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


def _timed_model(name: str, preset: str, size: int | None, batch: int, source: Path,
                 steps: int, warmup: int, threads: int,
                 latency_calls: int | None) -> dict[str, Any]:
    """Run in a process of its own (:func:`~facefold.machine.in_new_process`): model ``name``
    (a precision, or :data:`PEER` + precision) built and timed, compute only (batches in
    memory) and, for facefold's own, through the real input pipeline; with
    ``latency_calls``, also its evaluation speed and single-image latency. Returns the
    seconds per step, those extras, the process id and its peak memory."""
    set_tf_threads(threads)
    cfg = bench_config(preset, size, batch)
    split, num_classes = load_data(source, cfg.model)
    precision = name.removeprefix(PEER)
    if name.startswith(PEER):
        model = plain_keras_model(cfg.model, num_classes, precision)
    else:
        model = build_model(cfg.model, num_classes, precision, cfg.train.seed)
        compile_model(model, cfg)
    make_batch = batch_maker(split, cfg.augment, cfg.model.crop_size, batch, cfg.train.seed,
                             num_classes)
    in_memory = batches_in_memory(make_batch)
    out: dict[str, Any] = {"pid": os.getpid(), "compute": _seconds_per_step(
        model, lambda s, e: in_memory, steps, warmup)}
    if not name.startswith(PEER):
        out["pipeline"] = _seconds_per_step(
            model, lambda s, e: step_batches(make_batch, s, e), steps, warmup)
        if latency_calls:
            out["eval_images_per_s"] = _eval_images_per_second(model, split, cfg, steps * batch)
            out["latency_median_ms"], out["latency_p95_ms"] = _predict_latency_ms(
                model, center_crop(split.images[:1], cfg.model.crop_size), latency_calls)
    out["peak_memory_mb"] = peak_memory_mb()
    return out


def round_order(names: list[str], round_: int) -> list[str]:
    """The models of round ``round_`` (from 1) in the order they are timed: each of facefold's
    beside its peer of the same precision, facefold's first in odd rounds and the peer first
    in even ones, so that neither is always timed right after the other."""
    order = []
    for name in (n for n in names if not n.startswith(PEER)):
        pair = [name, *(n for n in names if n == PEER + name)]
        order += pair if round_ % 2 else pair[::-1]
    return order


def _time_training(
    names: list[str], timing: dict[str, Any], rounds: int, latency_calls: int, log: Log,
) -> tuple[dict[str, dict[str, Any]], list[list[Any]]]:
    """Every model of ``names`` timed in a new process per (model, round)
    (:func:`_timed_model` with ``timing``: preset, size, batch, source, steps, warmup,
    threads): ``(results by name, the order as [round, name, process id] rows)``.

    One process per timing: a process sometimes runs at half speed throughout, and several
    models in one process were seen to run in different modes (docs/performance.md, "The 2x
    mode"), so models sharing a process could not be compared. Rounds alternate the order
    (:func:`round_order`), so a burst of other load hits facefold and its peer alike.
    """
    results: dict[str, dict[str, Any]] = {name: {"pids": []} for name in names}
    order: list[list[Any]] = []
    for round_ in range(1, rounds + 1):
        log(f"bench: round {round_}/{rounds}: {', '.join(round_order(names, round_))}, each "
            f"in a new process ({timing['warmup']} warm-up + {timing['steps']} timed steps, "
            "in memory and through the input pipeline)")
        for name in round_order(names, round_):
            out = in_new_process(_timed_model, name, *timing.values(),
                                 latency_calls if round_ == 1 else None)
            row = results[name]
            row["pids"].append(out.pop("pid"))
            for kind in ("compute", "pipeline"):
                if kind in out:
                    row.setdefault(kind, []).append(out.pop(kind))
            row["peak_memory_mb"] = max(row.get("peak_memory_mb", 0.0), out.pop("peak_memory_mb"))
            row.update(out)  # evaluation and latency, from the first round
            order.append([round_, name, row["pids"][-1]])
    return results, order


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
    set_tf_threads(threads)
    cfg = bench_config(preset, size, batch)
    with tempfile.TemporaryDirectory(prefix="facefold-bench-") as tmp:
        source = Path(data_dir) if data_dir else synthetic_dataset(Path(tmp), batch, log)
        split, num_classes = load_data(source, cfg.model)
        auto = None
        if precision in ("both", "auto"):  # what training would pick here, and why
            chosen, reason = resolve_precision("auto", cfg, num_classes)
            auto = {"precision": chosen, "reason": reason}
            log(f"bench: precision auto -> {chosen} ({reason})")
        precisions = list(PRECISIONS) if precision == "both" else [
            auto["precision"] if auto else precision]
        plain = (peer and not (cfg.model.batch_norm or cfg.model.residual
                               or cfg.model.global_pool or cfg.model.tta_flip))
        names = [*precisions, *([PEER + p for p in precisions] if plain else [])]
        timing = {"preset": preset, "size": size, "batch": batch, "source": source,
                  "steps": steps, "warmup": warmup, "threads": threads}
        times, order = _time_training(names, timing, rounds, latency_calls, log)
    flops = count_training_flops(cfg.model, num_classes, batch)
    log("bench: matrix-product ceiling")
    ceiling = {p: matmul_gflops(p, matmul_size) for p in precisions}
    measured: dict[str, dict[str, Any]] = {}
    for name, timed in times.items():
        p = name.removeprefix(PEER)
        row: dict[str, Any] = {kind: _rates(timed[kind], batch, flops["train_step"])
                               for kind in ("compute", "pipeline") if kind in timed}
        row["of_ceiling"] = row["compute"]["gflops_per_s"] / ceiling[p]
        row["pids"] = timed["pids"]
        row["two_modes"] = two_modes(timed["compute"])
        if "pipeline" in row:
            row["pipeline_over_compute"] = (row["pipeline"]["images_per_s"]
                                            / row["compute"]["images_per_s"])
            for key in ("eval_images_per_s", "latency_median_ms", "latency_p95_ms"):
                row[key] = timed[key]
        measured[name] = row
    settings = {
        "preset": cfg.preset, "crop_size": cfg.model.crop_size,
        "input_size": cfg.model.input_size, "channels": cfg.model.channels,
        "batch": batch, "steps": steps, "warmup": warmup, "rounds": rounds,
        "latency_calls": latency_calls, "matmul_size": matmul_size,
        "data": str(data_dir) if data_dir else f"SYNTHETIC faces at {SYNTHETIC_SIZE}px (temporary)",
        "images": len(split), "num_classes": num_classes,
    }
    peak = max(peak_memory_mb(), *(t["peak_memory_mb"] for t in times.values()))
    return {"machine": machine_info(), "settings": settings, "flops": flops, "auto": auto,
            "ceiling": ceiling, "measured": measured, "order": order, "peak_memory_mb": peak}


def _seconds_cell(rates: dict[str, Any]) -> str:
    """``"0.375 (0.380, 0.392)"``: seconds per step of the best round (median, slowest)."""
    s = rates["seconds_per_step"]
    return f"{s['min']:.3f} ({s['median']:.3f}, {s['max']:.3f})"


def _ratio(rates: dict[str, Any]) -> float:
    s = rates["seconds_per_step"]
    return s["max"] / s["min"]


def format_bench(result: dict[str, Any]) -> str:
    """The :func:`run_bench` result as a readable table: one column per timed model."""
    mac, s, m = result["machine"], result["settings"], result["measured"]
    names = list(m)
    rows: list[tuple[str, list[str]]] = [
        ("training s/step, compute only: best (median, max)",
         [_seconds_cell(m[n]["compute"]) for n in names]),
        ("compute s/step, slowest / fastest process",
         [f"{_ratio(m[n]['compute']):.2f}" + (" TWO MODES" if m[n]["two_modes"] else "")
          for n in names]),
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
        f"{s['steps']} timed steps after {s['warmup']} warm-up, {s['rounds']} rounds, "
        f"each model in a new process per round (a ratio of {SLOW_FACTOR} or more between "
        "its slowest and fastest process: TWO MODES, docs/performance.md \"The 2x mode\")",
        f"FLOPs per training step (conv + dense multiply-adds, 3 x forward): "
        f"{result['flops']['train_step'] / 1e9:.2f} GFLOP; ceiling: {s['matmul_size']}² "
        "matrix product",
        "",
        *table,
        "",
        f"peak memory (ru_maxrss): {result['peak_memory_mb']:.0f} MB",
    ])
