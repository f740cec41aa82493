"""What the history says (:mod:`app.core.metrics.history`'s records, in order): when each
model was loaded, what it gave back, and how its days went.

* **Loaded:** from a load that ended ``ok`` to the unload after it.
* **Given back:** an unload for ``idle`` or ``memory_pressure`` gives back the bytes the
  model held, per device, until its next load begins (the load's time less its seconds),
  its recipe is removed, or Siesta stops; one still given back runs to now. Byte-seconds.
* **Siesta's own end:** a ``stop`` ends whatever is open at its time; a ``start`` with
  something still open (Siesta was killed, no ``stop`` was written) ends it at the last
  record before it, the last moment Siesta is known to have run.
* **Days** are local days: ``YYYY-MM-DD`` keys, bounded by local midnights.

Pure: no file, no clock of its own (callers pass ``now``).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

GIVEN_BACK_REASONS = ("idle", "memory_pressure")
"""The unloads whose memory counts as given back: nobody asked for the model to go."""


def local_day(moment: float) -> dt.date:
    return dt.datetime.fromtimestamp(moment).date()


def day_bounds(day: dt.date) -> tuple[float, float]:
    """The local day's first moment and the next day's (Unix seconds)."""
    start = dt.datetime.combine(day, dt.time())
    return start.timestamp(), (start + dt.timedelta(days=1)).timestamp()


def split_by_day(start: float, end: float) -> dict[str, float]:
    """Seconds of ``[start, end)`` in each local day it touches (``YYYY-MM-DD`` keys)."""
    out: dict[str, float] = {}
    while end > start:
        day = local_day(start)
        _, next_start = day_bounds(day)
        if next_start <= start:  # a clock jump at midnight (never in practice): one second on
            next_start = start + 1.0
        piece = min(end, next_start) - start
        out[day.isoformat()] = out.get(day.isoformat(), 0.0) + piece
        start += piece
    return out


@dataclass
class Span:
    """``[start, end)``; ``end`` None while open. ``bytes``: per device (given-back spans)."""

    start: float
    end: float | None = None
    bytes: dict[str, int] = field(default_factory=dict)

    def overlap(self, lo: float, hi: float, now: float) -> float:
        end = self.end if self.end is not None else max(now, self.start)
        return max(0.0, min(end, hi) - max(self.start, lo))


class Timeline:
    """The history's records folded into spans, loads and idle seconds, one model at a time;
    :meth:`add` takes each record in the order it was written."""

    def __init__(self, records: Iterable[Mapping[str, Any]] = ()) -> None:
        self.first: float | None = None  # the earliest record's time: what the history covers
        self.last: float | None = None
        self.loaded: dict[str, list[Span]] = defaultdict(list)
        self.given: dict[str, list[Span]] = defaultdict(list)
        self.loads: dict[str, list[tuple[float, str]]] = defaultdict(list)
        self.idle: dict[str, Counter[str]] = defaultdict(Counter)
        self._open_loaded: dict[str, Span] = {}
        self._open_given: dict[str, Span] = {}
        for record in records:
            self.add(record)

    def add(self, record: Mapping[str, Any]) -> None:
        moment, event = record["time"], record["event"]
        self.first = moment if self.first is None else min(self.first, moment)
        if event == "stop":
            self._close_all(moment)
        elif event == "start":
            self._close_all(self.last if self.last is not None else moment)
        else:
            self._model_event(record["model"], moment, event, record)
        self.last = moment if self.last is None else max(self.last, moment)

    def _model_event(self, model: str, moment: float, event: str, record: Mapping[str, Any]) -> None:
        if event == "load":
            _close(self._open_given, model, moment - record.get("seconds", 0.0))
            self.loads[model].append((moment, record["result"]))
            if record["result"] == "ok":
                _close(self._open_loaded, model, moment)
                self._open_loaded[model] = span = Span(moment)
                self.loaded[model].append(span)
        elif event == "unload":
            _close(self._open_loaded, model, moment)
            self.idle[model].update(record.get("idle", {}))
            held = {d: b for d, b in record.get("bytes", {}).items() if b > 0}
            if record.get("reason") in GIVEN_BACK_REASONS and held:
                _close(self._open_given, model, moment)
                self._open_given[model] = span = Span(moment, bytes=held)
                self.given[model].append(span)
        elif event == "removed":
            _close(self._open_given, model, moment)

    def _close_all(self, moment: float) -> None:
        for model in list(self._open_loaded):
            _close(self._open_loaded, model, moment)
        for model in list(self._open_given):
            _close(self._open_given, model, moment)

    # ---- what it says -------------------------------------------------------------------

    def given_back(self, lo: float, hi: float, now: float, model: str | None = None) -> dict[str, float]:
        """Byte-seconds given back within ``[lo, hi)``, per device (one model's, or all)."""
        out: dict[str, float] = {}
        for name in ([model] if model is not None else list(self.given)):
            for span in self.given.get(name, ()):
                seconds = span.overlap(lo, hi, now)
                if seconds > 0:
                    for device, amount in span.bytes.items():
                        out[device] = out.get(device, 0.0) + amount * seconds
        return out

    def loaded_seconds(self, model: str, lo: float, hi: float, now: float) -> float:
        return sum(span.overlap(lo, hi, now) for span in self.loaded.get(model, ()))

    def models(self) -> set[str]:
        return {*self.loads, *self.loaded, *self.given, *self.idle}

    def day(self, day: dt.date, now: float, names: Iterable[str] = (),
            live_idle: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, Any]:
        """One local day, up to ``now`` if it is today: per model (``names`` and every model
        the history names) its loads, the share of the day's time so far it was loaded, idle
        in memory (a part of loaded) and unloaded, and the byte-seconds it gave back.
        ``live_idle``: idle seconds per day of models loaded now, not in the history yet."""
        lo, hi = day_bounds(day)
        until = min(hi, now)
        span = max(0.0, until - lo)
        key = day.isoformat()
        live_idle = live_idle or {}
        models = []
        for name in sorted({*names, *self.models()}):
            loads = [result for moment, result in self.loads.get(name, ()) if lo <= moment < until]
            loaded = self.loaded_seconds(name, lo, until, now)
            idle = min(loaded, self.idle.get(name, Counter())[key] + live_idle.get(name, {}).get(key, 0.0))
            given = self.given_back(lo, until, now, name)
            models.append({
                "name": name,
                "loads": loads.count("ok"),
                "loads_failed": loads.count("failed"),
                "loaded": _share(loaded, span),
                "idle": _share(idle, span),
                "unloaded": 1.0 - _share(loaded, span) if span > 0 else 0.0,
                "given_back": sum(given.values()),
            })
        return {"day": key, "from": lo, "to": until, "since": self.first, "models": models}


def _close(open_spans: dict[str, Span], model: str, moment: float) -> None:
    span = open_spans.pop(model, None)
    if span is not None:
        span.end = max(span.start, moment)


def _share(seconds: float, whole: float) -> float:
    return min(1.0, seconds / whole) if whole > 0 else 0.0
