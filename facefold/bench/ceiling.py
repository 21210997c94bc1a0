"""The matmul ceiling: the GFLOP/s a large matrix product reaches on this machine.
"""

from __future__ import annotations

import math
import time

import tensorflow as tf

MATMUL_SIZE = 2048  # the ceiling's matrices: large enough for oneDNN's best kernels


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
