"""What the GUI says about the history: memory given back and how each model's day went, as
pure functions of what the core reports (no Qt; the tests check the exact words).

* Memory given back, from ``given_back_summary()`` (``GET /api/v1/models``' ``given_back``):
  ``"Gave back 41.0 GB·h today, 310.0 GB·h since Tuesday"``, the words ``siesta ps`` prints
  (:func:`given_back_line`), and the tray menu's one line for the day (:func:`given_back_today`).
* A model's day, from ``day()`` (``GET /api/v1/history?day=today``): ``"3×, 42% in memory"``
  for a table cell and ``"Today: loaded 3×, 42% of the day in memory (30% idle), 58% not loaded"``
  for its tooltip, with the memory it gave back today (a snapshot's ``given_back``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.core.metrics import words
from app.core.metrics.words import byte_hours

HISTORY_UNAVAILABLE = "The history is not available from this Siesta"


def given_back_line(summary: Any, now: float) -> str:
    """``"Gave back 41.0 GB·h today, 310.0 GB·h since Tuesday"``: the words of ``siesta ps``
    (:func:`app.core.metrics.words.given_back_line`), capitalised; ``""`` while nothing was."""
    line = words.given_back_line(summary, now)
    return line[:1].upper() + line[1:]


def given_back_today(summary: Any) -> str:
    """The tray menu's line: ``"Gave back 41.0 GB·h of memory today"``; ``""`` while nothing was today."""
    if not isinstance(summary, Mapping) or not summary.get("today"):
        return ""
    return f"Gave back {byte_hours(summary['today'])} of memory today"


def model_given_back(snapshot: Mapping[str, Any]) -> str:
    """``"gave back 2.1 GB·h today"`` (a snapshot's ``given_back``); ``""`` for none."""
    amount = snapshot.get("given_back")
    if not isinstance(amount, (int, float)) or amount <= 0:
        return ""
    return f"gave back {byte_hours(amount)} today"


def _percent(share: Any) -> str:
    """``"42%"``; ``"<1%"`` for a share above none that rounds to none."""
    if not isinstance(share, (int, float)) or share <= 0:
        return "0%"
    return f"{round(100 * share)}%" if share >= 0.005 else "<1%"


def _loads(day: Mapping[str, Any]) -> str:
    loads = day.get("loads") or 0
    failed = day.get("loads_failed") or 0
    words = f"{loads}×"
    if failed:
        words += f" ({failed} failed)"
    return words


def day_cell(day: Mapping[str, Any] | None) -> str:
    """A model's day in a table cell: ``"3×, 42% in memory"``, ``"not loaded"``; ``""`` unknown."""
    if not day:
        return ""
    if not day.get("loaded") and not day.get("loads") and not day.get("loads_failed"):
        return "not loaded"
    share = f"{_percent(day.get('loaded'))} in memory"
    return f"{_loads(day)}, {share}" if day.get("loads") or day.get("loads_failed") else share


def day_tooltip(day: Mapping[str, Any] | None, snapshot: Mapping[str, Any] | None = None) -> str:
    """The whole of a model's day: ``"Today: loaded 3×, 42% of the day in memory (30% idle),
    58% not loaded; gave back 2.1 GB·h today"``."""
    given = model_given_back(snapshot or {})
    if not day:
        return given[:1].upper() + given[1:]
    if not day.get("loaded") and not day.get("loads") and not day.get("loads_failed"):
        words = "Today: not loaded"
    else:
        loads = f"loaded {_loads(day)}, " if day.get("loads") or day.get("loads_failed") else ""
        words = (f"Today: {loads}{_percent(day.get('loaded'))} of the day in memory "
                 f"({_percent(day.get('idle'))} idle), {_percent(day.get('unloaded'))} not loaded")
    return words + (f"; {given}" if given else "")


def day_shares(day: Mapping[str, Any] | None) -> tuple[float, float]:
    """``(busy, idle)``: the shares of the day a model was in memory and busy, and idle there
    (for the bar under its cell); ``(0, 0)`` unknown."""
    if not day:
        return 0.0, 0.0
    loaded = float(day.get("loaded") or 0.0)
    idle = min(loaded, float(day.get("idle") or 0.0))
    return max(0.0, loaded - idle), idle


def days_by_model(history: Any) -> dict[str, dict[str, Any]]:
    """``GET /api/v1/history``'s answer (or ``day()``'s) as ``{name: that model's day}``."""
    models = history.get("models") if isinstance(history, Mapping) else None
    return {m["name"]: m for m in models or () if isinstance(m, Mapping) and isinstance(m.get("name"), str)}
