"""Durations as users write them: ``90s``, ``5m``, ``1h30m``, ``2h``, bare seconds, ``never``.

One representation is used everywhere inside Siesta: ``float`` seconds, or ``None`` for
"never unload". ``0`` means "unload as soon as the model is idle"; any negative number
means never, as in Ollama's ``keep_alive``, and so does anything beyond ten years.

Durations are kept to the millisecond: a value is rounded to it, and one above 0 but under
a millisecond is refused (it would otherwise round to 0, which means "at once"). So is what
is not a finite number (NaN, an infinity, an integer too large for a float). On that grid
:func:`format_duration` is exact: :func:`parse_duration` reads what it writes back as the
same value, which is what lets Siesta write settings.toml and recipes it can read again.
"""

from __future__ import annotations

import enum
import math
import re
from typing import Final, Literal

Timeout = float | None
"""Seconds until an idle model is unloaded; ``None`` keeps it loaded."""


class UseGlobal(str, enum.Enum):
    """A model with no timeout of its own: the global timeout applies. On the wire (API,
    CLI, tray menus) it is written ``"default"``; being a ``str``, it equals that word."""

    USE_GLOBAL = "default"

    def __repr__(self) -> str:
        return "USE_GLOBAL"


USE_GLOBAL: Final = UseGlobal.USE_GLOBAL
USE_GLOBAL_WORD: Final = USE_GLOBAL.value

ModelTimeout = Timeout | Literal[UseGlobal.USE_GLOBAL]
"""A model's own timeout setting: seconds, ``None`` (never), or :data:`USE_GLOBAL`."""


class NotGiven(enum.Enum):
    """A request that did not send ``keep_alive``: the model's own or the global timeout applies."""

    NOT_GIVEN = "not given"

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = NotGiven.NOT_GIVEN

KeepAlive = Timeout | Literal[NotGiven.NOT_GIVEN]
"""A request's ``keep_alive``: seconds, ``None`` (never), or :data:`NOT_GIVEN`."""

VALID_FORMS = '"90s", "5m", "1h30m", "2h", a number of seconds such as 90, or "never"'

_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?[hms])+")
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
MAX_SECONDS = 10 * 365 * 24 * 3600.0  # beyond ten years, a user means "never"
RESOLUTION = 0.001  # a millisecond: durations are kept to it
_SHOWN_MAX = 60


class DurationError(ValueError):
    """A duration that could not be read; the message quotes it and shows valid forms."""


def parse_duration(value: object) -> Timeout:
    """Reads a duration from a string or a number; raises DurationError on anything else."""
    if isinstance(value, bool):  # bool is an int; true/false as a duration is a mistake
        raise _invalid(value)
    if isinstance(value, (int, float)):
        return _from_seconds(_finite(value, value), value)
    if not isinstance(value, str):
        raise _invalid(value)
    text = value.strip().lower()
    if text in ("never", "forever", "inf", "infinite"):
        return None
    if _NUMBER.fullmatch(text):
        return _from_seconds(_finite(text, value), value)
    if text.startswith("-") and _WHOLE.fullmatch(text[1:]):
        # a negative duration keeps the model loaded, like a negative number ("-0s" is 0)
        return _from_seconds(-_units_total(text[1:], value), value)
    if not _WHOLE.fullmatch(text):
        raise _invalid(value)
    return _from_seconds(_units_total(text, value), value)


def _units_total(text: str, original: object) -> float:
    """Seconds in ``"1h30m"``-style text that already matched ``_WHOLE``."""
    seen: set[str] = set()
    total = 0.0
    last_rank = -1
    for number, unit in _PART.findall(text):
        rank = "hms".index(unit)
        if unit in seen or rank < last_rank:
            raise DurationError(
                f"invalid duration {short_repr(original)}: units must appear once, in the order h, m, s "
                f"(expected {VALID_FORMS})"
            )
        seen.add(unit)
        last_rank = rank
        total += _finite(number, original) * _UNIT_SECONDS[unit]
    return total  # may overflow to inf from finite parts: that is "huge", so never


def parse_model_timeout(value: object) -> ModelTimeout:
    """A model's timeout as a user writes it: a duration, or ``"default"`` for :data:`USE_GLOBAL`."""
    if value is USE_GLOBAL or (isinstance(value, str) and value.strip().lower() == USE_GLOBAL_WORD):
        return USE_GLOBAL
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise DurationError(f'{exc}; or "{USE_GLOBAL_WORD}" for the global timeout') from None


def format_model_timeout(value: ModelTimeout) -> str:
    """The wire form of a model's timeout: ``"default"`` or a canonical duration."""
    return USE_GLOBAL_WORD if value is USE_GLOBAL else format_duration(value)


def _finite(number: int | float | str, original: object) -> float:
    """``number`` as a float, refusing what is not a finite number: NaN, infinities, and
    integers or digit strings too large for a float (``float()`` overflows or gives inf)."""
    try:
        seconds = float(number)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise DurationError(f"invalid duration {short_repr(original)}: not a finite number of seconds "
                            f"(expected {VALID_FORMS})")
    return seconds


def _from_seconds(seconds: float, original: object) -> Timeout:
    if math.isnan(seconds):
        raise _invalid(original)
    if seconds < 0 or seconds > MAX_SECONDS:
        return None
    if 0 < seconds < RESOLUTION:
        raise DurationError(f"invalid duration {short_repr(original)}: shorter than a millisecond "
                            f"(0 unloads at once; expected {VALID_FORMS})")
    return round(seconds, 3) + 0.0  # to the millisecond; "+ 0.0" makes -0.0 plain 0.0


def _invalid(value: object) -> DurationError:
    return DurationError(f"invalid duration {short_repr(value)}: expected {VALID_FORMS}")


def short_repr(value: object) -> str:
    """``repr(value)`` for an error message, cut short: a hostile value (a 400-digit number,
    a 60 KB string) must not fill the message."""
    try:
        text = repr(value)
    except ValueError:  # an int with more digits than str() may convert
        return "(an integer too large to show)"
    return text if len(text) <= _SHOWN_MAX else f"{text[:_SHOWN_MAX]}... ({len(text)} characters)"


def format_duration(timeout: Timeout) -> str:
    """Writes a duration in its canonical short form: ``"1h30m"``, ``"90s"`` -> ``"1m30s"``,
    ``"1.25s"``, ``"never"``. It follows the parser's rules (rounded to the millisecond,
    negative or beyond ten years is never; DurationError for NaN, infinities and under a
    millisecond), and :func:`parse_duration` reads what it writes back as the same value."""
    seconds = None if timeout is None else parse_duration(timeout)
    if seconds is None:
        return "never"
    millis = round(seconds * 1000)  # exact: seconds is on the millisecond grid
    if millis == 0:
        return "0s"
    whole, fraction = divmod(millis, 1000)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if fraction:
        parts.append(f"{secs}." + f"{fraction:03d}".rstrip("0") + "s")
    elif secs:
        parts.append(f"{secs}s")
    return "".join(parts)


def format_countdown(seconds: float) -> str:
    """Time left as a clock reading for people: ``4:12``, ``1:02:03``."""
    total = max(0, math.ceil(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"
