"""The pressure-relief policy before issue 27, kept for the benchmark only (the baseline of
``python -m bench --only relief``; nothing in the app uses it).

A copy of ``app/core/memory/relief.py`` and ``admission.evict_and_wait`` as they were at the
commit before issue 27 (``git show b2fbe20:app/core/memory/relief.py``): every
:data:`POLL` seconds (the watch's fixed interval then), when a device's free memory is below
``free_memory_floor``, unload the least recently used idle model that holds memory there
(never a busy one, never one whose timeout is ``never``), one at a time, and after each wait
(up to :data:`FREED_WAIT` s, reading every :data:`FREED_POLL` s) until :data:`FREED_SHARE` of
what it held shows as free on the device; then read the device again and go on while it is
still short. Same ``check()`` and ``poll_interval`` as
:class:`app.core.memory.relief.MemoryRelief`, so :mod:`bench.relief_figures` swaps it into an
in-process manager.

One difference from the old code it cannot avoid: the unload itself is today's
(``ManagedModel.unload``), so a victim gets ``PRESSURE_GRACE`` (0.5 s) rather than
``stop_timeout`` before SIGKILL; the benchmark's servers exit on SIGTERM at once, so this
changes nothing measured. The ``memory_given_back`` event did not exist then and is not sent.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from app.core.config.sizes import format_bytes
from app.core.memory.book import MemoryBook
from app.core.memory.fit import DeviceState, device_label, under_floor
from app.core.models.lifecycle import UnloadReason
from app.core.models.model import ManagedModel

log = logging.getLogger(__name__)

POLL = 1.5  # s between looks (PressureWatch's fixed interval before issue 27)
FREED_WAIT = 5.0  # seconds to wait for an evicted model's memory to show as free
FREED_SHARE = 0.75  # ... until this share of what it used is back (drivers report it late)
FREED_POLL = 0.25  # s between readings while waiting


class LruRelief:
    """The old policy: least recently used first, one at a time, waiting for each to show."""

    def __init__(self, models: Callable[[], Iterable[ManagedModel]], settings: Callable[[], Any],
                 memory: MemoryBook, emit: Callable[..., None]) -> None:
        self._models = models
        self._settings = settings
        self._memory = memory
        self._emit = emit
        self._told: set[str] = set()  # devices whose "cannot free" was already said this episode
        self.poll_interval = POLL

    async def check(self) -> None:
        """One look at every device; frees memory where it is below the floor."""
        floor = getattr(self._settings(), "free_memory_floor", None)
        devices = await self._memory.device_states()
        missing = under_floor(devices, floor)
        self._told &= set(missing)  # an episode ends when its device is above the floor again
        for device in sorted(missing):
            while device in missing:
                idle = [m for m in self._models()
                        if m.is_idle and not m.keeps_loaded and self._memory.held(m, device).bytes > 0]
                if not idle:
                    self._cannot_free(device, missing[device])
                    break
                victim = min(idle, key=lambda m: m.last_used)
                held = self._memory.held(victim, device)
                log.info("memory pressure on %s (%s short of the floor): unloading %s, which holds %s (%s)",
                         device_label(device), format_bytes(missing[device]), victim.name,
                         format_bytes(held.bytes), held.source)
                await evict_and_wait(victim, UnloadReason.MEMORY_PRESSURE, self._memory, device)
                devices = await self._memory.device_states()
                missing = under_floor(devices, floor)

    def _cannot_free(self, device: str, short: int) -> None:
        if device in self._told:
            return
        self._told.add(device)
        kept = [m for m in self._models() if self._memory.held(m, device).bytes > 0]
        log.warning("memory pressure on %s (%s short of the floor) and no idle model left to unload there%s",
                    device_label(device), format_bytes(short),
                    f" (kept: {', '.join(m.name for m in kept)})" if kept else "")
        if kept:
            self._emit(min(kept, key=lambda m: m.last_used), "memory_pressure_kept")


async def evict_and_wait(victim: ManagedModel, reason: UnloadReason, memory: MemoryBook, device: str | None) -> None:
    """Unloads ``victim``; when it held memory on ``device`` (:meth:`MemoryBook.held`: measured,
    else estimated), waits (up to :data:`FREED_WAIT` seconds) until most of it shows as free
    again, since drivers report freed memory late."""
    held = 0
    before = None
    if device is not None:
        held = memory.held(victim, device).bytes
        before = (await memory.device_states()).get(device, DeviceState(None, None)).free
    await victim.unload(reason)
    if not held or before is None:
        return
    target = before + math.floor(held * FREED_SHARE)
    deadline = time.monotonic() + FREED_WAIT
    while time.monotonic() < deadline:
        free = (await memory.device_states()).get(device, DeviceState(None, None)).free
        if free is None or free >= target:
            return
        await asyncio.sleep(FREED_POLL)
    log.info("%s: the memory %s held on %s did not show as free within %g s", victim.name, held, device, FREED_WAIT)
