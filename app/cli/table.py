"""The model table of ``siesta ps``, ``load``, ``unload`` and ``timeout``."""

from __future__ import annotations

import time
from typing import Any

from app.core.config.durations import format_countdown, format_duration
from app.core.config.sizes import format_bytes

__all__ = ["format_table", "size_cell"]


def size_cell(value: int | None) -> str:
    """A byte count for a table cell: ``-`` when unknown (or 0: no process to measure)."""
    return format_bytes(value) if value else "-"


def format_table(models: list[dict[str, Any]], now: float | None = None) -> str:
    now = time.time() if now is None else now
    rows = [("NAME", "STATE", "IN-FLIGHT", "RAM", "VRAM", "TIMEOUT (source)", "UNLOADS IN")]
    for m in models:
        timeout = format_duration(m["unload_timeout"]) if m.get("state") != "failed" or m.get("backend") else "-"
        if m.get("unload_at") is not None:
            left = format_countdown(m["unload_at"] - now)
        elif m["state"] == "ready" and m["unload_timeout"] is None:
            left = "never"
        elif m["state"] == "ready" and m["in_flight"]:
            left = "(busy)"
        else:
            left = "-"
        state = m["state"] + (" (stale)" if m.get("stale") else "")
        rows.append((m["name"], state, str(m["in_flight"]), size_cell(m.get("memory")), size_cell(m.get("vram")),
                     f"{timeout} ({m['timeout_source']})", left))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    errors = [f"  {m['name']}: {m['error']}" for m in models if m.get("error")]
    return "\n".join(lines + (["", "errors:"] + errors if errors else []))
