"""Giving memory back when another program needs it (a game starting, an image tool).

:meth:`MemoryRelief.check` runs every second or two while models are loaded (and at once
when the kernel reports memory pressure; see :mod:`app.core.memory.pressure`). When a
device's free memory has fallen below ``free_memory_floor``, it unloads idle models that
hold memory there (:meth:`~app.core.memory.book.MemoryBook.held`: measured, else
estimated), least recently used first (never a busy one, never one whose timeout
is ``never``), waiting after each for the freed memory to show, until the floor is met
again or nothing idle is left. Each unload has reason ``memory_pressure``; when pressure
remains and nothing more can go, the first model that is kept gets one
``memory_pressure_kept`` event for the whole episode, so the user hears of it once.

A model unloaded for pressure is not loaded again into the same pressure: admission
checks the floor before every load.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from app.core.config.sizes import format_bytes
from app.core.memory.admission import evict_and_wait
from app.core.memory.book import MemoryBook
from app.core.memory.fit import device_label, under_floor
from app.core.models.lifecycle import UnloadReason
from app.core.models.model import ManagedModel

log = logging.getLogger(__name__)


class MemoryRelief:
    """The policy that frees memory under pressure; the manager owns one."""

    def __init__(self, models: Callable[[], Iterable[ManagedModel]], settings: Callable[[], Any],
                 memory: MemoryBook, emit: Callable[[ManagedModel, str], None]) -> None:
        self._models = models
        self._settings = settings
        self._memory = memory
        self._emit = emit
        self._told: set[str] = set()  # devices whose "cannot free" was already said this episode

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
