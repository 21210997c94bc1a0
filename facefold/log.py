"""``Log``: where long-running functions send their progress lines (``print`` by default)."""

from collections.abc import Callable

Log = Callable[[str], None]
