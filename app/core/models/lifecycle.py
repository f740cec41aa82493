"""The lifecycle's vocabulary: a model's states, the steps between them, the table of
transitions (:data:`TRANSITIONS`), the reasons for an unload, and the error a model that
cannot serve raises. :class:`~app.core.models.model.ManagedModel` moves through this table and
nowhere else; the README's "How models live and die" is drawn from it.
"""

from __future__ import annotations

import enum
from collections import deque

from app.core.config.redact import redact_text

CRASH_LOOP_COUNT = 3
CRASH_LOOP_WINDOW = 300.0
CRASH_BACKOFF_MAX = 1.0
"""The longest wait before a request reloads a crashed model, and the only one: before the
try that follows the second crash in the window (see :class:`CrashRecord`)."""


class ModelState(str, enum.Enum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    READY = "ready"
    UNLOADING = "unloading"
    FAILED = "failed"


class Step(str, enum.Enum):
    """What moves a model from one state to another."""

    LOAD = "load"  # a request, a manual load or a preload starts the server
    LOADED = "loaded"  # the server answered its health check
    LOAD_FAILED = "load_failed"  # the server could not start, exited, or never became healthy
    LOAD_CANCELLED = "load_cancelled"  # every waiter left, a manual unload, or shutdown
    UNLOAD = "unload"  # idle deadline, manual, eviction, group, removal, shutdown
    STOPPED = "stopped"  # the server has exited after an unload
    CRASHED = "crashed"  # the server exited by itself (while ready, or during an unload's drain)
    DISMISS = "dismiss"  # a failed model is unloaded by hand or removed: back to unloaded


S = ModelState
TRANSITIONS: dict[ModelState, dict[Step, ModelState]] = {
    S.UNLOADED: {Step.LOAD: S.LOADING},
    S.LOADING: {Step.LOADED: S.READY, Step.LOAD_FAILED: S.FAILED, Step.LOAD_CANCELLED: S.UNLOADED},
    S.READY: {Step.UNLOAD: S.UNLOADING, Step.CRASHED: S.FAILED},
    S.UNLOADING: {Step.STOPPED: S.UNLOADED, Step.CRASHED: S.FAILED},
    S.FAILED: {Step.LOAD: S.LOADING, Step.DISMISS: S.UNLOADED},
}
"""Every state a model can be in and the steps that leave it. ``loading`` and ``unloading``
are left only by the task that owns them (see the module docstring)."""

PASSING_STATES = (S.LOADING, S.UNLOADING)


class UnloadReason(str, enum.Enum):
    IDLE = "idle"
    MANUAL = "manual"
    EVICTED = "evicted"
    GROUP = "group"
    CRASHED = "crashed"
    REMOVED = "removed"
    SHUTDOWN = "shutdown"
    MEMORY_PRESSURE = "memory_pressure"  # another program needed the memory


DRAINING_REASONS = (UnloadReason.MANUAL, UnloadReason.GROUP, UnloadReason.SHUTDOWN, UnloadReason.REMOVED)
"""Unloads that let requests in flight finish (bounded by ``stop_timeout``) before stopping."""

PRESSURE_GRACE = 0.5
"""Seconds an idle model unloaded for memory pressure gets to exit before it is killed (it has
no requests to drain, and the memory is wanted now), whatever ``stop_timeout`` says."""


class ModelUnavailable(Exception):
    """A model that cannot serve now; the front door answers 503 with ``retry_after``, the
    message and the log tail, any secret in them replaced (a recipe's ``--api-key``)."""

    def __init__(self, message: str, *, log_tail: str = "", retry_after: int = 5, code: str = "model_unavailable") -> None:
        super().__init__(redact_text(message))
        self.log_tail = redact_text(log_tail)
        self.retry_after = retry_after
        self.code = code


class CrashRecord:
    """A model's recent crashes: the crash-loop budget (:data:`CRASH_LOOP_COUNT` crashes
    within :data:`CRASH_LOOP_WINDOW` seconds) and the back-off before a request reloads it.

    After the first crash a request reloads the model at once (one crash may be bad luck);
    after the second in the window it waits :data:`CRASH_BACKOFF_MAX` (1 s) first; the
    third is a crash loop, and requests get 503 ``crash_loop`` until a manual load or a
    recipe edit. So the wait never grows past 1 s, on purpose: a model that crashed three
    times in five minutes is broken, and what its user wants is to be told so at once, not
    to have each request held 2, 4, ... 30 s for a reload (of gigabytes) that crashes again.
    """

    def __init__(self) -> None:
        self._times: deque[float] = deque(maxlen=CRASH_LOOP_COUNT)
        self.in_loop = False

    def __len__(self) -> int:
        return len(self._times)

    def record(self, now: float) -> None:
        self._times.append(now)
        if len(self._times) == CRASH_LOOP_COUNT and now - self._times[0] <= CRASH_LOOP_WINDOW:
            self.in_loop = True
            self._times.clear()

    def backoff(self, now: float) -> float:
        """The wait before a request reloads the model: :data:`CRASH_BACKOFF_MAX` after two
        crashes inside the window, else none."""
        recent = sum(1 for t in self._times if now - t <= CRASH_LOOP_WINDOW)
        return CRASH_BACKOFF_MAX if recent >= 2 else 0.0

    def clear(self) -> None:
        self._times.clear()
        self.in_loop = False
