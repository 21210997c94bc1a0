"""Choosing the numeric precision of training: by measurement, on the machine at hand.

``train.precision`` is ``float32``, ``bfloat16`` (Keras mixed precision: bfloat16
compute, float32 weights) or ``auto``. Which of the two is faster cannot be read
off the CPU's flags: bfloat16 instructions made training 1.7× faster on one
AVX-512 BF16 machine and 1.3× *slower* on another that has them as well. So
``auto`` times a few training steps of the real model in each precision (each timing in a
process of its own, two of each, alternating: :func:`time_in_new_process`), keeps
the faster (float32 unless bfloat16 wins by more than :data:`MARGIN`, since
float32 is the more exact of the two), and remembers the answer in the user
cache (``precision.json`` beside the embedding cache, see
:func:`facefold.machine.default_cache_dir`), keyed by what the choice
depends on: the CPU model and flags, the cores this process may use, the
TensorFlow version and oneDNN setting, the model family and spec, the number
of classes and the batch size. A GPU of compute capability 8.0 or newer takes bfloat16
without timing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from facefold.choices import PRECISIONS
from facefold.config import Config
from facefold.machine import (
    ONEDNN_PROBE_BATCH,
    add_to_cache_file,
    cpu_flags,
    cpu_model,
    default_cache_dir,
    gpu_supports_bfloat16,
    in_new_process,
    onednn_setting,
    read_cache_file,
    set_tf_threads,
    usable_cores,
)

# bfloat16 must beat float32 by this fraction of a step to be chosen: within it the two are
# the same speed to a timing's noise, and float32 computes more exactly.
MARGIN = 0.03
CACHE_FILE = "precision.json"
# The timing: WARMUP untimed steps (tracing, oneDNN's kernel choice), then the best of
# REPEATS rounds of STEPS steps; a precision already twice as slow after one round stops there.
WARMUP, STEPS, REPEATS = 2, 3, 2
PROBE_ROUNDS = 2  # timings of each precision, each in a new process (time_in_new_process)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # said in the reason, never decisive

StepTimer = Callable[[str], float]  # precision -> seconds per training step


def faster_precision(seconds: dict[str, float], margin: float = MARGIN) -> str:
    """The precision to train in, given measured seconds per step of both."""
    if seconds["bfloat16"] < seconds["float32"] * (1 - margin):
        return "bfloat16"
    return "float32"


def machine_key() -> dict[str, Any]:
    """What the choice depends on besides the model: CPU, cores, TensorFlow and its oneDNN
    setting. Not the thread count: it changes both precisions' speed alike, and a Ray trial
    limited to one thread then finds the choice its driver timed."""
    import tensorflow as tf

    flags = sorted(cpu_flags())
    return {
        "cpu": cpu_model(),
        "cpu_flags": hashlib.sha256(" ".join(flags).encode()).hexdigest()[:16],
        "bf16_flags": [f for f in BF16_CPU_FLAGS if f in flags],
        "cores": usable_cores(),
        "tensorflow": tf.__version__,
        "onednn": onednn_setting(),
    }


def model_key(config: Config, num_classes: int) -> dict[str, Any]:
    """What a step's speed depends on in the model: family, spec, classes, batch."""
    # The model as its config.json holds it, so cached choices keep their keys.
    return {"family": config.family, "model": config.to_dict()["model"],
            "num_classes": num_classes, "batch": config.train.batch_size}


def cache_key(machine: dict[str, Any], model: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([machine, model], sort_keys=True).encode()).hexdigest()


def _cached_entry(entry: Any) -> dict[str, Any] | None:
    """A cache entry if it is well formed, else None (then the timing is done again)."""
    if not isinstance(entry, dict) or entry.get("precision") not in PRECISIONS:
        return None
    seconds = entry.get("seconds")
    if not isinstance(seconds, dict) or not all(
            isinstance(seconds.get(p), (int, float)) and seconds[p] > 0 for p in PRECISIONS):
        return None
    return entry


def probe_batches(x: Any, y: Any, batch: int) -> Any:
    """``(x, y)`` in batches of ``batch``, repeated, without tf.data's autotuning: a timed fit
    of a few steps over it could otherwise end only when the autotuning thread next wakes
    (:func:`~facefold.data.pipeline.without_autotuning`)."""
    import tensorflow as tf

    from facefold.data.pipeline import without_autotuning  # imports TensorFlow

    return without_autotuning(tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat())


def time_training_step(config: Config, num_classes: int, precision: str,
                       stop_above: float | None = None) -> float:
    """Seconds per training step of ``config``'s model in ``precision``: the real network,
    optimizer and loss on random inputs of its shape (the speed of dense arithmetic does not
    depend on the values), best of :data:`REPEATS` rounds after :data:`WARMUP` steps, or the
    first round when it is slower than ``stop_above`` already (no need to time it better)."""
    import numpy as np

    from facefold.models.families import family_of
    from facefold.train.optim import compile_model

    model = family_of(config).build(config, num_classes, precision)
    compile_model(model, config)
    batch = config.train.batch_size
    rng = np.random.default_rng(0)
    # A few distinct batches: one repeated batch is memorized and its gradients turn subnormal.
    x = rng.uniform(size=(4 * batch, *model.input_shape[1:])).astype(np.float32)
    y = rng.integers(0, num_classes, size=4 * batch).astype(np.int32)
    data = probe_batches(x, y, batch)
    model.fit(data, steps_per_epoch=WARMUP, epochs=1, verbose=0, shuffle=False)
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        model.fit(data, steps_per_epoch=STEPS, epochs=1, verbose=0, shuffle=False)
        best = min(best, (time.perf_counter() - start) / STEPS)
        if stop_above is not None and best > stop_above:
            break
    return best


def time_in_new_process(config: Config, num_classes: int, precision: str,
                        stop_above: float | None = None) -> float:
    """:func:`time_training_step` in a new process, on this process's TensorFlow thread
    count: a process sometimes runs every step at half speed (docs/performance.md, "The 2x
    mode"), and timing both precisions in the training process made the choice follow that
    mode rather than the precision."""
    import tensorflow as tf

    threads = tf.config.threading.get_intra_op_parallelism_threads()
    return in_new_process(_time_with_threads, config, num_classes, precision, stop_above,
                          threads)


def _time_with_threads(config: Config, num_classes: int, precision: str,
                       stop_above: float | None, threads: int) -> float:
    set_tf_threads(threads)
    return time_training_step(config, num_classes, precision, stop_above)


def measure_precisions(timer: StepTimer, rounds: int = 1) -> dict[str, float]:
    """Seconds per step of each precision: the best of ``rounds`` timings, float32 first in
    odd rounds and bfloat16 first in even ones (a burst of other load hits both alike)."""
    seconds: dict[str, float] = {}
    for round_ in range(rounds):
        for precision in PRECISIONS if round_ % 2 == 0 else PRECISIONS[::-1]:
            seconds[precision] = min(seconds.get(precision, float("inf")), timer(precision))
    return {precision: seconds[precision] for precision in PRECISIONS}


def resolve_precision(
    requested: str,
    config: Config | None = None,
    num_classes: int | None = None,
    *,
    timer: StepTimer | None = None,
    cache_dir: str | Path | None = None,
    gpu_bf16: bool | None = None,
    refresh: bool = False,
) -> tuple[str, str]:
    """Resolve ``auto|float32|bfloat16`` to ``float32`` or ``bfloat16`` and say why.

    ``auto`` needs the ``config`` and ``num_classes`` of the model to be trained: the
    choice is the cached one for this machine and model shape, else it is measured
    (``timer``, default :func:`time_training_step`; tests pass fakes) and cached in
    ``cache_dir`` (default: the user cache). ``refresh`` measures again even when cached.
    Returns ``(precision, reason)``.
    """
    if requested in PRECISIONS:
        return requested, "requested"
    if requested != "auto":
        raise ValueError(f"precision must be auto, float32 or bfloat16, got {requested!r}")
    if gpu_bf16 is None:
        gpu_bf16 = gpu_supports_bfloat16()
    if gpu_bf16:
        return "bfloat16", "auto: GPU with bfloat16 support"
    if config is None or num_classes is None:
        raise ValueError("precision auto is chosen by timing the model: give its config "
                         "and number of classes")
    path = Path(cache_dir or default_cache_dir()) / CACHE_FILE
    machine, model = machine_key(), model_key(config, num_classes)
    key = cache_key(machine, model)
    entry = None if refresh else _cached_entry(read_cache_file(path).get(key))
    how = f"cached in {path}"
    if entry is None:
        measured: dict[str, float] = {}

        def default_timer(p: str) -> float:  # twice as slow as the other: enough said
            other = [t for q, t in measured.items() if q != p]
            measured[p] = min(measured.get(p, float("inf")), time_in_new_process(
                config, num_classes, p, 2 * other[0] if other else None))
            return measured[p]

        # Each timing in a process of its own, PROBE_ROUNDS of each, alternating.
        seconds = measure_precisions(timer or default_timer,
                                     PROBE_ROUNDS if timer is None else 1)
        entry = {"precision": faster_precision(seconds), "seconds": seconds,
                 "machine": machine, "measured": datetime.now(UTC).isoformat(
                     timespec="seconds")}
        failed = add_to_cache_file(path, key, entry)
        how = f"measured now, not saved ({failed})" if failed else f"measured now, saved in {path}"
    seconds = entry["seconds"]
    ratio = seconds["float32"] / seconds["bfloat16"]
    return entry["precision"], (
        f"auto: {seconds['float32']:.3f} s/step in float32, {seconds['bfloat16']:.3f} in "
        f"bfloat16 ({ratio:.2f}x) on {machine['cpu']}, TensorFlow {machine['tensorflow']}; "
        f"{how}")


def _time_onednn_probe() -> float:
    """The step :func:`facefold.machine.time_onednn` times in a fresh process: the seed at
    batch 32, float32."""
    from facefold.models.presets import resolve_config

    config = resolve_config("seed", overrides={"train": {"batch_size": ONEDNN_PROBE_BATCH}})
    return time_training_step(config, 18, "float32")


if __name__ == "__main__":  # python -m facefold.train.precision time-step
    import sys

    if sys.argv[1:] == ["time-step"]:
        print(_time_onednn_probe())
