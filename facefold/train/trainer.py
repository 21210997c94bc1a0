"""Train one model on some shards and evaluate it on the held-out ones, resumably.

A run folder holds everything needed to rebuild or continue the run::

    RUN/config.json          resolved config (preset + every value)
    RUN/run.json             dataset, held-out shards, config; for an embedding head
                             also the embedding's model version and how many images'
                             landmark fit failed ("landmark_fallbacks")
    RUN/labels.txt           label names, line = class index
    RUN/versions.json        library versions and machine
    RUN/checkpoints/step-NNNNNN.keras   model + optimizer at every evaluation
                             (with train.ema_decay: averaged weights in the model,
                             see facefold.train.optim)
    RUN/metrics.jsonl        one JSON line per evaluation (step 0 included)
    RUN/sparsity.jsonl       ReLU zero fractions every train.sparsity_every steps
    RUN/predictions.npz      held-out labels and probabilities at the last step
    RUN/tensorboard/         loss and accuracy curves for TensorBoard

The model is a CNN on pixels or, with ``model.embedding``, a head on cached
embeddings (:mod:`facefold.models.head`); the loop, files and reports are the
same. An ensemble (``model.members``) is trained by :mod:`facefold.train.ensemble`.

Training into a folder that already holds a run with the same config and data
resumes from its last checkpoint; because every batch is a pure function of
``(seed, step)``, the resumed run reproduces the uninterrupted one.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import keras
import numpy as np
import tensorflow as tf

import facefold
from facefold.config import Config
from facefold.data.pipeline import (
    BatchMaker,
    Split,
    batch_maker,
    concat,
    embedding_batch_maker,
    embedding_evaluation_batches,
    evaluation_batches,
    step_batches,
)
from facefold.data.records import (
    atomic_path,
    read_labels,
    read_step_rows,
    write_json_atomic,
    write_labels,
    write_rows_atomic,
)
from facefold.embeddings.shards import EmbeddingSplit, SplitSource, embedder, load_splits
from facefold.models.head import build_network
from facefold.train.optim import make_loss, make_optimizer, training_weights
from facefold.train.precision import cpu_model, resolve_precision
from facefold.train.sparsity import SparsityTracker

CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"
Log = Callable[[str], None]


class NaNLossError(FloatingPointError):
    """Training loss became NaN or infinite."""


class _StepCallback(keras.callbacks.Callback):
    """A callback that knows the run's step: ``first_step`` is the step when its ``fit``
    starts (set it again before each ``fit``); :meth:`step` turns Keras's batch index, which
    restarts every epoch, into the step after that batch's update.

    ``async_safe``: its batch hooks only read the logs Keras hands them, so Keras
    runs them in a worker thread while the next steps are already dispatched (an
    error is re-raised in ``fit`` a step or two later). Without it Keras waits for
    every step to finish before starting the next: 20 % slower on 2 cores.
    """

    async_safe = True

    def __init__(self, first_step: int) -> None:
        super().__init__()
        self.first_step = first_step
        self._epoch_start = first_step

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_start = self.first_step + epoch * self.params["steps"]

    def step(self, batch: int) -> int:
        return self._epoch_start + batch + 1


class _StopOnNaN(_StepCallback):
    """Raise a clear error as soon as the training loss is not finite."""

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            raise NaNLossError(
                f"training loss became {loss} at step {self.step(batch)}; "
                "lower train.learning_rate or check the data"
            )


class _MeasureSparsity(_StepCallback):
    """Measures sparsity at the end of every epoch that ends on a measurement step. Epochs,
    not batches: ``on_epoch_end`` runs in the main thread once the epoch's steps are done."""

    def __init__(self, tracker: SparsityTracker, first_step: int) -> None:
        super().__init__(first_step)
        self.tracker = tracker

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.tracker.measure_if_due(self.first_step + (epoch + 1) * self.params["steps"])


class ProgressLine(_StepCallback):
    """One terminal line redrawn in place during ``fit``: step/total, loss, eval accuracy, ETA.

    ``first_step`` is the run's step when this ``fit`` starts, ``total`` its
    last step, ``eval_accuracy`` the latest held-out accuracy (None: not yet).
    It draws only when ``stream`` (default ``sys.stderr``) is a terminal or
    ``force`` is set: in logs and tests the trainer's one line per evaluation
    is the progress. At most one redraw per ``min_interval`` seconds.
    """

    def __init__(
        self, name: str, first_step: int, total: int, eval_accuracy: float | None = None,
        stream: TextIO | None = None, force: bool = False, min_interval: float = 0.2,
    ) -> None:
        super().__init__(first_step)
        self.name, self.total = name, total
        self.eval_accuracy = eval_accuracy
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = force or self.stream.isatty()
        self.min_interval = min_interval
        self._first: tuple[float, int] | None = None  # (time, step) after the first batch
        self._drawn_at = -math.inf
        self._width = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if not self.enabled:
            return
        now, step = time.perf_counter(), self.step(batch)
        if self._first is None:  # the first batch includes tracing: time from its end
            self._first = (now, step)
        if now - self._drawn_at < self.min_interval:
            return
        self._drawn_at = now
        done = step - self._first[1]
        rate = (now - self._first[0]) / done if done else None
        self._write(self.render(step, float((logs or {}).get("loss", math.nan)), rate))

    def render(self, step: int, loss: float, seconds_per_step: float | None) -> str:
        """The line for ``step``; the time left is unknown (``?``) without ``seconds_per_step``."""
        remaining = self.total - step
        left = "?" if seconds_per_step is None else _duration(remaining * seconds_per_step)
        accuracy = "-" if self.eval_accuracy is None else f"{self.eval_accuracy:.4f}"
        return (f"[{self.name}] step {step}/{self.total} loss {loss:.3f} "
                f"eval acc {accuracy} {left} left")

    def clear(self) -> None:
        """Blank the line, so the next log line (or an error) starts at column 0."""
        if self._width:
            self._write("")
            self._width = 0

    def _write(self, text: str) -> None:
        # Pad over the previous, possibly longer line; "\r" returns to its start.
        self.stream.write("\r" + text.ljust(self._width) + ("\r" if not text else ""))
        self.stream.flush()
        self._width = max(self._width, len(text))


def _duration(seconds: float) -> str:
    """``3h05m``, ``4m10s`` or ``12s``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def versions() -> dict[str, str]:
    """Library versions and machine, written into every run folder."""
    return {
        "facefold": facefold.__version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "machine": f"{cpu_model()} ({platform.machine()})",
        "cpus": str(os.cpu_count()),
    }


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The evaluations logged in ``RUN/metrics.jsonl``, in step order."""
    return read_step_rows(Path(run_dir) / METRICS_FILE)


def eval_steps(total: int, every: int) -> list[int]:
    """Steps at which to evaluate: 0, every, 2*every, …, and always the last step."""
    steps = list(range(0, total + 1, every))
    if steps[-1] != total:
        steps.append(total)
    return steps


def _checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINT_DIR / f"step-{step:06d}.keras"


def latest_checkpoint(run_dir: str | Path) -> tuple[int, Path] | None:
    """``(step, path)`` of the newest checkpoint in a run folder, or None."""
    paths = sorted((Path(run_dir) / CHECKPOINT_DIR).glob("step-*.keras"))
    if not paths:
        return None
    return int(paths[-1].stem.split("-")[1]), paths[-1]


def _run_identity(
    data_dir: Path, eval_shards: Sequence[int], config: Config, people: list[str] | None = None
) -> dict:
    """What makes two runs the same run, in its JSON form (so it compares with run.json).

    ``people`` (the label list of a run trained on a subset of the dataset's
    people, see :mod:`facefold.evaluate.openset`) is part of the identity only when given.
    An embedding head's identity includes the embedding's model version: a head
    learned on one version's embeddings is meaningless on another's.
    """
    identity = {
        "data_dir": str(data_dir.resolve()),
        "eval_shards": list(eval_shards),
        "config": config.to_dict(),
    }
    if people is not None:
        identity["people"] = list(people)
    if config.model.embedding:
        model = embedder(config.model.embedding)
        identity["embedding"] = {"name": model.name, "model_version": model.version}
    return json.loads(json.dumps(identity))


def _same_run(existing: dict, identity: dict) -> list[str]:
    """Which parts of two run identities differ; configs compare after resolution, so a run
    written before a new config key existed still matches when it used that key's default."""
    differ = [k for k in identity if k != "config" and existing.get(k) != identity[k]]
    try:
        same_config = Config.from_dict(existing.get("config", {})) == Config.from_dict(
            identity["config"]
        )
    except ValueError:
        same_config = False
    return differ if same_config else [*differ, "config"]


def _prepare_run_dir(
    run_dir: Path, identity: dict, labels: list[str], notes: dict | None = None
) -> None:
    """Create the run folder, or check that an existing one is the same run.

    ``notes`` are facts about the run (not part of its identity) added to a new ``run.json``.
    """
    run_file = run_dir / "run.json"
    if run_file.is_file():
        mismatched = _same_run(json.loads(run_file.read_text()), identity)
        if mismatched:
            raise ValueError(
                f"{run_dir} holds a different run ({', '.join(mismatched)} differ); "
                "choose a new output folder to start a new run"
            )
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"{run_dir} exists and is not a facefold run folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "config.json", identity["config"])
    write_labels(run_dir, labels)
    write_json_atomic(run_dir / "versions.json", versions())
    write_json_atomic(run_file, {**identity, **(notes or {})})


def _split_folds(splits: list[Split], eval_shards: Sequence[int]) -> tuple[Split, Split]:
    if not eval_shards:
        raise ValueError("eval_shards is empty: hold out at least one shard")
    bad = [k for k in eval_shards if not 0 <= k < len(splits)]
    if bad:
        raise ValueError(f"eval shard(s) {bad} out of range: the dataset has {len(splits)} shards")
    train = [s for k, s in enumerate(splits) if k not in eval_shards]
    if not train:
        raise ValueError("every shard is held out: nothing left to train on")
    return concat(train), concat([splits[k] for k in eval_shards])


def compile_model(model: keras.Model, config: Config) -> None:
    """Attach the training setup (also used by bench): the optimizer and cross-entropy loss of
    ``config.train`` (2016 defaults: Adam, plain cross-entropy on logits), accuracy."""
    model.compile(
        optimizer=make_optimizer(config.train),
        loss=make_loss(config.train),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=False,  # XLA measured slower than oneDNN for this model on CPU
    )


def _save_checkpoint(model: keras.Model, run_dir: Path, step: int) -> None:
    """Save model + optimizer atomically: a killed save never looks like a checkpoint."""
    final = _checkpoint_path(run_dir, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(f".partial-{final.name}")  # Keras wants the .keras suffix
    model.save(partial)
    os.replace(partial, final)


class Trainer:
    """One training run: ``Trainer(...).run()`` returns the list of evaluation rows."""

    def __init__(
        self,
        data_dir: str | Path,
        config: Config,
        out: str | Path,
        eval_shards: Sequence[int] = (0,),
        splits: list[Split] | SplitSource | None = None,
        log: Log = print,
        name: str = "",
        people: Sequence[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.config = config
        self.run_dir = Path(out)
        self.eval_shards = list(eval_shards)
        self.log = log
        self.name = name or self.run_dir.name
        # ``people``: the label list when ``splits`` hold a relabelled subset of the people.
        self.people = list(people) if people is not None else None
        self.labels = self.people or read_labels(self.data_dir)
        if isinstance(splits, SplitSource):
            splits = splits.get(config)
        splits = splits if splits is not None else load_splits(data_dir, config, log)
        self.train_split, self.eval_split = _split_folds(splits, self.eval_shards)
        self.precision, why = resolve_precision(config.train.precision)
        self.log(f"[{self.name}] precision {self.precision} ({why})")
        self.notes = self._fallback_notes()

    def _fallback_notes(self) -> dict:
        """For an embedding head: how many images' landmark fit failed (logged; in run.json)."""
        if not isinstance(self.train_split, EmbeddingSplit):
            return {}
        counts = {"train": int(self.train_split.fallback.sum()),
                  "eval": int(self.eval_split.fallback.sum())}
        if counts["train"] or counts["eval"]:
            self.log(f"[{self.name}] {self.config.model.embedding}: landmark fit failed on "
                     f"{counts['train']} of {len(self.train_split)} training and {counts['eval']} "
                     f"of {len(self.eval_split)} held-out images (whole image used as the chip)")
        return {"landmark_fallbacks": counts}

    def run(self) -> list[dict]:
        """Train to ``config.train.steps``, evaluating and checkpointing every ``eval_every``."""
        cfg = self.config
        _prepare_run_dir(
            self.run_dir, _run_identity(self.data_dir, self.eval_shards, cfg, self.people),
            self.labels, self.notes,
        )
        model, start = self._model_at_latest_step()
        writers = self._summary_writers()
        make_batch = self._batch_maker()
        sparsity = SparsityTracker(self.run_dir, model, cfg, make_batch, writers["train"])
        with training_weights(model):  # measured on the weights being trained, as during fit
            sparsity.resume(start)
        rows = [r for r in read_metrics(self.run_dir) if r["step"] <= start]
        if not rows or rows[-1]["step"] != start:
            rows.append(sparsity.annotate(self._evaluate(model, start, {})))
        self._write_metrics(rows)
        sparsity.save()
        schedule = [s for s in eval_steps(cfg.train.steps, cfg.train.eval_every) if s > start]
        for end in schedule:
            t0 = time.perf_counter()
            train_logs = self._fit(model, make_batch, start, end, rows[-1]["eval_accuracy"],
                                   sparsity)
            seconds_per_step = (time.perf_counter() - t0) / (end - start)
            row = sparsity.annotate(self._evaluate(model, end, train_logs, seconds_per_step))
            sparsity.save()  # before the checkpoint: a resume never lacks rows up to it
            _save_checkpoint(model, self.run_dir, end)
            rows.append(row)
            self._write_metrics(rows)
            self._summarize(writers, row)
            self._log_progress(row, seconds_per_step)
            start = end
        self._write_predictions(model, start)
        return rows

    def _fit(
        self, model: keras.Model, make_batch: BatchMaker, start: int, end: int,
        eval_accuracy: float | None, sparsity: SparsityTracker,
    ) -> dict[str, float]:
        """Train steps ``start`` … ``end - 1``; returns the mean training loss and accuracy.

        The :meth:`SparsityTracker.chunks` ranges become the epochs of one ``fit``
        (one per run of equally long ranges): the measurement happens between
        epochs, and one dataset serves the whole interval.
        """
        cfg = self.config
        progress = ProgressLine(self.name, start, cfg.train.steps, eval_accuracy)
        totals: dict[str, float] = {}
        try:
            chunks = sparsity.chunks(start, end)
            for size, group in itertools.groupby(chunks, key=lambda c: c[1] - c[0]):
                same = list(group)
                first, epochs = same[0][0], len(same)
                progress.first_step = first
                with training_weights(model):  # outside fit the model holds the weight average
                    history = model.fit(
                        step_batches(make_batch, first, first + size * epochs),
                        epochs=epochs,
                        steps_per_epoch=size,
                        shuffle=False,  # order comes from the seeded pipeline
                        verbose=0,
                        callbacks=[_StopOnNaN(first), _MeasureSparsity(sparsity, first),
                                   progress],
                    )
                for key, values in history.history.items():  # Keras logs each epoch's mean
                    totals[key] = totals.get(key, 0.0) + size * sum(map(float, values))
        finally:
            progress.clear()  # the log line, or an error message, starts on a clean line
        return {key: total / (end - start) for key, total in totals.items()}

    def _batch_maker(self) -> BatchMaker:
        """``step -> (x, y)``: a training batch of jittered crops, or of embedding views."""
        cfg = self.config
        if cfg.model.embedding:
            return embedding_batch_maker(self.train_split, cfg.augment.flip,
                                         cfg.train.batch_size, cfg.train.seed)
        return batch_maker(self.train_split, cfg.augment, cfg.model.crop_size,
                           cfg.train.batch_size, cfg.train.seed)

    def _evaluation_batches(self) -> tf.data.Dataset:
        """The held-out images in order: central crops, or embedding views (both for flip TTA)."""
        cfg = self.config
        if cfg.model.embedding:
            return embedding_evaluation_batches(self.eval_split, 2 if cfg.model.tta_flip else 1,
                                                cfg.train.eval_batch_size)
        return evaluation_batches(self.eval_split, cfg.model.crop_size, cfg.train.eval_batch_size)

    def _model_at_latest_step(self) -> tuple[keras.Model, int]:
        found = latest_checkpoint(self.run_dir)
        if found:
            step, path = found
            self.log(f"[{self.name}] resuming from {path.name}")
            return keras.models.load_model(path), step
        model = build_network(
            self.config.model, len(self.labels), self.precision, self.config.train.seed
        )
        compile_model(model, self.config)
        # Built before the first step, so that the step-0 checkpoint holds the optimizer's slots
        # like every later one: Keras warns when it loads one whose optimizer was never built.
        model.optimizer.build(model.trainable_variables)
        _save_checkpoint(model, self.run_dir, 0)
        return model, 0

    def _evaluate(
        self, model: keras.Model, step: int, train_logs: dict, seconds_per_step: float = 0.0
    ) -> dict:
        loss, accuracy = model.evaluate(self._evaluation_batches(), verbose=0)
        return {
            "step": step,
            "eval_accuracy": float(accuracy),
            "eval_loss": float(loss),
            "train_loss": train_logs.get("loss"),
            "train_accuracy": train_logs.get("accuracy"),
            "seconds_per_step": seconds_per_step,
            "eval_images": len(self.eval_split),
        }

    def _write_metrics(self, rows: list[dict]) -> None:
        write_rows_atomic(self.run_dir / METRICS_FILE, rows)

    def _write_predictions(self, model: keras.Model, step: int) -> None:
        logits = model.predict(self._evaluation_batches(), verbose=0)
        with atomic_path(self.run_dir / "predictions.npz") as tmp, tmp.open("wb") as handle:
            np.savez(
                handle,
                step=step,
                labels=self.eval_split.labels,
                probabilities=tf.nn.softmax(logits).numpy(),
            )

    def _summary_writers(self) -> dict[str, tf.summary.SummaryWriter]:
        root = self.run_dir / "tensorboard"
        return {
            "train": tf.summary.create_file_writer(str(root / "train")),
            "eval": tf.summary.create_file_writer(str(root / "eval")),
        }

    def _summarize(self, writers: dict, row: dict) -> None:
        for split, prefix in (("train", "train_"), ("eval", "eval_")):
            with writers[split].as_default(step=row["step"]):
                for metric in ("loss", "accuracy"):
                    if row.get(prefix + metric) is not None:
                        tf.summary.scalar(metric, row[prefix + metric])
            writers[split].flush()

    def _log_progress(self, row: dict, seconds_per_step: float) -> None:
        left = (self.config.train.steps - row["step"]) * seconds_per_step
        self.log(
            f"[{self.name}] step {row['step']}/{self.config.train.steps} "
            f"loss {row['train_loss']:.3f} train acc {row['train_accuracy']:.3f} "
            f"eval acc {row['eval_accuracy']:.4f} ({seconds_per_step:.3f} s/step, "
            f"{left / 60:.0f} min left)"
        )


def train(
    data_dir: str | Path,
    config: Config,
    out: str | Path,
    eval_shards: Sequence[int] = (0,),
    splits: list[Split] | SplitSource | None = None,
    log: Log = print,
    people: Sequence[str] | None = None,
) -> list[dict]:
    """Train on all shards but ``eval_shards``, evaluate on those; return the metrics rows.

    ``splits`` are the shards' inputs loaded beforehand to share between folds:
    a list (from :func:`~facefold.embeddings.shards.load_splits`) or a
    :class:`~facefold.embeddings.shards.SplitSource`, which an ensemble needs (its
    members take different inputs); by default they are loaded here. ``people``
    is the label list (index = label) when ``splits`` were relabelled to a subset
    of the dataset's people; by default it is the dataset's ``labels.txt``.
    A config with ``model.members`` trains an ensemble (see :mod:`facefold.train.ensemble`).
    """
    if config.model.members:
        from facefold.train.ensemble import train_ensemble  # it builds on this module

        return train_ensemble(data_dir, config, out, eval_shards, splits, log, people)
    return Trainer(data_dir, config, out, eval_shards, splits, log, people=people).run()
