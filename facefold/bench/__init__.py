"""How fast does a model train, evaluate and predict here, and how close to the FLOP count?

* :mod:`~facefold.bench.flops`: :func:`count_training_flops` counts, from a
  :class:`~facefold.config.ModelSpec` alone, the floating-point operations of one training
  step.
* :mod:`~facefold.bench.training`: :func:`run_bench` measures, in one run on this machine:
  training images/s on a few real batches held in memory (compute only) and through the real
  input pipeline, evaluation images/s, single-image prediction latency, the achieved GFLOP/s
  and the peak memory, beside the plain Keras peer (:mod:`~facefold.bench.peer`) and the
  matmul ceiling (:mod:`~facefold.bench.ceiling`). :func:`format_bench` prints it as a table.
* :mod:`~facefold.bench.model`: :func:`bench_model`, a model folder timed the way a deployed
  model runs.
* :mod:`~facefold.bench.embedding`: :func:`bench_embedding`, a pretrained embedding's
  throughput and per-face cost.
* :mod:`~facefold.bench.profiler`: :func:`profile_training`, where a training step's time goes.
* :mod:`~facefold.bench.startup`: :func:`bench_startup`, the deploy commands from a cold
  process (``facefold bench --startup MODEL``).

:mod:`~facefold.bench.workload` holds what they share: the machine as reported, the config,
the data and the batches held in memory.
"""

from facefold.bench.ceiling import matmul_gflops
from facefold.bench.embedding import bench_embedding, format_bench_embedding
from facefold.bench.flops import count_training_flops
from facefold.bench.model import bench_model, format_bench_model
from facefold.bench.peer import plain_keras_model
from facefold.bench.profiler import format_profile, profile_training
from facefold.bench.startup import bench_startup, format_bench_startup
from facefold.bench.training import format_bench, run_bench, spread
from facefold.bench.workload import bench_config, machine_info

__all__ = [
    "bench_config", "bench_embedding", "bench_model", "bench_startup", "count_training_flops",
    "format_bench", "format_bench_embedding", "format_bench_model", "format_bench_startup",
    "format_profile", "machine_info",
    "matmul_gflops", "plain_keras_model", "profile_training", "run_bench", "spread",
]
