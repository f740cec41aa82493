"""Byte counts for people: the one formatter the CLI (``siesta ps``, ``siesta discover``)
and the tray app (menu, tooltip, models window, discover dialog) share, and the one reader
of sizes people write (a recipe's ``memory_estimate = "6GB"``). Binary units everywhere:
1 KB = 1024 bytes, 1 GB = 2**30 bytes. No Qt.
"""

from __future__ import annotations

import math
import re

__all__ = ["format_bytes", "parse_size", "SizeError", "SizeTooLarge", "MAX_SIZE"]

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


class SizeError(ValueError):
    """A size that cannot be read (``parse_size``)."""


class SizeTooLarge(SizeError):
    """A size above :data:`MAX_SIZE`."""


MAX_SIZE = 2**63 - 1
"""The largest size read: 8 EiB, TOML's largest integer. Beyond it a size is a mistake (a
400-digit number), and refusing it keeps every byte count a float can hold."""


_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str | int) -> int:
    """Bytes from a size people write: ``"6GB"``, ``"6 GiB"``, ``"1.5g"``, ``"512MB"``,
    ``"4096"`` or ``"100 B"``; case-insensitive, decimals allowed, always binary
    (``"1GB"`` = ``"1GiB"`` = 2**30). A whole number (int or digits) is bytes. Rounds to
    the nearest byte. Raises SizeError for anything else (negative, empty, ``"6 GBs"``,
    ``"1e9"``, ``"iB"``, an "i" without a unit letter), SizeTooLarge above :data:`MAX_SIZE`.
    """
    if isinstance(text, bool):
        raise SizeError(f"not a size: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise SizeError("a size cannot be negative")
        if text > MAX_SIZE:
            raise _too_large(text)
        return text
    if not isinstance(text, str):
        raise SizeError(f"not a size: {text!r}")
    match = _SIZE.match(text)
    if match is None or (match.group(3) and not match.group(2)):
        raise SizeError(f"not a size: {text!r} (write it like 6GB, 512 MiB or 1.5 GB)")
    value = float(match.group(1)) * 1024 ** _POWERS[match.group(2).lower()]
    if not math.isfinite(value) or value > MAX_SIZE:  # a long digit string reads as inf
        raise _too_large(text)
    return int(round(value))


def _too_large(value: str | int) -> SizeTooLarge:
    if isinstance(value, int):  # str() of a huge int is slow, and refused past 4300 digits
        shown = str(value) if value.bit_length() <= 128 else f"a {int(value.bit_length() * math.log10(2)) + 1}-digit number"
    else:
        shown = repr(value) if len(value) <= 40 else f"{value[:20]!r}... ({len(value)} characters)"
    return SizeTooLarge(f"too large: {shown} (at most {MAX_SIZE} bytes, 8 EiB)")
