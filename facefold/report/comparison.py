"""The comparison of an experiment's presets: printed table, CSV, and accuracy curves.

:func:`save_comparison` writes ``comparison.csv`` and ``comparison.png`` and
returns the table; the numbers come from :mod:`facefold.evaluate.experiment`.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
import numpy as np

from facefold.atomic import atomic_path, write_text_atomic
from facefold.csvcells import safe_row
from facefold.evaluate.experiment import ExperimentResult, PresetSummary
from facefold.report.plots import one_point_marker, zoom_steps
from facefold.runs import comparison_paths

CSV_COLUMNS = [
    "preset", "cases", "accuracy_mean", "accuracy_std", "parameters", "weights_bytes",
    "checkpoint_bytes", "seconds_per_step", "images_per_second", "t", "t_test_p",
    "mcnemar_b01", "mcnemar_b10", "mcnemar_p", "steps_to_baseline", "seconds_to_baseline",
]


def _size(num_bytes: int) -> str:
    """Bytes as ``412 kB`` or ``17.5 MB`` (decimal units)."""
    return f"{num_bytes / 1e6:.1f} MB" if num_bytes >= 1e6 else f"{num_bytes / 1e3:.0f} kB"


def _p(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def _row(s: PresetSummary, baseline: str) -> list[str]:
    if s.preset == baseline:
        t_test = mcnemar = "(baseline)"
    else:
        t_test = _p(s.t_test[1]) if s.t_test else "-"
        mcnemar = f"{_p(s.mcnemar[2])} ({s.mcnemar[0]}/{s.mcnemar[1]})" if s.mcnemar else "-"
    return [
        s.preset,
        ",".join(map(str, s.cases)),
        f"{s.accuracy_mean:.4f} ± {s.accuracy_std:.4f}",
        f"{s.parameters:,}",
        _size(s.weights_bytes),
        _size(s.checkpoint_bytes),
        _number(s.seconds_per_step, ".3f"),  # NaN for an ensemble: its members trained
        _number(s.images_per_second, ".0f"),
        t_test,
        mcnemar,
        _time_to(s),
    ]


def _number(value: float, spec: str) -> str:
    return "-" if math.isnan(value) else format(value, spec)


def _time_to(s: PresetSummary) -> str:
    if s.steps_to_baseline is None:
        return "-"
    return f"{s.steps_to_baseline} ({s.seconds_to_baseline / 60:.1f} min)"


def format_comparison(result: ExperimentResult) -> str:
    """The comparison as aligned text: one row per preset, then what the tests mean."""
    header = ["Preset", "Folds", "Accuracy", "Params", "Weights", "Checkpoint", "s/step",
              "img/s", "t-test p", "McNemar p (b01/b10)", f"To {result.baseline} acc"]
    rows = [_row(s, result.baseline) for s in result.summaries]
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in enumerate(header)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
             for line in (header, *rows)]
    lines.append(
        f"Accuracy: final held-out, mean ± sample std over folds. Weights: .weights.h5; "
        f"Checkpoint: .keras with optimizer state. s/step: median over evaluation intervals."
        f"\nt-test: paired over the folds both ran, "
        f"vs {result.baseline}. McNemar: exact, on the pooled held-out images vs "
        f"{result.baseline}; b01 = {result.baseline} wrong and preset right, b10 = the reverse."
        f"\nTo {result.baseline} acc: first evaluated step (and training time) where the "
        f"preset's mean over the shared folds reaches {result.baseline}'s final mean."
    )
    return "\n".join(lines)


def _csv_value(value: float | int | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def write_comparison_csv(result: ExperimentResult, path: str | Path) -> None:
    """Write one row per preset (columns :data:`CSV_COLUMNS`; sizes in bytes), atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for s in result.summaries:
        t, t_p = s.t_test or (None, None)
        b01, b10, m_p = s.mcnemar or (None, None, None)
        values = [s.accuracy_mean, s.accuracy_std, s.parameters, s.weights_bytes,
                  s.checkpoint_bytes, s.seconds_per_step, s.images_per_second, t, t_p,
                  b01, b10, m_p, s.steps_to_baseline, s.seconds_to_baseline]
        writer.writerow(safe_row([s.preset, ";".join(map(str, s.cases)),
                                  *map(_csv_value, values)]))
    write_text_atomic(path, buffer.getvalue())


def curve_style(index: int) -> dict[str, str]:
    """Colour and line style of the ``index``-th preset's curve (from 0).

    Matplotlib's 10 default colours, solid, then the same colours dotted, then
    dash-dotted: an ablation study easily has more than 10 presets, and with the
    colours alone the 11th would look like the 1st. Distinct for 30 curves.
    """
    return {"color": f"C{index % 10}", "linestyle": ("-", ":", "-.")[index // 10 % 3]}


def plot_comparison(result: ExperimentResult, path: str | Path) -> None:
    """Write a PNG: each preset's average curve against the baseline's (dashed black).

    Two panels: full scale, and zoomed near the top.
    """
    base = result.baseline_curve
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    finals = [c.average[-1] for c in result.curves.values()] + [base.average[-1]]
    low = np.nanmin(finals) if np.isfinite(finals).any() else 0.0
    for ax, zoom in zip(axes, (False, True), strict=True):
        for index, (name, curve) in enumerate(result.curves.items()):
            if name == result.baseline and curve.cases == base.cases:
                continue  # drawn below as the reference
            style = ({"color": "0.55", "lw": 1.2} if name == result.baseline
                     else {"lw": 1.6, **curve_style(index)})
            ax.plot(curve.steps, curve.average, label=f"{name} (folds {_folds(curve.cases)})",
                    **style, **one_point_marker(curve.steps))
        ax.plot(base.steps, base.average, "k--", lw=2,
                label=f"{result.baseline}: average of {len(base.cases)} fold(s)")
        ax.set_xlabel("training step")
        ax.set_ylabel("held-out accuracy")
        ax.grid(alpha=0.3)
        if zoom:
            ax.set_ylim(max(0.0, low - 0.05), 1.0)
            # Over every curve's steps: presets that stop early must stay in the panel.
            every = {int(k) for c in (*result.curves.values(), base) for k in c.steps}
            zoom_steps(ax, sorted(every))
            ax.set_title("zoomed near the top")
        else:
            ax.set_ylim(0, 1.0)
            ax.set_title(f"presets against {result.baseline}")
            ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _folds(cases: list[int]) -> str:
    return ",".join(map(str, cases))


def save_comparison(result: ExperimentResult, out: str | Path) -> str:
    """Write ``OUT/comparison.csv`` and ``OUT/comparison.png``; return the printed table."""
    csv_path, png_path = comparison_paths(out)
    write_comparison_csv(result, csv_path)
    plot_comparison(result, png_path)
    return format_comparison(result) + f"\nWrote {csv_path} and {png_path}"
