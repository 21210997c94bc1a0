"""Train one model on some shards and evaluate it on the held-out ones, resumably.

A run folder (its files are listed in :mod:`facefold.runs`, which owns them) holds
everything needed to rebuild, continue or deploy the run: its identity (the data's
fingerprint, held-out shards, config), labels, checkpoints, metrics, predictions.

What differs between a CNN on pixels and a head on cached embeddings — inputs,
network, batches — is asked of the config's model family
(:mod:`facefold.models.families`); the loop, files and reports are the same. An
ensemble (``model.members``) is trained by :mod:`facefold.train.ensemble`.

Training into a folder that already holds a run of the same identity resumes from
its last checkpoint; because every batch is a pure function of ``(seed, step)``,
the resumed run reproduces the uninterrupted one. A folder holding a run of other
data or another config is refused (:class:`facefold.runs.RunMismatchError`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

import keras
import numpy as np
import tensorflow as tf

import facefold
from facefold import runs
from facefold.atomic import writing
from facefold.config import Config
from facefold.data.pipeline import BatchMaker, Split, concat, step_batches
from facefold.data.records import read_labels
from facefold.log import Log
from facefold.machine import cpu_model
from facefold.models.families import SplitSource, family_of, identity_of
from facefold.models.inference import inference_model
from facefold.train import distill
from facefold.train.optim import compile_model, training_weights
from facefold.train.precision import resolve_precision
from facefold.train.sparsity import SparsityTracker
from facefold.train.steptime import StepTimeWatch


class NaNLossError(FloatingPointError):
    """Training loss became NaN or infinite."""


class _StepCallback(keras.callbacks.Callback):
    """A callback that knows the run's step: ``first_step`` is the step when its ``fit``
    starts (set it again before each ``fit``); :meth:`step` turns Keras's batch index, which
    restarts every epoch, into the step after that batch's update.

    ``async_safe``: its batch hooks only read the logs Keras hands them, so Keras
    runs them in a worker thread while the next steps are already dispatched (an
    error is re-raised in ``fit`` a step or two later). Without it Keras waits for
    every step to finish before starting the next, which slows training on few cores.
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


# Steps timed (after the first, which traces) before a run's first estimate of its time.
EARLY_STEPS = 20


class CommandPlan:
    """The training steps a command (``fit``, ``cv`` …) has still to run over all its runs,
    so that its remaining time is logged once, early: from the first timed steps of its
    first run (:class:`Trainer` takes it as ``plan`` and counts its steps off)."""

    def __init__(self, name: str, steps: int, runs: int, log: Log) -> None:
        self.name, self.steps, self.runs, self.log = name, steps, runs, log
        self.estimated = False

    def done(self, steps: int) -> None:
        self.steps = max(0, self.steps - steps)

    def estimate(self, seconds_per_step: float) -> None:
        """Log the whole command's time left at ``seconds_per_step``, the first time only."""
        if self.estimated:
            return
        self.estimated = True
        self.log(f"[{self.name}] about {_duration(self.steps * seconds_per_step)} of training "
                 f"left in all: {self.steps} steps in {self.runs} run(s) at "
                 f"{seconds_per_step:.3f} s/step (measured on the first steps)")


class _EarlyEstimate(_StepCallback):
    """Calls ``report(seconds per step)`` once, after :data:`EARLY_STEPS` steps timed from
    the end of the first batch (which includes tracing)."""

    def __init__(self, first_step: int, report: Callable[[float], None]) -> None:
        super().__init__(first_step)
        self.report = report
        self._first: tuple[float, int] | None = None
        self._reported = False

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._reported:
            return
        now, step = time.perf_counter(), self.step(batch)
        if self._first is None:
            self._first = (now, step)
        elif step - self._first[1] >= EARLY_STEPS:
            self._reported = True
            self.report((now - self._first[0]) / (step - self._first[1]))


class _WatchSteps(_StepCallback):
    """Hands every step's end to a :class:`~facefold.train.steptime.StepTimeWatch`."""

    def __init__(self, first_step: int, watch: StepTimeWatch) -> None:
        super().__init__(first_step)
        self.watch = watch

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_begin(epoch, logs)
        self.watch.restart()  # between epochs the sparsity probe runs: not a step

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.watch.step_done()


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


def eval_steps(total: int, every: int) -> list[int]:
    """Steps at which to evaluate: 0, every, 2*every, …, and always the last step."""
    steps = list(range(0, total + 1, every))
    if steps[-1] != total:
        steps.append(total)
    return steps


def split_folds(splits: list[Split], eval_shards: Sequence[int], hold_out: bool = True,
                excluded: Sequence[int] = ()) -> tuple[Split, Split]:
    """``(train, held out)``; with ``hold_out`` false (a model fit on everything) ``eval_shards``
    must be empty and the held-out split is empty. The ``excluded`` shards are in neither."""
    if not hold_out:
        if eval_shards:
            raise ValueError("a model fit on every shard holds none out: give no eval shards")
        train = concat(splits)
        return train, dataclasses.replace(train, **{
            f.name: getattr(train, f.name)[:0] for f in dataclasses.fields(train)})
    if not eval_shards:
        raise ValueError("eval_shards is empty: hold out at least one shard")
    bad = [k for k in [*eval_shards, *excluded] if not 0 <= k < len(splits)]
    if bad:
        raise ValueError(f"eval shard(s) {bad} out of range: the dataset has {len(splits)} shards")
    if set(eval_shards) & set(excluded):
        raise ValueError(f"shard(s) {sorted(set(eval_shards) & set(excluded))} are both held "
                         "out and excluded: an excluded shard is never evaluated on")
    train = [s for k, s in enumerate(splits) if k not in eval_shards and k not in excluded]
    if not train:
        raise ValueError("every shard is held out: nothing left to train on")
    return concat(train), concat([splits[k] for k in eval_shards])


def _save_checkpoint(model: keras.Model, run_dir: Path, step: int) -> None:
    """Save model + optimizer atomically: a killed save never looks like a checkpoint."""
    final = runs.checkpoint_path(run_dir, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = runs.partial_checkpoint_path(final)
    try:
        with writing(final):
            model.save(partial)
        os.replace(partial, final)
    except BaseException:
        partial.unlink(missing_ok=True)  # a full disk or an interrupt leaves no half file
        raise


class Trainer:
    """One training run: ``Trainer(...).run()`` returns the list of evaluation rows.

    ``splits`` are the shards' inputs loaded beforehand (a list, or a
    :class:`~facefold.models.families.SplitSource` shared between trials); ``people``
    the label list when they hold a relabelled subset of the dataset's people;
    ``restart`` discards a run of other data or config found in ``out`` instead of
    refusing it; ``data`` the dataset's fingerprint when the caller computed it. With
    ``hold_out`` false it trains on every shard (``eval_shards`` empty): the rows then have no
    held-out accuracy and no predictions are written (see :mod:`facefold.fitting`).
    ``excluded_shards`` are neither trained nor evaluated on (the inner-split runs of a
    weighted ensemble, see :mod:`facefold.train.ensemble`); they are part of the identity.
    A distilled config (``train.teacher``) trains on its teacher's targets
    (:mod:`facefold.train.distill`): ``teacher_dirs`` hands teacher runs their folders by
    preset; a teacher run not finished there is trained first, on the same shards.
    """

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
        restart: bool = False,
        data: dict | None = None,
        hold_out: bool = True,
        excluded_shards: Sequence[int] = (),
        teacher_dirs: Mapping[str, Path] | None = None,
        plan: CommandPlan | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.plan = plan
        self.config = config
        self.family = family_of(config)
        self.run_dir = Path(out)
        self.eval_shards = list(eval_shards)
        self.excluded_shards = sorted(excluded_shards)
        self.log = log
        # An inner-split run (excluded shards) is named with its folder, e.g. inner/fast, so its
        # log lines are not taken for those of the member's ordinary run.
        self.name = name or ("/".join(self.run_dir.parts[-2:]) if excluded_shards
                             else self.run_dir.name)
        self.restart = restart
        self.people = list(people) if people is not None else None
        self.labels = self.people or read_labels(self.data_dir)
        self.identity = identity_of(data or runs.data_fingerprint(self.data_dir),
                                    self.eval_shards, config, self.people, self.excluded_shards)
        # Before any decoding: a folder of another run is refused at once.
        runs.check_run_dir(self.run_dir, self.identity, restart)
        self.hold_out, self.source = hold_out, splits  # a distilled run's teachers share them
        if isinstance(splits, SplitSource):
            splits = splits.get(config)
        if splits is None:
            splits = self.family.load_inputs(self.data_dir, config, log)
        self.train_split, self.eval_split = split_folds(splits, self.eval_shards, hold_out,
                                                           self.excluded_shards)
        self.precision = runs.recorded_precision(self.run_dir, self.identity)
        if self.precision and config.train.precision in ("auto", self.precision):
            why = "recorded by this run when it started"
        else:
            self.precision, why = resolve_precision(config.train.precision, config,
                                                    len(self.labels))
        self.log(f"[{self.name}] precision {self.precision} ({why})")
        self.teachers = distill.teacher_runs(config, self.run_dir, teacher_dirs)
        self.notes, message = self.family.notes(self.train_split, self.eval_split)
        if message:
            self.log(f"[{self.name}] {message}")

    def run(self) -> list[dict]:
        """Train to ``config.train.steps``, evaluating and checkpointing every ``eval_every``."""
        cfg = self.config
        self._estimate_logged = False
        notes = {**runs.run_notes(self.data_dir, cfg.model.crop_size), **self.notes,
                 "precision": self.precision}
        runs.prepare_run_dir(self.run_dir, self.identity, self.labels, notes, versions(),
                             self.restart)
        targets = self._teacher_targets()
        model, start = self._model_at_latest_step()
        writers = self._summary_writers()
        make_batch = self.family.training_batches(self.train_split, cfg, len(self.labels),
                                                  targets)
        sparsity = SparsityTracker(self.run_dir, model, cfg, make_batch, writers["train"])
        with training_weights(model):  # measured on the weights being trained, as during fit
            sparsity.resume(start)
        rows = [r for r in runs.read_metrics(self.run_dir) if r["step"] <= start]
        if not rows or rows[-1]["step"] != start:
            rows.append(sparsity.annotate(self._evaluate(model, start, {})))
        self._write_metrics(rows)
        sparsity.save()
        schedule = [s for s in eval_steps(cfg.train.steps, cfg.train.eval_every) if s > start]
        watch = StepTimeWatch(self.name, self.log)  # warns once if the steps turn 2x slow
        for end in schedule:
            t0 = time.perf_counter()
            watch.restart()  # evaluation and checkpointing are not steps
            train_logs = self._fit(model, make_batch, start, end, rows[-1]["eval_accuracy"],
                                   sparsity, watch)
            seconds_per_step = (time.perf_counter() - t0) / (end - start)
            if self.plan:
                self.plan.done(end - start)
                self.plan.estimate(seconds_per_step)  # when no early estimate came
            row = sparsity.annotate(self._evaluate(model, end, train_logs, seconds_per_step))
            sparsity.save()  # before the checkpoint: a resume never lacks rows up to it
            _save_checkpoint(model, self.run_dir, end)
            rows.append(row)
            self._write_metrics(rows)
            self._summarize(writers, row)
            self._log_progress(row, seconds_per_step)
            start = end
        if len(self.eval_split):
            self._write_predictions(model, start)
        return rows

    def _fit(
        self, model: keras.Model, make_batch: BatchMaker, start: int, end: int,
        eval_accuracy: float | None, sparsity: SparsityTracker,
        watch: StepTimeWatch | None = None,
    ) -> dict[str, float]:
        """Train steps ``start`` … ``end - 1``; returns the mean training loss and accuracy.

        The :meth:`SparsityTracker.chunks` ranges become the epochs of one ``fit``
        (one per run of equally long ranges): the measurement happens between
        epochs, and one dataset serves the whole interval.
        """
        cfg = self.config
        progress = ProgressLine(self.name, start, cfg.train.steps, eval_accuracy)
        early = _EarlyEstimate(start, lambda rate: self._estimate(start, rate))
        totals: dict[str, float] = {}
        try:
            chunks = sparsity.chunks(start, end)
            for size, group in itertools.groupby(chunks, key=lambda c: c[1] - c[0]):
                same = list(group)
                first, epochs = same[0][0], len(same)
                progress.first_step = early.first_step = first
                with training_weights(model):  # outside fit the model holds the weight average
                    history = model.fit(
                        step_batches(make_batch, first, first + size * epochs),
                        epochs=epochs,
                        steps_per_epoch=size,
                        shuffle=False,  # order comes from the seeded pipeline
                        verbose=0,
                        callbacks=[_StopOnNaN(first), _MeasureSparsity(sparsity, first),
                                   progress, early, *([_WatchSteps(first, watch)] if watch
                                                      else [])],
                    )
                for key, values in history.history.items():  # Keras logs each epoch's mean
                    totals[key] = totals.get(key, 0.0) + size * sum(map(float, values))
        finally:
            progress.clear()  # the log line, or an error message, starts on a clean line
        return {key: total / (end - start) for key, total in totals.items()}

    def _teacher_targets(self) -> np.ndarray | None:
        """A distilled run's soft training targets: its teacher runs finished (trained here
        when not), their targets written once (:func:`~facefold.train.distill.prepare_targets`)."""
        if not self.teachers:
            return None
        # Written when the run started, or by the executor that sent the run to this worker.
        if not (self.run_dir / runs.TEACHER_FILE).is_file():
            self._train_teachers()
            distill.prepare_targets(self.run_dir, self.config, self.train_split,
                                    [d for _, d in self.teachers], self.log)
        return distill.student_targets(self.run_dir, self.config, self.train_split,
                                       len(self.labels))

    def _train_teachers(self) -> None:
        """Train every teacher run that has not finished, on this run's shards."""
        for teacher, run_dir in self.teachers:
            identity = identity_of(self.identity["data"], self.eval_shards, teacher,
                                   self.people, self.excluded_shards)
            if not runs.is_finished(run_dir, identity):
                self.log(f"[{self.name}] teacher {teacher.preset}: training into {run_dir}")
                Trainer(self.data_dir, teacher, run_dir, self.eval_shards, self.source,
                        self.log, people=self.people, restart=self.restart,
                        data=self.identity["data"], hold_out=self.hold_out,
                        excluded_shards=self.excluded_shards).run()

    def _evaluation_batches(self) -> tf.data.Dataset:
        """The held-out inputs in order, as the family evaluates them."""
        return self.family.evaluation_batches(self.eval_split, self.config)

    def _model_at_latest_step(self) -> tuple[keras.Model, int]:
        found = runs.latest_checkpoint(self.run_dir)
        if found:
            step, path = found
            self.log(f"[{self.name}] resuming from {path.name}")
            return keras.models.load_model(path), step
        model = self.family.build(self.config, len(self.labels), self.precision)
        compile_model(model, self.config)
        # Built before the first step, so that the step-0 checkpoint holds the optimizer's slots
        # like every later one: Keras warns when it loads one whose optimizer was never built.
        model.optimizer.build(model.trainable_variables)
        _save_checkpoint(model, self.run_dir, 0)
        return model, 0

    def _evaluate(
        self, model: keras.Model, step: int, train_logs: dict, seconds_per_step: float = 0.0
    ) -> dict:
        loss = accuracy = None
        if len(self.eval_split) and self.config.model.tta_crops:
            logits = self._crop_tta_logits(model)
            loss = float(model.loss(self.eval_split.labels, logits))
            accuracy = float(np.mean(logits.argmax(axis=1) == self.eval_split.labels))
        elif len(self.eval_split):  # a model fit on everything has nothing to evaluate on
            loss, accuracy = map(float, model.evaluate(self._evaluation_batches(), verbose=0))
        return {
            "step": step,
            "eval_accuracy": accuracy,
            "eval_loss": loss,
            "train_loss": train_logs.get("loss"),
            "train_accuracy": train_logs.get("accuracy"),
            "seconds_per_step": seconds_per_step,
            "eval_images": len(self.eval_split),
        }

    def _write_metrics(self, rows: list[dict]) -> None:
        runs.write_metrics(self.run_dir, rows)

    def _crop_tta_logits(self, model: keras.Model) -> np.ndarray:
        """Held-out logits with crop TTA (``model.tta_crops``), which needs the whole images:
        through the inference model that ``predict`` and exports use."""
        images = self.eval_split.images
        if images.shape[1] != images.shape[2]:
            raise ValueError(f"model.tta_crops needs square images, got {images.shape[1:3]}")
        wrapped = inference_model(model, self.config.model, images.shape[1])
        return wrapped.predict(images, batch_size=self.config.train.eval_batch_size,
                               verbose=0)["logits"]

    def _write_predictions(self, model: keras.Model, step: int) -> None:
        if self.config.model.tta_crops:
            logits = self._crop_tta_logits(model)
        else:
            logits = model.predict(self._evaluation_batches(), verbose=0)
        runs.write_predictions(self.run_dir, step, self.eval_split.labels,
                               tf.nn.softmax(logits).numpy())

    def _summary_writers(self) -> dict[str, tf.summary.SummaryWriter]:
        root = self.run_dir / runs.TENSORBOARD_DIR
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

    def _estimate(self, start: int, seconds_per_step: float) -> None:
        """The run's time left, and the command's (``plan``), from its first timed steps.

        Logged once a run: each evaluation interval is its own ``fit`` and times its first
        steps again, which refines the command's estimate but would repeat the line."""
        if self.plan:
            self.plan.estimate(seconds_per_step)
        if self._estimate_logged:
            return
        self._estimate_logged = True
        left = (self.config.train.steps - start) * seconds_per_step
        self.log(f"[{self.name}] {seconds_per_step:.3f} s/step on the first steps: about "
                 f"{_duration(left)} for this run's {self.config.train.steps - start} steps")

    def _log_progress(self, row: dict, seconds_per_step: float) -> None:
        left = (self.config.train.steps - row["step"]) * seconds_per_step
        self.log(
            f"[{self.name}] step {row['step']}/{self.config.train.steps} "
            f"loss {row['train_loss']:.3f} train acc {row['train_accuracy']:.3f} "
            + (f"eval acc {row['eval_accuracy']:.4f} " if row["eval_accuracy"] is not None else "")
            + f"({seconds_per_step:.3f} s/step, "
            f"{left / 60:.0f} min left)"
        )
