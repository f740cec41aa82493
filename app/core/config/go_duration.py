"""Durations as Ollama's API reads them: Go's ``time.ParseDuration``, and ``keep_alive``.

Clients of Ollama's API (``/api/chat``, ``/api/generate``, ``/api/embed``) send
``keep_alive`` as Ollama reads it (``api.Duration.UnmarshalJSON``): a JSON number is
seconds, a string is a Go duration (``"500ms"``, ``"1h30m"``, ``"30m1h"``, ``"-1m"``), and a
negative value keeps the model loaded. Siesta's own :func:`~app.core.config.durations.parse_duration`
is stricter about unit order and knows no ``ms``, so this module reads Ollama's forms and
hands back the same :data:`~app.core.config.durations.KeepAlive` values, which then go
through Siesta's usual per-request timeout rule.
"""

from __future__ import annotations

import math
import re

from app.core.config.durations import NOT_GIVEN, DurationError, KeepAlive, parse_duration, short_repr

# Go's unitMap, in nanoseconds: "µs" is U+00B5 (micro sign), "μs" U+03BC (Greek mu).
_UNIT_NS = {"ns": 1, "us": 1_000, "\u00b5s": 1_000, "\u03bcs": 1_000, "ms": 1_000_000,
            "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
# One number (digits, a point, digits; either side may be empty but not both) and its unit,
# which runs up to the next digit or point, as in Go's parser.
_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")
_LIMIT = 2**63  # Go's time.Duration is an int64 of nanoseconds: at most 2**63 - 1, at least -2**63
_MAX_NS = _LIMIT - 1
_BARE_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
GO_FORMS = 'a number with a unit ns, us, ms, s, m or h, such as "500ms", "5m" or "1h30m"'
KEEP_ALIVE_FORMS = f'a number of seconds, or a Go duration: {GO_FORMS}; negative keeps the model loaded'


def parse_go_duration(text: str) -> float:
    """Seconds in ``text`` by Go's ``time.ParseDuration`` grammar: an optional sign, then
    one or more decimal numbers each with a unit (``"1.5h"``, ``"1h30m"``, ``"30m1h"``,
    ``"-1m"``, ``"300ms"``), or ``"0"`` alone. Like Go, it counts whole nanoseconds
    (fractions below one are dropped) and refuses what passes Go's range (about 292 years).
    Raises DurationError, quoting the text, on anything else."""
    if not isinstance(text, str):
        raise DurationError(f"invalid Go duration {short_repr(text)}: expected a string ({GO_FORMS})")
    rest = text
    negative = False
    if rest[:1] in ("-", "+"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise _invalid(text)
    total = 0
    at = 0
    while at < len(rest):
        match = _PART.match(rest, at)
        assert match is not None  # the pattern matches the empty string
        whole, fraction, unit = match.groups()
        if not whole and not fraction:  # no digits at all: ".s", "s", "1h." with nothing after
            raise _invalid(text)
        if not unit:
            raise DurationError(f"invalid Go duration {short_repr(text)}: missing unit after the number "
                                f"(expected {GO_FORMS})")
        if unit not in _UNIT_NS:
            raise DurationError(f"invalid Go duration {short_repr(text)}: unknown unit {short_repr(unit)} "
                                f"(expected {GO_FORMS})")
        total += _part_ns(whole, fraction or "", _UNIT_NS[unit], text)
        if total > _LIMIT:
            raise _too_long(text)
        at = match.end()
    if not negative and total > _LIMIT - 1:  # Go allows -2**63 ns, one more than the positive limit
        raise _too_long(text)
    return (-total if negative else total) / 1e9


def _part_ns(whole: str, fraction: str, unit: int, text: str) -> int:
    """Nanoseconds of one number and its unit, computed as Go's ParseDuration does: the
    whole part as an integer (refused past 2**63), the fraction's first digits (those that
    fit an int64) scaled in float64 arithmetic and truncated."""
    value = 0
    for digit in whole:
        if value > _LIMIT // 10:
            raise _too_long(text)
        value = value * 10 + int(digit)
        if value > _LIMIT:
            raise _too_long(text)
    digits, scale, full = 0, 1.0, False
    for digit in fraction:
        if full or digits > _LIMIT // 10 or digits * 10 + int(digit) > _LIMIT:
            full = True  # Go ignores the digits that no longer fit
            continue
        digits = digits * 10 + int(digit)
        scale *= 10
    if value > _LIMIT // unit:
        raise _too_long(text)
    value *= unit
    if digits:
        value += int(float(digits) * (float(unit) / scale))
        if value > _LIMIT:
            raise _too_long(text)
    return value


def ollama_keep_alive(value: object) -> KeepAlive:
    """A request's ``keep_alive`` read as Ollama reads it, as the value Siesta's own
    ``keep_alive`` would give: ``None`` (absent) is :data:`NOT_GIVEN`; a number is seconds;
    a string is a Go duration, or a bare number of seconds (as Ollama's ``OLLAMA_KEEP_ALIVE``
    reads it); anything negative is ``None`` (never unload); ``0`` unloads when the request
    ends. Booleans, NaN, infinities, numbers past Go's range, and durations above 0 but under
    a millisecond (Siesta keeps durations to the millisecond) raise DurationError naming
    ``keep_alive``."""
    if value is None:
        return NOT_GIVEN
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _keep_alive_error(value, "not a number or a string")
    if isinstance(value, str):
        text = value.strip()
        try:
            seconds = parse_go_duration(text)
        except DurationError as exc:
            if not _BARE_NUMBER.fullmatch(text):
                raise DurationError(f"keep_alive: {exc}; or a number of seconds") from None
            if len(text) > 40:  # more digits than any duration has: past Go's range, or noise
                raise _keep_alive_error(value, "not a number of seconds Go can hold") from None
            seconds = _seconds_of_number(float(text), value)
    else:
        seconds = _seconds_of_number(value, value)
    if seconds < 0:
        return None
    try:
        return parse_duration(seconds)
    except DurationError:
        raise _keep_alive_error(value, "shorter than a millisecond (0 unloads when the request ends)") from None


def _seconds_of_number(number: int | float, original: object) -> float:
    """``number`` seconds as a float, refusing NaN, infinities and what passes Go's range."""
    try:
        seconds = float(number)
    except OverflowError:
        seconds = math.inf
    if math.isnan(seconds) or math.isinf(seconds):
        raise _keep_alive_error(original, "not a finite number of seconds")
    if seconds * 1e9 > _MAX_NS:  # any negative number is "never", however large
        raise _keep_alive_error(original, "longer than Go's limit of about 292 years (negative keeps it loaded)")
    return seconds


def _keep_alive_error(value: object, why: str) -> DurationError:
    return DurationError(f"invalid keep_alive {short_repr(value)}: {why}; expected {KEEP_ALIVE_FORMS}")


def _too_long(text: str) -> DurationError:
    return DurationError(f"invalid Go duration {short_repr(text)}: longer than Go's limit of about 292 years")


def _invalid(text: str) -> DurationError:
    return DurationError(f"invalid Go duration {short_repr(text)}: expected {GO_FORMS}")
