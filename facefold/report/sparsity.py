"""``facefold analyze sparsity``: ReLU sparsity curves of runs and the live units they imply.

Reads the ``RUN/sparsity.jsonl`` files written during training (see
:mod:`facefold.train.sparsity`), plots one panel per layer with every run
overlaid, and for each hidden dense layer reports the final sparsity and
``units × (1 − sparsity)``: the average number of units active per training
image. That is how the 2016 study chose 96 and 128 units for its reduced model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt

from facefold import runs
from facefold.atomic import atomic_path
from facefold.config import Config
from facefold.models.cnn import DENSE_NAME


@dataclass(frozen=True)
class DenseSparsity:
    """The final sparsity of one hidden dense layer of one run."""

    run: str
    layer: str
    units: int
    step: int
    sparsity: float

    @property
    def live_units(self) -> int:
        """``units × (1 − sparsity)``, rounded: see :func:`live_units`."""
        return live_units(self.units, self.sparsity)


def live_units(units: int, sparsity: float) -> int:
    """The average number of active units implied by a layer's sparsity, rounded half up.

    ``units`` is the layer width, ``sparsity`` its zero fraction in [0, 1]:
    ``live_units(1024, 0.90625) == 96``.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    # Half up, not Python's round-half-to-even: 12.5 live units reads as 13.
    return math.floor(units * (1.0 - sparsity) + 0.5)


def load_run_sparsity(run_dir: str | Path) -> list[dict]:
    """The sparsity rows of a run folder; ``FileNotFoundError`` naming what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    rows = runs.read_sparsity(run_dir)
    if not rows:
        raise FileNotFoundError(
            f"{run_dir / runs.SPARSITY_FILE} is missing or empty: the run has no sparsity "
            "measurements (train with train.sparsity_every > 0)"
        )
    return rows


def dense_units_of(run_dir: str | Path) -> dict[str, int]:
    """``{"fc1": units, …}`` of the hidden dense layers, from ``RUN/config.json``."""
    path = Path(run_dir) / runs.CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {run_dir} is not a facefold run folder")
    spec = Config.from_dict(runs.read_json_object(path)).model
    return {DENSE_NAME.format(i): units for i, units in enumerate(spec.dense_units, start=1)}


def final_dense_sparsity(run_dir: str | Path, label: str = "") -> list[DenseSparsity]:
    """The last measured sparsity of every hidden dense layer of a run."""
    last = load_run_sparsity(run_dir)[-1]
    return [
        DenseSparsity(label or Path(run_dir).name, layer, units, last["step"], last[layer])
        for layer, units in dense_units_of(run_dir).items()
        if layer in last
    ]


def run_labels(run_dirs: Sequence[str | Path]) -> list[str]:
    """Legend labels: each run folder's name, or parent/name when two names clash."""
    names = [Path(r).name for r in run_dirs]
    if len(set(names)) == len(names):
        return names
    return [f"{Path(r).parent.name}/{Path(r).name}" for r in run_dirs]


def plot_sparsity(runs: dict[str, list[dict]], path: str | Path) -> None:
    """Write a PNG with one panel per layer: sparsity against step, one line per run.

    ``runs`` maps a label to its sparsity rows (``{"step": s, layer: fraction, …}``).
    """
    layers: list[str] = []
    for rows in runs.values():
        layers += [k for k in rows[0] if k != "step" and k not in layers]
    cols = min(3, len(layers))
    nrows = math.ceil(len(layers) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
    for ax, layer in zip(axes.flat, layers, strict=False):
        for label, rows in runs.items():
            points = [(r["step"], r[layer]) for r in rows if layer in r]
            if points:
                ax.plot(*zip(*points, strict=True), lw=1.3, label=label)
        ax.set_title(f"{layer}: fraction of zero outputs")
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(layers):]:
        ax.set_visible(False)
    axes.flat[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def format_live_units(rows: Sequence[DenseSparsity]) -> str:
    """A text table: run, layer, units, step, final sparsity, live units."""
    lines = [f"{'run':20s} {'layer':6s} {'units':>6s} {'step':>7s} {'sparsity':>9s} {'live':>6s}"]
    lines += [
        f"{r.run:20s} {r.layer:6s} {r.units:6d} {r.step:7d} {r.sparsity:9.3f} {r.live_units:6d}"
        for r in rows
    ]
    return "\n".join(lines)


def analyze_sparsity(run_dirs: Sequence[str | Path], out: str | Path | None = None) -> str:
    """Plot the sparsity curves of ``run_dirs`` to ``out`` and return the live-units table.

    ``out`` defaults to ``<first run>/sparsity.png``. Every run is checked
    before anything is written; a missing folder or ``sparsity.jsonl`` raises
    ``FileNotFoundError`` naming it.
    """
    if not run_dirs:
        raise ValueError("give at least one run folder")
    labels = run_labels(run_dirs)
    runs = {label: load_run_sparsity(r) for label, r in zip(labels, run_dirs, strict=True)}
    dense = [
        row for label, r in zip(labels, run_dirs, strict=True)
        for row in final_dense_sparsity(r, label)
    ]
    out = Path(out) if out is not None else Path(run_dirs[0]) / "sparsity.png"
    plot_sparsity(runs, out)
    return f"{format_live_units(dense)}\nWrote {out}"
