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


def report_cv(result: CVResult, out: str | Path, title: str = "") -> str:
    """Everything a finished cross-validation writes into ``OUT``; returns the text to print.

    The 2016 table (``accuracy.csv``/``.png``), the error analysis (``per_person.csv``,
    ``confusion.png``, ``errors.png``) and ``report.md`` / self-contained ``report.html``.
    """
    from facefold.report.document import write_report  # these import this package
    from facefold.report.errors import save_error_report

    out = Path(out)
    table = save_cv_report(result, out, title)
    errors = save_error_report(out)
    markdown, html = write_report([out], out)
    return (
        f"{table}\nWrote {out / 'accuracy.csv'} and {out / 'accuracy.png'}\n{errors}\n"
        f"Report: {markdown} and {html} (self-contained)"
    )
