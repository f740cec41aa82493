"""Wall-clock deadlines on the asyncio loop that survive a suspended laptop.

asyncio's timers use the monotonic clock, which stops while the machine sleeps: a model
due to unload at 14:32 on a laptop suspended at 14:30 and resumed at 16:00 would unload
at 16:02. A :class:`WallDeadline` sleeps in slices of at most ``max_slice`` seconds and
compares the wall clock each time, so it fires within one slice of resume.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Clock:
    """Wall time and wall-time deadlines; tests inject ``wall`` and a short ``max_slice``."""

    def __init__(self, wall: Callable[[], float] = time.time, max_slice: float = 2.0) -> None:
        self.wall = wall
        self.max_slice = max_slice

    def now(self) -> float:
        return self.wall()

    def call_at(self, when: float, callback: Callable[[], None]) -> "WallDeadline":
        """Runs ``callback`` on the running loop once the wall clock reaches ``when``."""
        return WallDeadline(self, when, callback)


class WallDeadline:
    """One pending wall-clock callback; :meth:`cancel` makes sure it never runs."""

    def __init__(self, clock: Clock, when: float, callback: Callable[[], None]) -> None:
        self._clock = clock
        self.when = when
        self._callback = callback
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.Handle | None = None
        self._arm()

    def _arm(self) -> None:
        remaining = self.when - self._clock.now()
        if remaining <= 0:
            self._handle = self._loop.call_soon(self._fire)
        else:
            self._handle = self._loop.call_later(min(remaining, self._clock.max_slice), self._check)

    def _check(self) -> None:
        if self._clock.now() >= self.when:
            self._fire()
        else:
            self._arm()

    def _fire(self) -> None:
        self._handle = None
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()

    @property
    def pending(self) -> bool:
        return self._callback is not None

    def cancel(self) -> None:
        self._callback = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
