"""CSV cells that a spreadsheet shows as text, never runs as a formula.

Every CSV facefold writes holds text a user chose (person names, file names, error messages);
a cell like ``=HYPERLINK(…)`` or ``@SUM(…)`` would be a formula in Excel or LibreOffice
(CSV or formula injection). :func:`safe_row` applies the OWASP rule to each text cell of a row
before it is written: a cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return gets a leading ``'``, which spreadsheets read as "this is text". Numbers, and text that
is a plain number (``-0.1234``, how scores are formatted), are left as they are: a spreadsheet
reads them as numbers, not formulas.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A signed decimal number, nothing around it (float() would also take " -1", "1_0", "nan").
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def safe_cell(value: Any) -> Any:
    """``value``, with ``'`` in front when it is text a spreadsheet would run as a formula."""
    if (isinstance(value, str) and value.startswith(FORMULA_STARTS)
            and not _NUMBER.fullmatch(value)):
        return f"'{value}"
    return value


def safe_row(row: Mapping[str, Any] | Iterable[Any]) -> dict[str, Any] | list[Any]:
    """A row for ``csv.writer`` (a sequence) or ``csv.DictWriter`` (a mapping), every cell
    through :func:`safe_cell`."""
    if isinstance(row, Mapping):
        return {key: safe_cell(value) for key, value in row.items()}
    return [safe_cell(value) for value in row]


def plain_cell(value: str) -> str:
    """A cell read back from a CSV facefold wrote: :func:`safe_cell`'s ``'`` removed again
    (for the CSVs facefold also reads, such as the fixes of ``dataset audit``)."""
    if value.startswith("'") and value[1:].startswith(FORMULA_STARTS):
        return value[1:]
    return value
