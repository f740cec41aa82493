"""Admission: what must happen before a model's server may start.

In order: the other members of its group unload; then, while the load would go over
``max_loaded_models`` or would not fit in memory (see :mod:`app.core.memory.fit`), idle
models are evicted (least recently used first, those using the short device first;
never a busy one, never one whose timeout is ``never``). When nothing can go, the load
waits for the busy ones, bounded by ``load_timeout``: new requests for the model it waits
for queue behind it (first come, first served), so it happens as soon as the requests in
flight finish. A load that could never fit is refused at once. One admission runs at a
time.

What each loaded model holds on a device (its measurement, else its estimate) is
:meth:`app.core.memory.book.MemoryBook.held`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from app.core.memory.book import MemoryBook
from app.core.memory.fit import DeviceState, Shortfall, placed, shortfall
from app.core.models.lifecycle import ModelState, ModelUnavailable, UnloadReason
from app.core.models.model import ManagedModel

log = logging.getLogger(__name__)

FREED_WAIT = 5.0  # seconds to wait for an evicted model's memory to show as free
FREED_SHARE = 0.75  # ... until this share of what it used is back (drivers report it late)


class Admission:
    """Admits loads one at a time; the manager owns one."""

    def __init__(self, models: Callable[[], Iterable[ManagedModel]], settings: Callable[[], Any],
                 memory: MemoryBook, changed: Callable[[], asyncio.Event],
                 closing: Callable[[], bool] = lambda: False) -> None:
        self._closing = closing
        self._models = models
        self._settings = settings
        self._memory = memory
        self._changed = changed
        self._lock = asyncio.Lock()

    async def admit(self, model: ManagedModel) -> None:
        gates: dict[ManagedModel, asyncio.Event] = {}

        def hold(other: ManagedModel) -> None:
            if other not in gates:
                gates[other] = other.hold_new_requests()

        try:
            async with self._lock:
                group = model.recipe.group if model.recipe else None
                if group:
                    rivals = [m for m in self._models() if m is not model and m.occupies_slot
                              and m.recipe is not None and m.recipe.group == group]
                    for rival in rivals:
                        hold(rival)
                    await asyncio.gather(*(m.yield_slot(UnloadReason.GROUP) for m in rivals))
                await self._make_room(model, hold)
        finally:
            for other, gate in gates.items():
                other.open_gate(gate)

    async def _make_room(self, model: ManagedModel, hold: Callable[[ManagedModel], None]) -> None:
        deadline = time.monotonic() + self._settings().load_timeout
        estimate = await self._memory.estimate_now(model.recipe)
        while True:
            if self._closing():
                raise ModelUnavailable("Siesta is shutting down", code="shutting_down")
            limit = self._settings().max_loaded_models  # read again: a change applies to a waiting load
            loaded = [m for m in self._models() if m is not model and m.occupies_slot]
            over_limit = limit > 0 and len(loaded) >= limit
            short = await self._shortfall(model, estimate, loaded) if estimate is not None else None
            if short is not None and short.never:
                raise ModelUnavailable(f"cannot load {model.name!r}: {short.message}", code="insufficient_memory",
                                       retry_after=60)
            if not over_limit and short is None:
                return
            candidates = [m for m in loaded if m.is_idle and not m.keeps_loaded]
            if short is not None and not over_limit:
                candidates = [m for m in candidates if self._memory.held(m, short.device).bytes > 0]
            if candidates:
                victim = min(candidates, key=lambda m: m.last_used)
                await evict_and_wait(victim, UnloadReason.EVICTED, self._memory,
                                     short.device if short is not None else None)
                continue
            busy = [m for m in loaded if not m.keeps_loaded and m.state is not ModelState.UNLOADING]
            if short is not None:
                busy = [m for m in busy if self._memory.held(m, short.device).bytes > 0] or busy
            if busy:
                hold(min(busy, key=lambda m: m.last_used))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                names = ", ".join(sorted(m.name for m in loaded)) or "none"
                if short is not None:  # when both bind, the answer names memory
                    raise ModelUnavailable(f"cannot load {model.name!r} now: {short.message} (loaded: {names})",
                                           code="insufficient_memory", retry_after=10)
                raise ModelUnavailable(
                    f"cannot load {model.name!r}: max_loaded_models = {limit} and no loaded model "
                    f"can be unloaded now (busy or kept loaded: {names})",
                    code="no_capacity", retry_after=10,
                )
            try:
                # a model's memory also changes without an event; look again now and then
                async with asyncio.timeout(min(remaining, 2.0) if short else remaining):
                    await self._changed().wait()
            except TimeoutError:
                pass

    async def _shortfall(self, model: ManagedModel, estimate: Any, loaded: list[ManagedModel]) -> Shortfall | None:
        settings = self._settings()
        devices = await self._memory.device_states()
        need = placed(estimate, devices)
        used: dict[str, int] = {}  # held by models already measured: the devices' free memory shows it
        pending: dict[str, int] = {}  # what admitted loads not measured yet will still take
        for other in loaded:
            target = used if self._memory.use_of(other.name) is not None else pending
            for device in sorted(set(devices) | set(need)):
                amount = self._memory.held(other, device).bytes
                if amount:
                    target[device] = target.get(device, 0) + amount
        return shortfall(model.name, need, devices, used, pending,
                         getattr(settings, "memory_budget", None), getattr(settings, "free_memory_floor", None))

    async def evict_all_idle(self, model: ManagedModel) -> list[str]:
        """A load failed for lack of memory: unloads every other idle model (once), so the
        caller can try again."""
        async with self._lock:
            idle = [m for m in self._models() if m is not model and m.is_idle and not m.keeps_loaded]
            for victim in sorted(idle, key=lambda m: m.last_used):
                await evict_and_wait(victim, UnloadReason.EVICTED, self._memory, None)
            return [m.name for m in idle]


async def evict_and_wait(victim: ManagedModel, reason: UnloadReason, memory: MemoryBook, device: str | None) -> None:
    """Unloads ``victim``; when it held memory on ``device`` (:meth:`MemoryBook.held`: measured,
    else estimated), waits (up to :data:`FREED_WAIT` seconds) until most of it shows as free
    again, since drivers report freed memory late."""
    held = 0
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
        await asyncio.sleep(0.25)
    log.info("%s: the memory %s held on %s did not show as free within %g s", victim.name, held, device, FREED_WAIT)
