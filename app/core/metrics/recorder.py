"""The manager's observer for figures and history: :class:`Recorder`, told of every event
of a local model by the manager (:meth:`Recorder.observe`, from its ``emit``).

From the events of local models it counts loads by result (``loaded`` ok, ``load_failed``
failed, ``load_cancelled`` cancelled) with how long each took (from its ``loading``), and
unloads by reason (the model's ``last_unload_reason``; ``crashed`` when it went to
``failed``); it follows each loaded model's idle time in memory, takes what it holds per
device (:meth:`MemoryBook.held`, through the manager) when it is measured and again at
``unloading``, while its server is still there, and writes a history line for each load and
unload (:mod:`app.core.metrics.history`). Requests are counted by the API layer into
:attr:`Recorder.requests`.

What it answers: the counters above (since this Siesta started), memory given back (this
run's per model and device, for a counter; today's and the whole history's, from the
history file), and a day of the history per model (:meth:`Recorder.day`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.core.metrics.counts import LOAD_BUCKETS, Histogram, RequestStats
from app.core.metrics.history import HistoryFile, Record
from app.core.metrics.timeline import GIVEN_BACK_REASONS, Timeline, day_bounds, local_day, split_by_day
from app.core.models.lifecycle import UnloadReason

log = logging.getLogger(__name__)

UNLOAD_REASONS = tuple(r.value for r in UnloadReason)
LOAD_ENDS = {"loaded": "ok", "load_failed": "failed", "load_cancelled": "cancelled"}
LOAD_RESULTS = tuple(LOAD_ENDS.values())


def held_figures(memory: Any, model: Any) -> dict[str, int]:
    """What ``model`` holds on each device now, by the memory book's one rule
    (``MemoryBook.held``: measured, else estimated); devices holding nothing are left out."""
    if model is None:
        return {}
    devices = {"ram", *memory.last_read}
    use = memory.use_of(model.name)
    if use is not None:
        devices.update(use.by_device(), use.gpu_read or {})
    estimate = memory.estimate_of(model.recipe)
    if estimate is not None:
        devices.update(estimate.by_device)
    out = {}
    for device in sorted(devices):
        amount = memory.held(model, device).bytes
        if amount > 0:
            out[device] = int(amount)
    return out


@dataclass
class _Loaded:
    """A model loaded now: since when, what it holds, and its idle time in memory."""

    since: float
    bytes: dict[str, int]
    idle_since: float | None = None
    idle_days: dict[str, float] = field(default_factory=dict)

    def set_idle(self, idle: bool, moment: float) -> None:
        if idle and self.idle_since is None:
            self.idle_since = moment
        elif not idle and self.idle_since is not None:
            self.idle_days = self.idle_until(moment)
            self.idle_since = None

    def idle_until(self, moment: float) -> dict[str, float]:
        days = dict(self.idle_days)
        if self.idle_since is not None:
            for day, seconds in split_by_day(self.idle_since, moment).items():
                days[day] = days.get(day, 0.0) + seconds
        return days


class Recorder:
    """Counts, history and memory given back; one per manager, subscribed to its events."""

    def __init__(self, history: HistoryFile, now: Callable[[], float],
                 held: Callable[[str], dict[str, int]] = lambda name: {}) -> None:
        self.history = history
        self._now = now
        self._held = held
        self.loads: dict[tuple[str, str], Histogram] = {}  # (model, result) -> durations
        self.unloads: Counter[tuple[str, str]] = Counter()  # (model, reason)
        self.requests = RequestStats()
        self.started_at: float | None = None
        self._loading: dict[str, float] = {}
        self._loaded: dict[str, _Loaded] = {}
        self._given_closed: Counter[tuple[str, str]] = Counter()  # (model, device) -> byte-seconds this run
        self._given_open: dict[str, tuple[float, dict[str, int]]] = {}
        self._old, self._current = history.read()
        self.timeline = Timeline([*self._old, *self._current])

    # ---- Siesta's start and stop ---------------------------------------------------------

    def start(self) -> None:
        self.started_at = self._now()
        self._write({"time": self.started_at, "event": "start"})

    def stop(self) -> None:
        moment = self._now()
        for name in list(self._given_open):
            self._end_given(name, moment)
        self._write({"time": moment, "event": "stop"})

    # ---- events ----------------------------------------------------------------------------

    def observe(self, model: Any, reason: str) -> None:
        """A local model (a ManagedModel) changed for ``reason``: what the manager tells every
        subscriber, read from the model itself (no snapshot is made for it)."""
        try:
            self._on(model.name, reason, self._now(), {
                "state": model.state.value, "in_flight": model.in_flight, "waiting": model.waiting,
                "last_unload_reason": model.last_unload_reason})
        except Exception:  # noqa: BLE001 - counting must never break the manager's events
            log.exception("counting the event %s of %s failed", reason, getattr(model, "name", "?"))

    def on_event(self, event: dict[str, Any]) -> None:
        """An event as subscribers get it (``{"reason", "model": snapshot, "time"}``); remote
        models' are ignored."""
        snapshot = event.get("model") or {}
        name = snapshot.get("name")
        if isinstance(name, str) and "remote" not in snapshot:
            self._on(name, str(event.get("reason")), float(event.get("time") or self._now()), snapshot)

    def _on(self, name: str, reason: str, moment: float, snapshot: dict[str, Any]) -> None:
        if reason == "loading":
            self._loading[name] = moment
            self._end_given(name, moment)
        elif reason in LOAD_ENDS:
            self._load_ended(name, LOAD_ENDS[reason], moment, snapshot)
            return
        live = self._loaded.get(name)
        if live is not None:
            if reason in ("unloading", "measured"):
                live.bytes = self._held(name) or live.bytes
            state = snapshot.get("state")
            if state in ("unloaded", "failed"):
                self._unloaded(name, live, "crashed" if state == "failed" else snapshot.get("last_unload_reason"),
                               str(reason), moment)
            else:
                live.set_idle(state in ("ready", "unloading") and not snapshot.get("in_flight")
                              and not snapshot.get("waiting"), moment)
        if reason == "removed" and name in self._given_open:
            self._end_given(name, moment)
            self._write({"time": moment, "event": "removed", "model": name})

    def _load_ended(self, name: str, result: str, moment: float, snapshot: dict[str, Any]) -> None:
        seconds = max(0.0, moment - self._loading.pop(name, moment))
        hist = self.loads.get((name, result))
        if hist is None:
            hist = self.loads[(name, result)] = Histogram(LOAD_BUCKETS)
        hist.observe(seconds)
        held = self._held(name) if result == "ok" else {}
        self._write({"time": moment, "event": "load", "model": name, "result": result,
                     "seconds": round(seconds, 3), "bytes": held})
        if result == "ok":
            live = self._loaded[name] = _Loaded(moment, held)
            live.set_idle(not snapshot.get("in_flight") and not snapshot.get("waiting"), moment)

    def _unloaded(self, name: str, live: _Loaded, why: Any, reason: str, moment: float) -> None:
        if why not in UNLOAD_REASONS:
            why = reason if reason in UNLOAD_REASONS else "manual"
        live.set_idle(False, moment)
        del self._loaded[name]
        self.unloads[(name, why)] += 1
        self._write({"time": moment, "event": "unload", "model": name, "reason": why, "bytes": live.bytes,
                     "idle": {day: round(s, 3) for day, s in live.idle_days.items()}})
        if why in GIVEN_BACK_REASONS and any(live.bytes.values()):
            self._given_open[name] = (moment, dict(live.bytes))

    def _end_given(self, name: str, moment: float) -> None:
        opened = self._given_open.pop(name, None)
        if opened is not None:
            start, held = opened
            for device, amount in held.items():
                self._given_closed[(name, device)] += amount * max(0.0, moment - start)

    def _write(self, record: Record) -> None:
        if self.history.append(record):  # the file rotated: what was current is the old one now
            self._old, self._current = self._current, [record]
            self.timeline = Timeline([*self._old, *self._current])
        else:
            self._current.append(record)
            self.timeline.add(record)

    # ---- what it answers ----------------------------------------------------------------

    def given_back_run(self) -> dict[tuple[str, str], float]:
        """Byte-seconds given back since this Siesta started, per (model, device): only
        grows (a counter), whatever the history file keeps."""
        out = dict(self._given_closed)
        now = self._now()
        for name, (start, held) in self._given_open.items():
            for device, amount in held.items():
                out[(name, device)] = out.get((name, device), 0.0) + amount * max(0.0, now - start)
        return out

    def given_back_of(self, name: str) -> float:
        """Byte-seconds ``name`` gave back today (local day), every device summed."""
        now = self._now()
        lo, _ = day_bounds(local_day(now))
        return sum(self.timeline.given_back(lo, now, now, name).values())

    def given_back_summary(self) -> dict[str, Any]:
        """``{"today", "total", "since", "by_device": {device: {"today", "total"}}}``: byte-seconds
        given back today (local day) and in the whole history, which begins at ``since``."""
        now = self._now()
        lo, _ = day_bounds(local_day(now))
        today = self.timeline.given_back(lo, now, now)
        total = self.timeline.given_back(float("-inf"), now, now)
        return {"today": sum(today.values()), "total": sum(total.values()), "since": self.timeline.first,
                "by_device": {d: {"today": today.get(d, 0.0), "total": total[d]} for d in sorted(total)}}

    def day(self, day: dt.date | None = None, names: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
        """One local day of the history (today by default), per model: ``loads``,
        ``loads_failed``, the shares ``loaded``, ``idle`` (in memory, a part of loaded) and
        ``unloaded``, and ``given_back`` (byte-seconds); see :meth:`Timeline.day`."""
        now = self._now()
        live_idle = {name: live.idle_until(now) for name, live in self._loaded.items()}
        return self.timeline.day(day or local_day(now), now, names, live_idle)
