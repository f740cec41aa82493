"""Durations as users write them: ``90s``, ``5m``, ``1h30m``, ``2h``, bare seconds, ``never``.

One representation is used everywhere inside Siesta: ``float`` seconds, or ``None`` for
"never unload". ``0`` means "unload as soon as the model is idle"; any negative number
means never, as in Ollama's ``keep_alive``.
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


def parse_model_timeout(value: object) -> ModelTimeout:
    """A model's timeout as a user writes it: a duration, or ``"default"`` for :data:`USE_GLOBAL`."""
    if value is USE_GLOBAL or (isinstance(value, str) and value.strip().lower() == USE_GLOBAL_WORD):
        return USE_GLOBAL
    try:
        return parse_duration(value)
    except DurationError:
        raise DurationError(f"invalid timeout {value!r}: expected {VALID_FORMS}, "
                            f'or "{USE_GLOBAL_WORD}" for the global timeout') from None


def format_model_timeout(value: ModelTimeout) -> str:
    """The wire form of a model's timeout: ``"default"`` or a canonical duration."""
    return USE_GLOBAL_WORD if value is USE_GLOBAL else format_duration(value)


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
