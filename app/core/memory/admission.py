"""Admission: what must happen before a model's server may start.

In order: the other members of its group unload; then, while the load would go over
``max_loaded_models`` or would not fit in memory (see :mod:`app.core.memory.fit`), the
cheapest set of idle models that makes room (:func:`app.core.memory.victims.choose`: by the
slots and the bytes missing on the short device; never a busy one, never one whose timeout
is ``never``) is unloaded at once and together; their memory counts as free as soon as their
processes have exited (:mod:`app.core.memory.released`). When nothing can go, the load
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
import time
from collections.abc import Callable, Iterable
from typing import Any

from app.core.memory.book import MemoryBook
from app.core.memory.candidates import as_candidates, load_rate, may_go
from app.core.memory.fit import Shortfall, placed, shortfall
from app.core.memory.released import unload_together
from app.core.memory.victims import choose
from app.core.models.lifecycle import ModelState, ModelUnavailable, UnloadReason
from app.core.models.model import ManagedModel

log = logging.getLogger(__name__)


class Admission:
    """Admits loads one at a time; the manager owns one."""

    def __init__(self, models: Callable[[], Iterable[ManagedModel]], settings: Callable[[], Any],
                 memory: MemoryBook, changed: Callable[[], asyncio.Event],
                 closing: Callable[[], bool] = lambda: False, now: Callable[[], float] = time.time) -> None:
        self._closing = closing
        self._now = now
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
            victims = self._victims(loaded, short, len(loaded) - limit + 1 if over_limit else 0)
            if victims:
                await self._evict(victims)
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

    def _victims(self, loaded: list[ManagedModel], short: Shortfall | None, slots: int) -> list[ManagedModel]:
        """The cheapest idle models whose going frees ``slots`` slots and the bytes ``short``
        misses (every idle one when no set does; they still help, and then busy ones are waited for)."""
        device = short.device if short is not None else None
        pool = as_candidates([m for m in loaded if may_go(m)], self._memory, device, self._now())
        if short is not None and slots <= 0:
            pool = {name: pair for name, pair in pool.items() if pair[1].bytes > 0}
        if not pool:
            return []
        rate = load_rate(loaded, self._memory, self._memory.last_read)
        choice = choose([c for _, c in pool.values()], need_bytes=short.missing if short is not None else 0,
                        need_count=max(0, slots), load_rate=rate)
        if choice.victims:
            log.info("making room: unloading %s (%s)", ", ".join(v.name for v in choice.victims), short.message if short else f"{slots} slot(s)")
        return [pool[v.name][0] for v in choice.victims]

    async def _evict(self, victims: list[ManagedModel]) -> None:
        """Unloads ``victims`` together; their bytes count as free once their processes exit."""
        devices = await self._memory.device_states()
        held = {m: {d: self._memory.held(m, d).bytes for d in devices} for m in victims}
        await unload_together(victims, UnloadReason.EVICTED, held, self._memory.released, self._memory.last_read)

    async def evict_all_idle(self, model: ManagedModel) -> list[str]:
        """A load failed for lack of memory: unloads every other idle model (once, together),
        so the caller can try again."""
        async with self._lock:
            idle = [m for m in self._models() if m is not model and may_go(m)]
            if idle:
                await self._evict(idle)
            return [m.name for m in idle]
