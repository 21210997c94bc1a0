"""The profiler: where a training step's time goes, by op type and by part of the step.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import tensorflow as tf

from facefold.bench.peer import PEER, plain_keras_model
from facefold.bench.workload import (
    batches_in_memory,
    bench_config,
    load_data,
    machine_info,
    synthetic_dataset,
)
from facefold.data.pipeline import (
    batch_maker,
)
from facefold.log import Log
from facefold.models.cnn import build_model

# The trainer's compile (optimizer, loss, metric, no XLA): the benchmark must time
# exactly the step `facefold train` runs, so it reuses it rather than restating it.
from facefold.train.optim import compile_model
from facefold.train.precision import resolve_precision


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
        source = Path(data_dir) if data_dir else synthetic_dataset(Path(tmp), batch, log)
        split, num_classes = load_data(source, cfg.model)
        if precision == "auto":
            precision, _ = resolve_precision("auto", cfg, num_classes)
        if peer:
            model = plain_keras_model(cfg.model, num_classes, precision)
        else:
            model = build_model(cfg.model, num_classes, precision, cfg.train.seed)
            compile_model(model, cfg)
        make_batch = batch_maker(split, cfg.augment, cfg.model.crop_size, batch, cfg.train.seed,
                                 num_classes)
        in_memory = batches_in_memory(make_batch)
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
