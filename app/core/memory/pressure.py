"""The mechanism that gives memory back: when to look at free memory, and how to read it.

The policy (which idle models to unload) lives in the manager; this module only decides
*when* it runs and reads what it needs. No Qt; everything here runs on the event loop except
:func:`read_ram`, which blocks briefly (psutil's reading of RAM, tens of microseconds).

**When.** :class:`PressureWatch` calls the policy's ``check()``:

* every ``interval`` seconds while ``active()`` is true (models are loaded), by one
  ``loop.call_later`` timer: no thread, no busy loop. ``interval`` may be a function, asked
  before each tick (the policy polls faster while a device is near its floor). A tick that
  comes while the previous check still runs is skipped;
* at once when the kernel reports memory pressure: a PSI trigger (``/proc/pressure/memory``,
  Linux 5.2 and later) written as ``"some 150000 2000000"``, i.e. tasks stalled on memory for
  150 ms within a 2 s window. An unprivileged process may only use windows that are a
  multiple of 2 s. The kernel signals a trigger with ``POLLPRI``. asyncio's ``add_reader``
  waits for ``EPOLLIN`` only, so the PSI fd is registered in an ``epoll`` object of its own
  with ``EPOLLPRI``, and the loop watches that epoll object's fd (readable while it has
  events); the events are drained with ``epoll.poll(0)``. The loop's readiness check polls
  the PSI fd through the inner epoll, and a PSI fd's poll clears its notification, so that
  drain usually finds nothing: the reader being called *is* the notification;
* at once when the OS's own signal (:meth:`app.core.memory.readers.base.Reader.pressure_signal`)
  reports a WARNING or CRITICAL level: on macOS, ``kern.memorystatus_vm_pressure_level`` read
  when libdispatch's memory-pressure source fires (:mod:`app.core.memory.readers.macos`). Its
  handler runs on a libdispatch thread and hands the level to the loop with
  ``call_soon_threadsafe``, only while the watch is active.

A pressure event that comes while a check runs makes one more check run right after it (the
running one may have read free memory before the pressure began). Where PSI is missing or
refused (no such file, a kernel without PSI, no permission, an invalid trigger, not Linux),
or the OS's signal cannot be had, the watch polls alone; that is logged once, at debug level.

**Nothing while idle.** While ``active()`` is false there is no timer and no reader on the
loop, so an idle Siesta gets no wake-ups from here. The watch finds out that it has become
inactive at its next tick (or after a check); the owner calls :meth:`PressureWatch.wake`
when it may have become active again (a model was loaded). The PSI fd stays open (and its
trigger registered), and the OS's signal registered, until :meth:`PressureWatch.stop`;
pressure reported while inactive is discarded (the signal's handler drops it without
touching the loop).

**After an unload**, :func:`wait_until_freed` polls a device until the freed memory shows:
drivers (and the kernel, for RAM a dying process held) report it late.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import select
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from app.core.memory import readers
from app.core.memory.readers.base import PRESSURE_CRITICAL, PRESSURE_WARNING, DeviceFree, PressureSignal
from app.core.memory.readers.linux import meminfo

log = logging.getLogger(__name__)

PSI_MEMORY = Path("/proc/pressure/memory")
_OS_SIGNAL: Any = object()  # the default ``signal``: this OS's reader's
DEFAULT_TRIGGER = "some 150000 2000000"  # 150 ms of stall in a 2 s window (2 s: the unprivileged minimum)


def read_ram(root: Path | None = None) -> DeviceFree:
    """RAM's total and what other programs can still have, as this OS's reader gives it
    (:mod:`app.core.memory.readers`: psutil everywhere; on an Apple Silicon Mac the total is
    the share of unified memory Metal lets the GPU use); blocking, cheap (tens of us).

    With ``root``, MemTotal and MemAvailable from ``<root>/proc/meminfo`` (a Linux tree, for
    tests and ``siesta doctor``), where a missing file or field is ``None`` (nothing is
    guessed from ``MemFree``)."""
    if root is not None:
        return meminfo(Path(root))
    return readers.current().ram()


async def wait_until_freed(read: Callable[[], Awaitable[int | None]], expected_free: int, *,
                           timeout: float = 5.0, poll: float = 0.25) -> bool:
    """After an unload, polls ``read()`` (a device's free bytes, ``None`` when unknown) until it
    shows at least ``expected_free`` bytes free; returns whether it did within ``timeout``
    seconds. Reads at once, then every ``poll`` seconds; the last read is at the deadline.
    Exceptions from ``read`` propagate."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        free = await read()
        if free is not None and free >= expected_free:
            return True
        left = deadline - loop.time()
        if left <= 0:
            return False
        await asyncio.sleep(min(poll, left))


class PressureWatch:
    """Calls ``check()`` every ``interval`` seconds while ``active()`` is true, and at once when
    the kernel reports memory pressure (a /proc/pressure/memory trigger), never more than once at
    a time; does nothing at all (no timer, no thread) while ``active()`` is false: call
    :meth:`wake` when it may have become true (a model loaded).

    ``check`` exceptions are logged and never end the watch. ``active`` must be cheap (it is
    called on every tick) and is called on the loop. ``signal`` is the OS's own pressure
    notification (default: this OS's reader's, None on Linux and Windows; None: none)."""

    def __init__(self, check: Callable[[], Awaitable[None]], active: Callable[[], bool], *,
                 interval: float | Callable[[], float] = 1.5, psi_path: Path = PSI_MEMORY,
                 psi_trigger: str = DEFAULT_TRIGGER, signal: PressureSignal | None = _OS_SIGNAL) -> None:
        self._check = check
        self._active = active
        self._interval = interval
        self.psi_path = psi_path
        self.psi_trigger = psi_trigger
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0  # the loop time the timer is due at
        self._running: asyncio.Task[None] | None = None
        self._again = False  # pressure was reported while a check ran: one more after it
        self._psi_fd: int | None = None
        self._epoll: select.epoll | None = None  # type: ignore[name-defined]
        self._reader = False
        self._psi_tried = False
        self._stopped = False
        self.psi_unavailable: str | None = None  # why the kernel's notifications are not used
        self._signal_arg = signal
        self._signal: PressureSignal | None = None  # started
        self._signal_named: PressureSignal | None = None  # the one tried, started or not
        self._signal_tried = False
        self._signal_live = False  # the signal's handler hands levels to the loop (the watch is active)
        self.signal_unavailable: str | None = None  # why the OS's signal is not used (None: it is, or there is none)
        self.checks = 0  # checks started (a figure for tests and diagnostics)
        self.pressure_events = 0  # notifications received (PSI, or the OS's signal at WARNING or worse)

    # ---- the owner's side ---------------------------------------------------------------------

    def start(self) -> None:
        """Starts the watch on the running loop (polling at once if ``active()`` is already true)."""
        self._loop = asyncio.get_running_loop()
        self._stopped = False
        self.wake()

    def wake(self) -> None:
        """A model loaded: starts polling (and listening for pressure) if not already."""
        if self._loop is None or self._stopped or not self._is_active():
            return
        self._open_psi()
        if self._epoll is not None and not self._reader:
            self._drain()  # pressure reported while inactive is not news
            self._loop.add_reader(self._epoll.fileno(), self._on_pressure)
            self._reader = True
        self._open_signal()
        self._signal_live = self._signal is not None
        if self._timer is None:
            self._schedule(self.interval)

    def look_now(self) -> None:
        """Something that decides pressure changed (the floor): a check at once, or right after
        the running one, while the watch is active."""
        if self._loop is None or self._stopped or not self._is_active():
            return
        if self._running is None:
            self._run()
        else:
            self._again = True

    async def stop(self) -> None:
        """Cancels the timer and a running check, closes the PSI fd and stops the OS's signal.
        The watch can be started again."""
        self._stopped = True
        self._sleep()
        self._again = False
        self._close_fds()
        self._psi_tried = False
        self._stop_signal()
        running, self._running = self._running, None
        if running is not None and not running.done():
            running.cancel()
            try:
                await running
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the caller itself is being cancelled

    @property
    def interval(self) -> float:
        """Seconds until the next tick, as ``interval`` gives it now."""
        if callable(self._interval):
            try:
                return float(self._interval())
            except Exception:  # noqa: BLE001 - a broken policy must not end the watch
                log.exception("memory pressure watch: interval() failed; polling every 1.5 s")
                return 1.5
        return self._interval

    @property
    def polling(self) -> bool:
        """True while the watch has a timer on the loop (it is active)."""
        return self._timer is not None

    @property
    def psi_registered(self) -> bool:
        """True while a PSI trigger is registered and its epoll fd is open."""
        return self._epoll is not None

    @property
    def listening(self) -> bool:
        """True while the loop watches the PSI epoll fd (the watch is active and PSI is available)."""
        return self._reader

    @property
    def signal_registered(self) -> bool:
        """True while the OS's pressure signal is registered (from the first wake until stop)."""
        return self._signal is not None

    @property
    def signal_name(self) -> str | None:
        """The OS's pressure signal, in words (None: there is none here)."""
        signal = self._signal or self._signal_named or (None if self._signal_arg is _OS_SIGNAL else self._signal_arg)
        return signal.name if signal is not None else None

    # ---- inside ----------------------------------------------------------------------------------

    def _is_active(self) -> bool:
        try:
            return bool(self._active())
        except Exception:  # noqa: BLE001 - a broken predicate must not end the watch
            log.exception("memory pressure watch: active() failed; treating as active")
            return True

    def _sleep(self) -> None:
        """No timer and no reader: an inactive watch causes no wake-ups."""
        self._signal_live = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._reader:
            assert self._loop is not None and self._epoll is not None
            self._loop.remove_reader(self._epoll.fileno())
            self._reader = False

    def _tick(self) -> None:
        self._timer = None
        if self._stopped:
            return
        if not self._is_active():
            self._sleep()
            return
        assert self._loop is not None
        self._schedule(self.interval)
        if self._running is None:
            self._run()
        # else: the previous check still runs; this tick is skipped

    def _on_pressure(self) -> None:
        # The loop's own epoll finds this epoll fd readable by polling the PSI fd through it, and
        # that poll consumes the kernel's notification (the trigger's event flag is cleared when
        # read), so the drain below usually finds nothing: being called is the notification.
        events = self._drain()
        if any(mask & (select.EPOLLERR | select.EPOLLHUP) for _fd, mask in events):
            # the trigger is gone (its cgroup was removed): poll alone from now on
            self._close_psi("the kernel closed the trigger")
            return
        self._pressure()

    def _on_signal(self, level: int) -> None:
        """On the loop: the OS's signal gave a level; WARNING or CRITICAL is pressure."""
        if level in (PRESSURE_WARNING, PRESSURE_CRITICAL):
            self._pressure()

    def _pressure(self) -> None:
        """Memory pressure was reported: a check at once (or right after the running one)."""
        self.pressure_events += 1
        if self._stopped:
            return
        if not self._is_active():
            self._sleep()
            return
        if self._running is None:
            self._run()
        else:
            self._again = True

    def _run(self) -> None:
        assert self._loop is not None
        self.checks += 1
        self._running = self._loop.create_task(self._guarded_check(), name="siesta-memory-check")

    async def _guarded_check(self) -> None:
        try:
            await self._check()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a failed check is reported; the watch goes on
            log.exception("memory pressure check failed")
        finally:
            if self._running is asyncio.current_task():
                self._running = None
        if self._stopped:
            return
        if not self._is_active():
            self._again = False
            self._sleep()
        elif self._again:
            self._again = False
            self._run()
        elif self._timer is not None and callable(self._interval):
            # the check may have asked to look again sooner than the tick already set
            assert self._loop is not None
            delay = self.interval
            if self._loop.time() + delay < self._due:
                self._timer.cancel()
                self._schedule(delay)

    def _schedule(self, delay: float) -> None:
        """The next tick in ``delay`` seconds (qasync's handles do not tell when they are due)."""
        assert self._loop is not None
        self._due = self._loop.time() + delay
        self._timer = self._loop.call_later(delay, self._tick)

    def _drain(self) -> list[tuple[int, int]]:
        if self._epoll is None:
            return []
        try:
            return self._epoll.poll(0)
        except OSError:
            return []

    def _open_psi(self) -> None:
        """Registers the PSI trigger once; on any refusal the watch polls alone (logged once)."""
        if self._psi_tried:
            return
        self._psi_tried = True
        if not hasattr(select, "epoll"):
            self._psi_fallback("no epoll on this platform")
            return
        fd = None
        try:
            fd = os.open(self.psi_path, os.O_RDWR | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
            os.write(fd, self.psi_trigger.encode("ascii") + b"\0")
            epoll = select.epoll()
            try:
                epoll.register(fd, select.EPOLLPRI)
            except OSError:
                epoll.close()
                raise
        except OSError as exc:
            if fd is not None:
                os.close(fd)
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            self._psi_fallback(f"{self.psi_path}: {name} ({exc.strerror})")
            return
        self._psi_fd, self._epoll = fd, epoll
        self.psi_unavailable = None
        log.debug("memory pressure watch: PSI trigger %r registered on %s", self.psi_trigger, self.psi_path)

    def _open_signal(self) -> None:
        """Registers the OS's pressure signal once; on a refusal the watch polls alone (logged once)."""
        if self._signal_tried:
            return
        self._signal_tried = True
        signal = readers.current().pressure_signal() if self._signal_arg is _OS_SIGNAL else self._signal_arg
        if signal is None:
            return
        self._signal_named = signal
        try:
            signal.start(self._signal_fired)
        except OSError as exc:
            self.signal_unavailable = str(exc)
            log.debug("memory pressure watch: no %s (%s); polling every %.1f s", signal.name, exc, self.interval)
            return
        self._signal = signal
        self.signal_unavailable = None
        log.debug("memory pressure watch: %s registered", signal.name)

    def _signal_fired(self, level: int) -> None:
        """On the signal's own thread: hands the level to the loop while the watch is active."""
        loop = self._loop
        if not self._signal_live or loop is None:
            return  # inactive: not news, and no wake-up
        try:
            loop.call_soon_threadsafe(self._on_signal, level)
        except RuntimeError:
            pass  # the loop is closed: Siesta is stopping

    def _stop_signal(self) -> None:
        self._signal_live = False
        self._signal_tried = False
        signal, self._signal = self._signal, None
        if signal is not None:
            try:
                signal.stop()
            except Exception:  # noqa: BLE001 - stopping must not fail
                log.exception("memory pressure watch: stopping %s failed", signal.name)

    def _psi_fallback(self, why: str) -> None:
        self.psi_unavailable = why
        log.debug("memory pressure watch: no PSI notifications (%s); polling every %.1f s alone", why, self.interval)

    def _close_psi(self, why: str) -> None:
        if self._reader and self._loop is not None and self._epoll is not None:
            self._loop.remove_reader(self._epoll.fileno())
        self._reader = False
        self._close_fds()
        self._psi_fallback(why)

    def _close_fds(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
        if self._psi_fd is not None:
            os.close(self._psi_fd)
            self._psi_fd = None
