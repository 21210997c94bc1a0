"""Error analysis of finished runs: who gets confused with whom, and on which images.

Works on a cross-validation folder, an experiment's preset folder (the same
thing) or a single training run folder (see :mod:`facefold.runs`). Each case's
predictions hold the held-out labels and class probabilities at the last step,
images in shard order; the cases are pooled in case order. The plots live in
:mod:`facefold.report.errors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facefold import runs
from facefold.data.pipeline import Split, concat, decode_shards
from facefold.data.records import read_labels


@dataclass(frozen=True)
class Predictions:
    """Held-out predictions pooled over the cases of a folder.

    ``labels`` (N,) are the true class indices, ``probabilities`` (N, C) the
    softmax outputs, ``case_dirs[i]`` the run folder of the ``sizes[i]``
    consecutive images that came from case ``i``.
    """

    names: list[str]
    labels: np.ndarray
    probabilities: np.ndarray
    case_dirs: list[Path]
    sizes: list[int]

    @property
    def predicted(self) -> np.ndarray:
        """(N,) the class with the highest probability."""
        return self.probabilities.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        """(N,) the probability of the predicted class."""
        return self.probabilities.max(axis=1)

    @property
    def correct(self) -> np.ndarray:
        """(N,) bool: the prediction is the true class."""
        return self.predicted == self.labels


def collect_predictions(folder: str | Path) -> Predictions:
    """Pool the held-out predictions of every case of ``folder`` (:func:`~facefold.runs.run_dirs`).

    Raises ``ValueError`` naming the folders when cases disagree on the label list.
    """
    dirs = runs.run_dirs(folder)
    names = read_labels(dirs[0])
    labels, probabilities, sizes = [], [], []
    for run_dir in dirs:
        if read_labels(run_dir) != names:
            raise ValueError(
                f"{run_dir}/labels.txt differs from {dirs[0]}/labels.txt: "
                "the cases were trained on different label lists"
            )
        data = runs.read_predictions(run_dir)
        if data["probabilities"].shape != (len(data["labels"]), len(names)):
            raise ValueError(
                f"{run_dir}/{runs.PREDICTIONS_FILE}: probabilities have shape "
                f"{data['probabilities'].shape}, expected ({len(data['labels'])}, {len(names)})"
            )
        labels.append(data["labels"].astype(np.int64))
        probabilities.append(data["probabilities"])
        sizes.append(len(data["labels"]))
    return Predictions(
        names, np.concatenate(labels), np.concatenate(probabilities), dirs, sizes
    )


def per_person_accuracy(
    labels: np.ndarray, predicted: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(images, correct)``: per class, how many held-out images and how many were right.

    Both are (num_classes,) int arrays; accuracy is ``correct / images``.

    >>> per_person_accuracy(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3)
    (array([2, 1, 1]), array([1, 1, 0]))
    """
    images = np.bincount(labels, minlength=num_classes)
    correct = np.bincount(labels[labels == predicted], minlength=num_classes)
    return images, correct


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int counts: row = true class, column = predicted class.

    >>> confusion_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), 2)
    array([[1, 1],
           [0, 1]])
    """
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def row_normalize(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the share of a person's images given to each class).

    Rows of a class with no images stay 0.
    """
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)


def _held_out(run_dir: Path, cache: dict[tuple[str, int], list[Split]]) -> Split:
    """The held-out images of one run, decoded from its dataset in evaluation order."""
    run = runs.read_run_info(run_dir)
    channels = runs.read_run_config(run_dir).model.channels
    key = (run["data_dir"], channels)
    if key not in cache:  # the cases of one CV share a dataset: decode it once
        cache[key] = decode_shards(run["data_dir"], channels)
    return concat([cache[key][k] for k in run["eval_shards"]])


def held_out_images(predictions: Predictions) -> np.ndarray:
    """(N, H, W, C) uint8 held-out images, in the order of ``predictions``.

    Decodes each case's dataset (``run.json``: ``data_dir``, ``eval_shards``).
    Raises ``ValueError`` when the shards no longer hold the labels the run
    was evaluated on (the dataset changed since).
    """
    cache: dict[tuple[str, int], list[Split]] = {}
    images, start = [], 0
    for run_dir, size in zip(predictions.case_dirs, predictions.sizes, strict=True):
        split = _held_out(run_dir, cache)
        if not np.array_equal(split.labels, predictions.labels[start : start + size]):
            raise ValueError(
                f"{run_dir}: the held-out shards no longer match {runs.PREDICTIONS_FILE} "
                "(the dataset changed since the run)"
            )
        images.append(split.images)
        start += size
    return np.concatenate(images)
