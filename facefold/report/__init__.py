"""Tables and figures made from finished runs."""

from __future__ import annotations

from pathlib import Path

from facefold.evaluate.cv import CVResult
from facefold.report.plots import plot_accuracy
from facefold.report.table import format_table, write_csv


def save_cv_report(result: CVResult, out: str | Path, title: str = "") -> str:
    """Write ``OUT/accuracy.csv`` and ``OUT/accuracy.png``; return the printed table."""
    out = Path(out)
    write_csv(result, out / "accuracy.csv")
    plot_accuracy(result, out / "accuracy.png", title)
    return format_table(result)
