"""A once-a-second tick for countdowns, running only while something shows them.

The tray menu, the models window and the settings dialog each own a :class:`SecondTicker`
that they start when they become visible and stop when they are hidden, so an idle
tray app runs no timer at all. Each tick is a single-shot timer re-armed just after the
next whole second of the soonest countdown, so ``4:12`` turns into ``4:11`` when it
should instead of up to a second late.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from PySide6.QtCore import QObject, Qt, QTimer

SLACK = 0.015  # tick this long after the displayed second changes


class SecondTicker(QObject):
    """Calls ``on_tick`` about once a second between :meth:`start` and :meth:`stop`."""

    def __init__(self, on_tick: Callable[[], None], deadlines: Callable[[], Iterable[float]],
                 now: Callable[[], float], parent: QObject | None = None) -> None:
        """``deadlines`` gives the wall-clock times being counted down to (may be empty)."""
        super().__init__(parent)
        self._on_tick = on_tick
        self._deadlines = deadlines
        self._now = now
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self._tick)

    @property
    def active(self) -> bool:
        return self._timer.isActive()

    def start(self) -> None:
        self._arm()

    def stop(self) -> None:
        self._timer.stop()

    def _tick(self) -> None:
        try:
            self._on_tick()
        finally:
            self._arm()

    def _arm(self) -> None:
        now = self._now()
        fractions = [(when - now) % 1.0 for when in self._deadlines() if when > now]
        delay = min(fractions) + SLACK if fractions else 1.0
        self._timer.start(max(1, round(delay * 1000)))
