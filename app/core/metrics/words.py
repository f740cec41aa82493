"""Memory given back in words, the same in ``siesta ps`` and the tray app: byte-seconds as
byte-hours (``"41.0 GB·h"``) and the line ``"gave back 41.0 GB·h today, 310.0 GB·h since
Tuesday"``. Pure functions of ``GET /api/v1/models``' ``given_back`` summary."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from app.core.config.sizes import format_bytes


def byte_hours(byte_seconds: float) -> str:
    """Byte-seconds as ``"41.0 GB·h"`` (``"0 B·h"`` for none)."""
    return (format_bytes(byte_seconds / 3600) or "0 B") + "·h"


def since_words(since: float, now: float) -> str:
    """``"since 09:12"`` (today), ``"since Tuesday"`` (this week), ``"since 3 March 2025"``."""
    start = dt.datetime.fromtimestamp(since)
    today = dt.datetime.fromtimestamp(now).date()
    if start.date() == today:
        return f"since {start:%H:%M}"
    if (today - start.date()).days < 7:
        return f"since {start:%A}"
    return f"since {start.day} {start:%B %Y}"


def given_back_line(summary: Any, now: float) -> str:
    """``"gave back 41.0 GB·h today, 310.0 GB·h since Tuesday"``: what idle and memory-pressure
    unloads gave back; ``""`` while nothing was."""
    if not isinstance(summary, Mapping) or not summary.get("total") or summary.get("since") is None:
        return ""
    today = byte_hours(summary.get("today") or 0)
    return f"gave back {today} today, {byte_hours(summary['total'])} {since_words(summary['since'], now)}"
