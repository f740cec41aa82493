"""The fields Siesta takes of a remote's model: :data:`MODEL_FIELDS`, one table for every
kind of remote.

Each kind turns its engine's answer into Siesta's words (``name``, ``state``, ``memory``,
...); another Siesta already speaks them. :func:`check_model` then keeps only the fields
this table names and checks each value: its type, and for numbers that they are finite
and within bounds. A model with one bad field is left out whole (the caller says so
once, naming the remote and the field), so what the API, the CLI and the GUI show of a
remote is always valid JSON that they can format.

A new field a remote may send is one more row here; a field not in the table is dropped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from app.core.config.durations import MAX_SECONDS
from app.core.remotes.limits import MAX_NAME_CHARS

STATES = ("unloaded", "loading", "ready", "unloading", "failed")
"""A model's states in Siesta's words (what every kind's own states are turned into)."""

MAX_BYTES = 2**60
"""Largest memory figure taken (1 EiB): anything above it is not a measurement."""

LATEST_MOMENT = 2**33
"""Largest Unix time taken (the year 2242): a deadline is at most ten years ahead."""

MAX_COUNT = 1_000_000
"""Largest count of requests taken (in flight, waiting)."""

MAX_TEXT = 16 * 1024
"""Characters of a longer text field (an error, the tail of a log)."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class FieldRule:
    """What one field of a remote's model may hold. A field may be absent unless it is
    ``required``, and null (JSON's, Python's None) where it is ``nullable``."""

    expected: str
    """What a valid value is, in words, for the log line that leaves a model out."""
    valid: Callable[[Any], bool]
    required: bool = False
    nullable: bool = True


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def number(low: float, high: float, what: str) -> FieldRule:
    """A finite number from ``low`` to ``high`` (an int or a float)."""
    return FieldRule(f"{what} from {_num(low)} to {_num(high)}", lambda v: _is_number(v) and low <= v <= high)


def whole(low: int, high: int, what: str, *, nullable: bool = True) -> FieldRule:
    """A whole number from ``low`` to ``high``."""
    return FieldRule(f"a whole number from {low} to {high} ({what})",
                     lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high,
                     nullable=nullable)


def text(max_chars: int, *, nullable: bool = True) -> FieldRule:
    """Text of at most ``max_chars`` characters."""
    return FieldRule(f"text of at most {max_chars} characters",
                     lambda v: isinstance(v, str) and len(v) <= max_chars, nullable=nullable)


def one_of(values: tuple[str, ...], *, required: bool = False) -> FieldRule:
    return FieldRule(f"one of {', '.join(values)}", lambda v: isinstance(v, str) and v in values, required,
                     nullable=False)


def flag() -> FieldRule:
    return FieldRule("true or false", lambda v: isinstance(v, bool), nullable=False)


def per_device(rule: FieldRule) -> FieldRule:
    """A small table of device (``ram``, ``gpu0``, ...) to a value that ``rule`` accepts."""
    def valid(value: Any) -> bool:
        return (isinstance(value, dict) and len(value) <= 64
                and all(isinstance(k, str) and 0 < len(k) <= 32 and rule.valid(v) for k, v in value.items()))
    return FieldRule(f"a table of up to 64 devices, each {rule.expected}", valid)


def is_model_name(value: Any) -> bool:
    """A remote model's name as Siesta takes it: 1 to 256 characters, no control characters."""
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME_CHARS and not _CONTROL.search(value)


BYTES = whole(0, MAX_BYTES, "bytes")
SECONDS = number(0, MAX_SECONDS, "seconds")
MOMENT = number(0, LATEST_MOMENT, "a Unix time")

MODEL_FIELDS: Final[Mapping[str, FieldRule]] = MappingProxyType({
    "name": FieldRule(f"a model name of 1 to {MAX_NAME_CHARS} characters, none of them a control character",
                      is_model_name, required=True, nullable=False),
    "state": one_of(STATES, required=True),
    "stale": flag(),
    "in_flight": whole(0, MAX_COUNT, "requests", nullable=False),
    "waiting": whole(0, MAX_COUNT, "requests", nullable=False),
    "unload_timeout": SECONDS,  # null: never
    "recipe_unload_timeout": SECONDS,
    "timeout_source": text(32, nullable=False),
    "idle_since": MOMENT,
    "unload_at": MOMENT,
    "unloads_in": SECONDS,
    "loading_since": MOMENT,
    "last_load_seconds": SECONDS,
    "last_unload_reason": text(64),
    "unloaded_at": MOMENT,  # when it was last unloaded (shown for a memory-pressure unload)
    "pid": whole(0, 2**32, "a process id"),
    "error": text(MAX_TEXT),
    "log_tail": text(MAX_TEXT),
    "exit_code": whole(-2**31, 2**32, "an exit code"),
    "crash_loop": flag(),
    "backend": text(64),
    "group": text(MAX_NAME_CHARS),
    "preload": flag(),
    "memory": BYTES,
    "vram": BYTES,
    "memory_by_device": per_device(BYTES),
    "memory_estimate": BYTES,
    "memory_estimate_source": text(64),
    "given_back": number(0, MAX_BYTES * 2 * 86400.0, "byte-seconds"),  # what idle unloads freed today
})
"""Every field Siesta takes of a remote's model, in Siesta's words, with what it may hold."""


@dataclass(frozen=True)
class Rejected:
    """Why a remote's model was left out: the field, and what was wrong with it."""

    model: str
    field: str
    reason: str

    def __str__(self) -> str:
        return f"model {self.model} left out: field {self.field!r}: {self.reason}"


def check_model(entry: Mapping[str, Any]) -> dict[str, Any] | Rejected:
    """``entry``'s known fields, each checked against :data:`MODEL_FIELDS`; Rejected for the
    first field that fails (a required one missing, or a value it may not hold)."""
    kept: dict[str, Any] = {}
    for field, rule in MODEL_FIELDS.items():
        if field not in entry:
            if rule.required:
                return Rejected(_shown(entry.get("name")), field, f"missing; expected {rule.expected}")
            continue
        value = entry[field]
        if (value is None and not rule.nullable) or (value is not None and not rule.valid(value)):
            expected = f"{rule.expected}, or null" if rule.nullable else rule.expected
            return Rejected(_shown(entry.get("name")), field, f"expected {expected}, got {_shown(value)}")
        kept[field] = value
    return kept


def _shown(value: Any) -> str:
    """A value for a log line: its repr, cut short (a hostile one may be megabytes long)."""
    if isinstance(value, str) and len(value) > 80:
        return repr(value[:60]) + f"... ({len(value)} characters)"
    if isinstance(value, dict | list) and len(value) > 8:
        return f"a {'table' if isinstance(value, dict) else 'list'} of {len(value)} items"
    try:
        text = repr(value)
    except ValueError:  # an int too long to write out
        text = f"a {type(value).__name__}"
    return text if len(text) <= 80 else text[:77] + "..."
