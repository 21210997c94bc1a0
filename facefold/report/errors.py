"""Error-analysis files of a finished CV or run folder: per-person CSV, confusion matrix, gallery.

:func:`save_error_report` writes ``per_person.csv``, ``confusion.png``
(row-normalized, person names on the axes) and ``errors.png`` (the most
confidently misclassified held-out crops, labelled "true / predicted /
confidence"); the numbers come from :mod:`facefold.evaluate.errors`.
:func:`plot_audit_sheet` draws the suspects of ``dataset audit`` on the same grid.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from facefold.atomic import atomic_path, write_text_atomic
from facefold.csvcells import safe_row
from facefold.evaluate.audit import Suspect
from facefold.evaluate.errors import (
    Predictions,
    collect_predictions,
    confusion_matrix,
    held_out_images,
    per_person_accuracy,
    row_normalize,
)

GALLERY_COLUMNS = 8
MAX_GALLERY = 48  # the most confident mistakes; more would be unreadable
ANNOTATE_UP_TO = 20  # classes: beyond this the cell numbers no longer fit
AXIS_NAME_WIDTH = 28  # characters; names are what the matrix is read by


def _short(name: str, width: int = 14) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def write_per_person_csv(predictions: Predictions, path: str | Path) -> None:
    """CSV, one row per person in label order: images, correct, accuracy, most confused with."""
    num_classes = len(predictions.names)
    images, correct = per_person_accuracy(predictions.labels, predictions.predicted, num_classes)
    matrix = confusion_matrix(predictions.labels, predictions.predicted, num_classes)
    np.fill_diagonal(matrix, 0)  # what a person is mistaken for, never themself
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["person", "images", "correct", "accuracy", "most_confused_with", "times"])
    for c, name in enumerate(predictions.names):
        accuracy = f"{correct[c] / images[c]:.6f}" if images[c] else ""
        other = int(matrix[c].argmax())
        times = int(matrix[c, other])
        confused = (predictions.names[other], times) if times else ("", 0)
        writer.writerow(safe_row([name, int(images[c]), int(correct[c]), accuracy, *confused]))
    write_text_atomic(path, buffer.getvalue())


def plot_confusion(predictions: Predictions, path: str | Path, title: str = "") -> None:
    """Write a PNG of the row-normalized confusion matrix (row = true person)."""
    names = [_short(n, AXIS_NAME_WIDTH) for n in predictions.names]
    n = len(names)
    shares = row_normalize(
        confusion_matrix(predictions.labels, predictions.predicted, n)
    )
    side = max(5.0, 0.32 * n + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    shown = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), names, rotation=90, fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"confusion (row-normalized, {len(predictions.labels)} held-out images)")
    if n <= ANNOTATE_UP_TO:
        for (i, j), share in np.ndenumerate(shares):
            if share > 0:
                ax.text(j, i, f"{share:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if share > 0.5 else "black")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    _save(fig, path)


def plot_error_gallery(
    predictions: Predictions, images: np.ndarray, path: str | Path, limit: int = MAX_GALLERY
) -> int:
    """Write a PNG of the most confidently misclassified images; return how many it shows.

    ``images`` (N, H, W, C) uint8 are the held-out images in the order of ``predictions``.
    """
    wrong = np.flatnonzero(~predictions.correct)
    wrong = wrong[np.argsort(-predictions.confidence[wrong], kind="stable")][:limit]
    names, predicted, confidence = predictions.names, predictions.predicted, predictions.confidence
    titles = [f"{_short(names[predictions.labels[i]], 18)} /\n"
              f"{_short(names[predicted[i]], 18)} / {confidence[i]:.2f}" for i in wrong]
    plot_crop_grid([images[i] for i in wrong], titles, path,
                   f"misclassified: true / predicted / confidence ({len(wrong)} shown)",
                   "no misclassified images")
    return len(wrong)


def plot_audit_sheet(suspects: Sequence[Suspect], path: str | Path,
                     limit: int = MAX_GALLERY) -> int:
    """Write the contact sheet of ``dataset audit``: the first ``limit`` suspects' crops, each
    titled "rank. given -> suggested / score"; return how many it shows."""
    shown = suspects[:limit]
    images = []
    for suspect in shown:
        with Image.open(io.BytesIO(suspect.crop)) as img:
            images.append(np.asarray(img.convert("RGB")))
    titles = [f"{rank}. {_short(s.given, 18)} ->\n{_short(s.suggested, 18)} / {s.score:.2f}"
              for rank, s in enumerate(shown, start=1)]
    plot_crop_grid(images, titles, path,
                   f"suspects: given -> suggested label / score ({len(shown)} of "
                   f"{len(suspects)} shown)", "no suspects")
    return len(shown)


def plot_crop_grid(images: Sequence[np.ndarray], titles: Sequence[str], path: str | Path,
                   title: str, empty: str) -> None:
    """Write a PNG grid of crops (H, W, C uint8, C = 1 or 3), each with its title, atomically;
    ``empty`` is the text of a grid without crops."""
    if not len(images):
        fig, ax = plt.subplots(figsize=(4, 1.5))
        ax.text(0.5, 0.5, empty, ha="center", va="center")
        ax.axis("off")
        _save(fig, path)
        return
    columns = min(GALLERY_COLUMNS, len(images))
    rows = math.ceil(len(images) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, text in zip(axes.flat, images, titles, strict=False):
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(text, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def save_error_report(folder: str | Path, out: str | Path | None = None) -> str:
    """Write ``per_person.csv``, ``confusion.png`` and ``errors.png`` for a CV or run folder.

    ``out`` defaults to ``folder``. Returns a short summary to print (the
    share of held-out images misclassified, the hardest people, the files).
    """
    out = Path(out or folder)
    predictions = collect_predictions(folder)
    write_per_person_csv(predictions, out / "per_person.csv")
    plot_confusion(predictions, out / "confusion.png")
    plot_error_gallery(predictions, held_out_images(predictions), out / "errors.png")
    images, correct = per_person_accuracy(
        predictions.labels, predictions.predicted, len(predictions.names)
    )
    missed = np.flatnonzero(correct < images)  # people with at least one mistake
    hardest = missed[np.argsort(correct[missed] / images[missed], kind="stable")][:3]
    wrong = int((~predictions.correct).sum())
    return (
        f"Misclassified {wrong} of {len(predictions.labels)} held-out images"
        + (": hardest " if len(hardest) else "")
        + ", ".join(f"{predictions.names[c]} {correct[c] / images[c]:.2f}" for c in hardest)
        + f"\nWrote {out / 'per_person.csv'}, {out / 'confusion.png'} and {out / 'errors.png'}"
    )
