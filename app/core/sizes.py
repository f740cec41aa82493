"""Byte counts for people: the one formatter the CLI (``siesta ps``, ``siesta discover``)
and the tray app (menu, tooltip, models window, discover dialog) share. No Qt.
"""

from __future__ import annotations

__all__ = ["format_bytes"]

_UNITS = ("B", "KB", "MB", "GB")


def format_bytes(value: int | float | None) -> str:
    """Memory or a file size in binary units like ``ps``: ``"512 B"``, ``"9.5 MB"``,
    ``"17.2 MB"``, ``"20 MB"``, ``"230 MB"``, ``"1.2 GB"``, ``"40.0 GB"``; ``""`` when
    unknown (None or negative).

    At most three significant digits below a gigabyte: one decimal under 10, one
    decimal under 100 unless it is ``.0``, none from 100 on. Gigabytes, the largest
    unit, always show one decimal.
    """
    if value is None or value < 0:
        return ""
    amount = float(value)
    for unit in _UNITS:
        if amount < 1024 or unit == _UNITS[-1]:
            if unit == "B":
                return f"{int(amount)} B"
            if unit == _UNITS[-1] or amount < 10:
                return f"{amount:.1f} {unit}"
            if amount < 100:
                return f"{amount:.1f}".removesuffix(".0") + f" {unit}"
            return f"{amount:.0f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")
