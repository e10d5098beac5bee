"""How the pages write a value: numbers to four significant digits, intervals, a missing value as a dash."""

from __future__ import annotations

from catalogue.columns import column

DASH = "\u2013"


def format_cell(value: object) -> str:
    """Show floats with 4 significant digits, missing values as an en dash."""
    if value is None:
        return DASH
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def interval(lo: float | None, hi: float | None) -> str:
    """An interval as 'lo – hi' (3 significant digits), or a dash when either end is missing."""
    return DASH if lo is None or hi is None else f"{lo:.3g} {DASH} {hi:.3g}"


def described(*names: str) -> list[tuple[str, str, str]]:
    """(name, heading, unit) of catalogue columns, from their one description."""
    return [(c.name, c.heading, c.unit or "") for c in map(column, names)]
