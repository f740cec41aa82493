"""The history file: one JSON line per load and unload (and per start and stop of Siesta),
``history.jsonl`` in the state dir, bounded.

A line is ``{"time": unix seconds, "event": ..., "model": name, ...}``:

* ``{"event": "load", "result": "ok" | "failed" | "cancelled", "seconds": how long it
  took, "bytes": {device: bytes}}`` when a load ends (its bytes: the estimate, before the
  first measurement);
* ``{"event": "unload", "reason": "idle" | "manual" | ... (an UnloadReason), "bytes":
  {device: bytes held just before the server went}, "idle": {"YYYY-MM-DD": seconds idle in
  memory that local day}}`` when a loaded model's server is gone;
* ``{"event": "removed"}``: its recipe was removed (what it gave back ends there);
* ``{"event": "start"}`` and ``{"event": "stop"}``, without a model: Siesta started, stopped.

Writing: each line is one ``write`` to a file opened with ``O_APPEND``, off the event loop in
the thread that writes Siesta's files (:data:`~app.core.config.atomic_write.FILES`), so an
earlier line is never touched; a line cut short by a crash gets a newline before the next
one, so only that line is lost. Past :data:`MAX_BYTES` the file becomes ``history.jsonl.1``
(replacing the one before) and a new one starts: at most twice that on disk.

Reading: a line that is not a JSON object with the fields its event needs is skipped.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from app.core.config.atomic_write import FILES

log = logging.getLogger(__name__)

MAX_BYTES = 1024 * 1024
"""The size at which the file is rotated (one old file is kept)."""

EVENTS = ("start", "stop", "load", "unload", "removed")
LOAD_RESULTS = ("ok", "failed", "cancelled")
MAX_LINE = 64 * 1024  # a longer line is no line Siesta wrote

Record = dict[str, Any]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _bytes_table(value: Any) -> dict[str, int] | None:
    if not isinstance(value, dict) or len(value) > 64:
        return None
    out: dict[str, int] = {}
    for device, amount in value.items():
        if not isinstance(device, str) or not device or len(device) > 32:
            return None
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            return None
        out[device] = amount
    return out


def _seconds_table(value: Any) -> dict[str, float] | None:
    if not isinstance(value, dict) or len(value) > 400:
        return None
    out: dict[str, float] = {}
    for day, seconds in value.items():
        if not isinstance(day, str) or len(day) != 10 or not _is_number(seconds) or seconds < 0:
            return None
        out[day] = float(seconds)
    return out


def parse_record(line: str | bytes) -> Record | None:
    """One line as a record with its fields checked; None for a line to skip."""
    if len(line) > MAX_LINE:
        return None
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("event") not in EVENTS or not _is_number(data.get("time")):
        return None
    event = data["event"]
    record: Record = {"time": float(data["time"]), "event": event}
    if event in ("start", "stop"):
        return record
    model = data.get("model")
    if not isinstance(model, str) or not model or len(model) > 256:
        return None
    record["model"] = model
    if event == "load":
        seconds = data.get("seconds", 0.0)
        if data.get("result") not in LOAD_RESULTS or not _is_number(seconds) or seconds < 0:
            return None
        record["result"], record["seconds"] = data["result"], float(seconds)
    if event == "unload":
        if not isinstance(data.get("reason"), str) or len(data["reason"]) > 64:
            return None
        record["reason"] = data["reason"]
        idle = _seconds_table(data.get("idle", {}))
        if idle is None:
            return None
        record["idle"] = idle
    if event in ("load", "unload"):
        held = _bytes_table(data.get("bytes", {}))
        if held is None:
            return None
        record["bytes"] = held
    return record


def encode(record: Record) -> bytes:
    """One record as the line written (compact JSON and a newline)."""
    return (json.dumps(record, separators=(",", ":"), sort_keys=True, allow_nan=False) + "\n").encode()


class HistoryFile:
    """The history file and the one old file kept beside it."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self.old_path = path.with_name(path.name + ".1")
        self.max_bytes = max_bytes
        self.size = 0  # the current file's size as this instance wrote it (kept on the loop)

    def read(self) -> tuple[list[Record], list[Record]]:
        """(the old file's records, the current file's), bad lines skipped; sets :attr:`size`."""
        old = list(self._read(self.old_path))
        try:
            self.size = self.path.stat().st_size
        except OSError:
            self.size = 0
        return old, list(self._read(self.path))

    def _read(self, path: Path) -> Iterable[Record]:
        try:
            with path.open("rb") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("cannot read the history file %s: %s", path, exc)
            return
        skipped = 0
        for line in lines:
            if not line.strip():
                continue
            record = parse_record(line)
            if record is None:
                skipped += 1
            else:
                yield record
        if skipped:
            log.info("%s: skipped %d line(s) that are not history records", path, skipped)

    def append(self, record: Record) -> bool:
        """Hands one line to the file writer; True when the file rotates first (the caller's
        copy of the old file is then what was the current one)."""
        line = encode(record)
        rotate = self.size > 0 and self.size + len(line) > self.max_bytes
        self.size = (0 if rotate else self.size) + len(line)
        FILES.submit(self._write, line, rotate)
        return rotate

    def _write(self, line: bytes, rotate: bool) -> None:
        """In the file writer's thread: rotates when asked, then appends ``line`` in one write."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if rotate:
                try:
                    os.replace(self.path, self.old_path)
                except FileNotFoundError:
                    pass
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
            try:
                if os.fstat(fd).st_size:
                    os.lseek(fd, -1, os.SEEK_END)
                    if os.read(fd, 1) != b"\n":
                        line = b"\n" + line  # the last line was cut short: keep this one whole
                os.write(fd, line)  # O_APPEND: at the end, whatever was read
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("cannot write the history file %s: %s", self.path, exc)

    async def flushed(self) -> None:
        """Waits until every line handed over is written."""
        await FILES.run(lambda: None)
