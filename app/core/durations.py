"""Durations as users write them: ``90s``, ``5m``, ``1h30m``, ``2h``, bare seconds, ``never``.

One representation is used everywhere inside Siesta: ``float`` seconds, or ``None`` for
"never unload". ``0`` means "unload as soon as the model is idle"; any negative number
means never, as in Ollama's ``keep_alive``.
"""

from __future__ import annotations

import math
import re

Timeout = float | None
"""Seconds until an idle model is unloaded; ``None`` keeps it loaded."""

VALID_FORMS = '"90s", "5m", "1h30m", "2h", a number of seconds such as 90, or "never"'

_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?[hms])+")
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
MAX_SECONDS = 10 * 365 * 24 * 3600.0  # beyond ten years, a user means "never"


class DurationError(ValueError):
    """A duration that could not be read; the message quotes it and shows valid forms."""


def parse_duration(value: object) -> Timeout:
    """Reads a duration from a string or a number; raises DurationError on anything else."""
    if isinstance(value, bool):  # bool is an int; true/false as a duration is a mistake
        raise DurationError(f"invalid duration {value!r}: expected {VALID_FORMS}")
    if isinstance(value, (int, float)):
        return _from_seconds(float(value), value)
    if not isinstance(value, str):
        raise DurationError(f"invalid duration {value!r}: expected {VALID_FORMS}")
    text = value.strip().lower()
    if text in ("never", "forever", "inf", "infinite"):
        return None
    if _NUMBER.fullmatch(text):
        return _from_seconds(float(text), value)
    if text.startswith("-") and _WHOLE.fullmatch(text[1:]):
        return None  # a negative duration keeps the model loaded, like a negative number
    if not _WHOLE.fullmatch(text):
        raise DurationError(f"invalid duration {value!r}: expected {VALID_FORMS}")
    seen: set[str] = set()
    total = 0.0
    last_rank = -1
    for number, unit in _PART.findall(text):
        rank = "hms".index(unit)
        if unit in seen or rank < last_rank:
            raise DurationError(
                f"invalid duration {value!r}: units must appear once, in the order h, m, s "
                f"(expected {VALID_FORMS})"
            )
        seen.add(unit)
        last_rank = rank
        total += float(number) * _UNIT_SECONDS[unit]
    return _from_seconds(total, value)


def _from_seconds(seconds: float, original: object) -> Timeout:
    if math.isnan(seconds):
        raise DurationError(f"invalid duration {original!r}: expected {VALID_FORMS}")
    if seconds < 0 or seconds > MAX_SECONDS:
        return None
    return seconds


def format_duration(timeout: Timeout) -> str:
    """Writes a duration in its canonical short form: ``"1h30m"``, ``"90s"`` -> ``"1m30s"``, ``"never"``."""
    if timeout is None:
        return "never"
    if timeout == 0:
        return "0s"
    whole = int(timeout)
    fraction = timeout - whole
    hours, rest = divmod(whole, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if seconds or fraction:
        secs = seconds + fraction
        parts.append(f"{secs:g}s" if fraction else f"{seconds}s")
    return "".join(parts)


def format_countdown(seconds: float) -> str:
    """Time left as a clock reading for people: ``4:12``, ``1:02:03``."""
    total = max(0, math.ceil(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"
