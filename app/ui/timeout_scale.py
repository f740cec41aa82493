"""The non-linear scale of the timeout sliders: a handful of stops a person can hit exactly.

A linear slider from 0 to 8 hours cannot land on "5 minutes"; this scale has one step
per value people actually pick (0, 30 s, 1, 2, 5, 10, 15, 30 min, 1, 2, 4, 8 h, never).
Pure Python, no Qt: the settings dialog and the models window map slider positions
through it, and the tests check it directly.

Values are the core's representation: float seconds, ``None`` for "never".
"""

from __future__ import annotations

import math

from app.core.config.durations import Timeout, format_duration

STOPS: tuple[Timeout, ...] = (
    0.0, 30.0,
    60.0, 120.0, 300.0, 600.0, 900.0, 1800.0,
    3600.0, 7200.0, 14400.0, 28800.0,
    None,
)
"""Slider positions, left to right; the last one keeps the model loaded."""

NEVER_INDEX = len(STOPS) - 1
MAX_INDEX = NEVER_INDEX


def seconds_at(index: int) -> Timeout:
    """The timeout at slider position ``index`` (clamped to the scale)."""
    return STOPS[min(max(index, 0), MAX_INDEX)]


def nearest_index(value: Timeout) -> int:
    """The slider position closest to ``value``; on a log scale, so 7 min sits at 5 min, 8 min at 10.

    Between two stops the boundary is their geometric mean (between 0 and 30 s it is 15 s);
    anything past the largest finite stop's half-way to infinity still shows as 8 h, since
    only ``None`` means never.
    """
    if value is None:
        return NEVER_INDEX
    if value <= 0:
        return 0
    finite = [s for s in STOPS if s is not None]
    for i in range(len(finite) - 1):
        low, high = finite[i], finite[i + 1]
        boundary = high / 2 if low == 0 else math.sqrt(low * high)
        if value < boundary:
            return i
    return len(finite) - 1


def is_on_scale(value: Timeout) -> bool:
    """Whether ``value`` is exactly one of the stops (else the slider only approximates it)."""
    return value in STOPS


def short_label(value: Timeout) -> str:
    """Compact text for a timeout: ``"30 s"``, ``"5 min"``, ``"1 h"``, ``"1h30m"``, ``"never"``."""
    if value is None:
        return "never"
    if value == 0:
        return "at once"
    if value < 60 and value == int(value):
        return f"{int(value)} s"
    if value < 3600 and value % 60 == 0:
        return f"{int(value // 60)} min"
    if value % 3600 == 0:
        return f"{int(value // 3600)} h"
    return format_duration(value)


def spoken_label(value: Timeout) -> str:
    """A timeout in words, for screen readers: ``"30 seconds"``, ``"5 minutes"``,
    ``"1 hour 30 minutes"``, ``"at once"``, ``"never (kept loaded)"``."""
    if value is None:
        return "never (kept loaded)"
    if value <= 0:
        return "at once"
    hours, rest = divmod(round(value), 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{n} {unit}{'' if n == 1 else 's'}"
             for n, unit in ((hours, "hour"), (minutes, "minute"), (seconds, "second")) if n]
    return " ".join(parts) or format_duration(value)


MENU_PRESETS: tuple[float, ...] = (60.0, 300.0, 900.0, 3600.0)
"""The timeouts offered in a model's tray submenu and the models window (besides never and global)."""
