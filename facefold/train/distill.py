"""Knowledge distillation: one CNN taught by the soft targets of a stronger teacher.

A distilled config names a registered preset in ``train.teacher`` (e.g. ``fast-64-distilled``
is ``fast-64-long`` taught by the from-scratch ensemble ``fast-64-duo``). Hinton et al.
(2015) showed that a model trained to match an ensemble's probabilities keeps much of the
ensemble's accuracy: the teacher's probabilities say which other people a face resembles,
which a one-hot label does not. Here the student stays one network, as cheap to run as its
preset; the teacher only costs training time.

**Teacher runs belong to the same fold.** A teacher run is an ordinary run of the teacher's
config (each member's, for an ensemble; :func:`facefold.models.presets.teacher_configs`) on
exactly the student's training shards and held-out shards, so no held-out image ever
reaches the student through its teacher. As for ensemble members, the caller may hand the
teacher runs their folders (an experiment hands its own ``OUT/<preset>/case-K``); one nobody
handed over is trained into ``RUN/teacher/<preset>``.

**Targets.** Before the student trains, :func:`teacher_targets` runs every teacher on
``train.teacher_views`` views of every training image, jittered by the student's own
augmentation (the crops the student will see, not only the clean one on which a teacher that
fit its training images is nearly sure), and averages the probabilities over views and
teacher runs. They are written to ``RUN/teacher.npz`` (:mod:`facefold.runs`) with the labels
they belong to; a resumed run reads them back, so resuming reproduces the run. A training
image's target is ``teacher_weight`` times its teacher probabilities plus ``1 -
teacher_weight`` times its one-hot label (:func:`student_targets`); label smoothing, mixup
and cutmix then apply to these targets as to labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from facefold import runs
from facefold.config import Config
from facefold.data.augment import augment
from facefold.data.pipeline import Split
from facefold.log import Log
from facefold.models.families import family_of
from facefold.models.outputs import softmax

# Offsets the seed of the teacher's views from the student's own batch jitter.
VIEW_SEED_OFFSET = 3_000_017


def teacher_runs(config: Config, out: str | Path,
                 handed: Mapping[str, Path] | None = None) -> list[tuple[Config, Path]]:
    """Each teacher run's config and folder: the one handed over in ``handed`` (by preset
    name), else ``OUT/teacher/<preset>``; empty without a teacher."""
    return family_of(config).dependency_runs(config, out, handed)


def teacher_targets(run_dirs: Sequence[Path], split: Split, config: Config) -> np.ndarray:
    """The teachers' mean probabilities (N, C) float32 on ``config.train.teacher_views``
    views of every image of ``split``, each view jittered by ``config.augment`` from a seed
    of its own (:data:`VIEW_SEED_OFFSET` + the student's seed, the view, the batch): the
    same for the same split and config. Every teacher run must be finished."""
    per_teacher = []
    for run_dir in run_dirs:
        found = runs.latest_checkpoint(run_dir) if runs.is_run(run_dir) else None
        teacher = runs.read_run_config(run_dir) if found else None
        if teacher is None or found[0] != teacher.train.steps:
            raise ValueError(f"teacher run {run_dir} has not finished: train it first")
        if teacher.model.channels != split.images.shape[-1]:
            raise ValueError(f"teacher run {run_dir} reads {teacher.model.channels}-channel "
                             f"images, the student {split.images.shape[-1]}-channel ones")
        # A weight-averaged run's checkpoint holds the average in the network: its best weights.
        model = keras.models.load_model(found[1], compile=False)
        probabilities = 0.0
        for view in range(config.train.teacher_views):
            parts = []
            for start in range(0, len(split), config.train.eval_batch_size):
                images = tf.constant(split.images[start:start + config.train.eval_batch_size])
                seed = tf.constant([config.train.seed + VIEW_SEED_OFFSET, view * 1_000_000
                                    + start], tf.int64)
                crops = augment(images, config.augment, teacher.model.crop_size, seed)
                parts.append(softmax(np.asarray(model(crops, training=False), np.float64)))
            probabilities = probabilities + np.concatenate(parts)
        per_teacher.append(probabilities / config.train.teacher_views)
    return np.mean(per_teacher, axis=0).astype(np.float32)


def prepare_targets(out: str | Path, config: Config, split: Split,
                    run_dirs: Sequence[Path], log: Log = print) -> None:
    """Write the teacher targets of the run in ``out`` (:func:`teacher_targets` on its
    training ``split``) unless the run has started with targets already: those stay, so a
    resumed run trains on the targets it began with."""
    out = Path(out)
    if runs.is_run(out) and (out / runs.TEACHER_FILE).is_file():
        return
    log(f"[{out.name}] teacher targets from {', '.join(str(d) for d in run_dirs)}")
    targets = teacher_targets(run_dirs, split, config)
    runs.write_teacher_targets(out, split.labels, targets, run_dirs)


def student_targets(run_dir: str | Path, config: Config, split: Split,
                    num_classes: int) -> np.ndarray:
    """The soft training targets (N, C) of a distilled run from its ``teacher.npz``:
    ``teacher_weight`` x teacher probabilities + the rest x one-hot label. Raises
    ``ValueError`` when the file belongs to other training images."""
    stored = runs.read_teacher_targets(run_dir)
    where = Path(run_dir) / runs.TEACHER_FILE
    if not np.array_equal(stored["labels"], split.labels):
        raise ValueError(f"{where} holds targets of other training images than this run's: "
                         "delete it to compute it again")
    if stored["targets"].shape != (len(split), num_classes):
        raise ValueError(f"{where}: targets of shape {stored['targets'].shape}, expected "
                         f"{(len(split), num_classes)}")
    weight = config.train.teacher_weight
    one_hot = np.eye(num_classes, dtype=np.float32)[split.labels]
    return (weight * stored["targets"] + (1.0 - weight) * one_hot).astype(np.float32)
