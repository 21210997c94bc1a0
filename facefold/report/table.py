"""The cross-validation table in the 2016 layout: one row per step, one column per case, AVERAGE."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from facefold.atomic import write_text_atomic
from facefold.evaluate.cv import CVResult


def _columns(result: CVResult) -> list[str]:
    return ["Step", *(f"Case #{k}" for k in result.cases), "AVERAGE"]


def _cell(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.4f}"


def format_table(result: CVResult) -> str:
    """The table as aligned text, followed by the final mean ± std line.

    >>> r = CVResult([0, 10], [0, 1], np.array([[0.5, 0.25], [1.0, 0.75]]))
    >>> print(format_table(r))
    Step  Case #0  Case #1  AVERAGE
       0   0.5000   0.2500   0.3750
      10   1.0000   0.7500   0.8750
    Step 10: 0.8750 ± 0.1768 (mean ± sample std over 2 cases)
    """
    header = _columns(result)
    rows = [
        [str(step), *(_cell(v) for v in result.accuracy[i]), _cell(result.average[i])]
        for i, step in enumerate(result.steps)
    ]
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    mean, std = result.final()
    lines.append(
        f"Step {result.steps[-1]}: {mean:.4f} ± {std:.4f} "
        f"(mean ± sample std over {len(result.cases)} case{'s' if len(result.cases) > 1 else ''})"
    )
    return "\n".join(lines)


def write_csv(result: CVResult, path: str | Path) -> None:
    """Write the table (same columns as :func:`format_table`) as CSV, atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_columns(result))
    for i, step in enumerate(result.steps):
        values = [*result.accuracy[i], result.average[i]]
        writer.writerow([step, *("" if np.isnan(v) else f"{v:.6f}" for v in values)])
    write_text_atomic(path, buffer.getvalue())
