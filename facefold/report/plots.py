"""Accuracy curves of a cross-validation: every case, the average, and a zoom near the top."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
import numpy as np

from facefold.atomic import atomic_path
from facefold.evaluate.cv import CVResult


def one_point_marker(steps: list[int] | np.ndarray) -> dict:
    """Plot style for a curve: a marker when it has one point (an ensemble's final point,
    see facefold.train.ensemble), which a line alone would not show."""
    return {"marker": "o"} if len(steps) == 1 else {}


def zoom_steps(ax: plt.Axes, steps: list[int] | np.ndarray) -> None:
    """Limit the zoomed panel to the last three quarters of ``steps`` (all of one point)."""
    first = steps[len(steps) // 4] if len(steps) > 3 else steps[0]
    if first < steps[-1]:
        ax.set_xlim(first, steps[-1])


def plot_accuracy(result: CVResult, path: str | Path, title: str = "") -> None:
    """Write a PNG with two panels: full accuracy curves, and the same zoomed near the top."""
    steps = np.asarray(result.steps)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    final = result.accuracy[-1]
    low = np.nanmin(final) if np.isfinite(final).any() else 0.0
    for ax, zoom in zip(axes, (False, True), strict=True):
        for j, case in enumerate(result.cases):
            ax.plot(steps, result.accuracy[:, j], lw=1, alpha=0.6, label=f"Case #{case}",
                    **one_point_marker(steps))
        ax.plot(steps, result.average, color="black", lw=2.2, label="AVERAGE",
                **one_point_marker(steps))
        ax.set_xlabel("training step")
        ax.set_ylabel("held-out accuracy")
        ax.grid(alpha=0.3)
        if zoom:
            ax.set_ylim(max(0.0, low - 0.05), 1.0)
            zoom_steps(ax, steps)
            ax.set_title("zoomed near the top")
        else:
            ax.set_ylim(0, 1.0)
            ax.set_title(title or "accuracy per case")
            ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
