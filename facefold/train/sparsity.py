"""Sparsity of the ReLU outputs during training: the fraction of exact zeros per layer.

The 2016 study logged ``tf.nn.zero_fraction`` of every ReLU output and chose
the widths of its reduced model (96 and 128 dense units) from it. A
:class:`SparsityTracker` does the same inside a training run:

* **What**: for every conv layer ``conv1 … convN`` (ReLU fused, so the layer
  output is post-ReLU) and every hidden dense layer ``fc1 … fcM``, the
  fraction of the elements of its output that are exactly zero, over the whole
  batch (every image, position and channel).
* **When**: at every step ``s`` that is a multiple of ``train.sparsity_every``,
  step 0 included; "step ``s``" means "after ``s`` updates", as for evaluations.
* **On which data**: training batch ``s``, i.e. the batch the next update
  trains on, seen by the weights as they are after ``s`` updates. That is what
  the 2016 code logged (its summaries came from the forward pass of the
  training step). Batch ``s`` is a pure function of ``(seed, s)`` (see
  :func:`facefold.data.pipeline.training_batches`), so it is rebuilt here
  exactly rather than intercepted from ``fit``.
* **Where**: ``RUN/sparsity.jsonl`` (one line per measurement,
  ``{"step": s, "conv1": f, …}``), TensorBoard scalars ``<layer>/sparsity``
  on the train writer, and the latest measurement inside every evaluation row
  of ``RUN/metrics.jsonl`` under ``"sparsity"``. A separate file keeps the
  evaluation rows one per evaluation, as :func:`facefold.runs.read_metrics`
  and the cross-validation expect.

Measuring is inference only (dropout off, batch-norm statistics left alone,
no random numbers drawn), so it never changes training: a run resumed from a
checkpoint still reproduces an uninterrupted one. With a weight average
(``train.ema_decay``) it measures the weights being trained, not the average.
With ``model.tta_flip`` the fractions cover each image and its mirror.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from facefold import runs
from facefold.atomic import write_rows_atomic
from facefold.config import Config
from facefold.data.pipeline import BatchMaker
from facefold.models.cnn import build_probe, relu_layer_names


def zero_fraction(x: tf.Tensor | np.ndarray) -> float:
    """The fraction of the elements of ``x`` that are exactly zero (``tf.nn.zero_fraction``).

    ``x`` is any tensor or array (any shape, any numeric dtype; ``-0.0``
    counts as zero, NaN does not). Returns a float in [0, 1]; NaN for an
    empty ``x``.
    """
    return float(tf.nn.zero_fraction(tf.convert_to_tensor(x)))


class SparsityMeter:
    """Zero fraction of every ReLU output of ``model`` on a batch: ``meter(x) -> {layer: f}``."""

    def __init__(self, model: keras.Model, names: Sequence[str] | None = None) -> None:
        self.names = list(names) if names is not None else relu_layer_names(model)
        self.probe = build_probe(model, self.names)
        # The fractions are computed in-graph: only one number per layer leaves
        # the op, not the activations (128 x 96 x 96 x 32 floats for conv1).
        self._fractions = tf.function(self._graph_fractions)

    def _graph_fractions(self, x: tf.Tensor) -> list[tf.Tensor]:
        outputs = tf.nest.flatten(self.probe(x, training=False))
        return [tf.nn.zero_fraction(a) for a in outputs]  # the op behind zero_fraction()

    def __call__(self, x: tf.Tensor | np.ndarray) -> dict[str, float]:
        """``x``: a batch of crops (B, crop, crop, C) in [0, 1]. Returns ``{layer: fraction}``."""
        fractions = self._fractions(tf.convert_to_tensor(x, tf.float32))
        return {name: float(f) for name, f in zip(self.names, fractions, strict=True)}


class SparsityTracker:
    """Sparsity bookkeeping of one training run; inert when ``train.sparsity_every`` is 0.

    ``model`` is the model being trained, ``make_batch`` the run's own
    ``step -> (x, y)`` training batches (see :func:`~facefold.data.pipeline.batch_maker`;
    shared, not rebuilt, so the images are held once), ``writer`` the
    TensorBoard writer for the train curves (or None). Use:
    :meth:`resume` once at the start step, :meth:`chunks` to cut training into
    epochs that end on measurement steps, :meth:`measure_if_due` after each,
    :meth:`annotate` on every evaluation row and :meth:`save` before each
    checkpoint.
    """

    def __init__(
        self,
        run_dir: str | Path,
        model: keras.Model,
        config: Config,
        make_batch: BatchMaker | None,
        writer: tf.summary.SummaryWriter | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.config = config
        self.writer = writer
        self.every = config.train.sparsity_every
        self.meter = SparsityMeter(model) if self.every else None
        # Batch s exactly as fit gets it: a pure function of (seed, s).
        self.batch = make_batch if self.every else None
        self.rows: list[dict] = []

    def resume(self, start: int) -> None:
        """Keep the saved rows up to ``start`` and measure step ``start`` if it is due and missing.

        Rows after the checkpoint being resumed are dropped: they are measured again.
        """
        if not self.every:
            return
        self.rows = [r for r in runs.read_sparsity(self.run_dir) if r["step"] <= start]
        if start % self.every == 0 and (not self.rows or self.rows[-1]["step"] != start):
            self.measure(start)

    def measure(self, step: int) -> dict:
        """Measure the current model on training batch ``step``; record and return the row."""
        if self.meter is None:
            raise ValueError("sparsity tracking is off (train.sparsity_every = 0)")
        if self.batch is None:
            raise ValueError("SparsityTracker was built without make_batch: it has no training "
                             "batch to measure on")
        images, _ = self.batch(tf.constant(step, tf.int64))
        row = {"step": step, **self.meter(images)}
        self.rows.append(row)
        if self.writer is not None:
            with self.writer.as_default(step=step):
                for name in self.meter.names:
                    tf.summary.scalar(f"{name}/sparsity", row[name])
            self.writer.flush()
        return row

    def chunks(self, start: int, end: int) -> list[tuple[int, int]]:
        """Steps ``start`` … ``end`` cut into ``(first, stop)`` ranges that stop at every
        measurement step, so each range can be one epoch and the measurement comes between
        two of them. Between epochs, not after a batch: a per-batch callback that reads the
        model makes Keras wait for every step to finish before starting the next, which slows
        training down on few cores."""
        stops = [s for s in range(start + 1, end) if self.every and s % self.every == 0]
        edges = [start, *stops, end]
        return list(itertools.pairwise(edges))

    def measure_if_due(self, step: int) -> None:
        """Measure after ``step`` updates if it is a measurement step."""
        if self.every and step % self.every == 0:
            self.measure(step)

    def annotate(self, row: dict) -> dict:
        """Add the latest measurement at or before ``row["step"]`` to an evaluation row."""
        done = [r for r in self.rows if r["step"] <= row["step"]]
        if done:
            row["sparsity"] = dict(done[-1])
        return row

    def save(self) -> None:
        """Write ``RUN/sparsity.jsonl`` atomically (nothing when tracking is off)."""
        if self.every:
            write_rows_atomic(self.run_dir / runs.SPARSITY_FILE, self.rows)
