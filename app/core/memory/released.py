"""Memory given back by unloads, counted as free from the moment the processes have exited.

A victim's memory is freed when its process tree has exited; a GPU's free figure may show
it later (drivers report freed memory late), or never visibly (another program allocating
at the same time takes it at once). Judging by the figure made Siesta wait for memory that
had long been given back, then unload more. So :func:`unload_together` stops the victims at
once and together, and :class:`ReleasedMemory` counts their bytes as free on their GPUs
until the device shows that much more free than before the unloads, for at most
:data:`SHOWS_WITHIN` seconds. RAM gets no such credit: the kernel has freed a process's
memory by the time its exit is seen, and Siesta's RAM figure on Linux counts the per-CPU free
lists where such memory waits since Linux 6.7 (:func:`app.core.memory.readers.linux.per_cpu_free`);
a credit would only hide what another program takes meanwhile (measured by ``python -m bench
--only relief``: a credit on RAM kept the policy blind to a real shortfall for 5 s). Admission and pressure relief read devices through
:meth:`app.core.memory.book.MemoryBook.device_states`, which adds this credit, so a late
driver figure does not make either evict more.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from app.core.memory.fit import DeviceState
from app.core.models.lifecycle import UnloadReason
from app.core.models.model import ManagedModel

SHOWS_WITHIN = 5.0  # s: no driver seen here took longer to show freed memory
PROMPT_DEVICES = frozenset({"ram"})  # devices whose free figure shows an exit's memory at once


@dataclass(frozen=True)
class _Release:
    device: str
    bytes: int
    free_before: int  # the device's free bytes read before the unload
    at: float


class ReleasedMemory:
    """Bytes whose processes have exited, per device, until the device shows them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._releases: list[_Release] = []

    def record(self, device: str, amount: int, free_before: int | None) -> None:
        """``amount`` bytes on ``device`` were freed by a process that has exited; the device
        showed ``free_before`` free before (None: unknown, nothing is credited)."""
        if amount > 0 and free_before is not None and device not in PROMPT_DEVICES:
            self._releases.append(_Release(device, amount, free_before, self._clock()))

    def credit(self, device: str, free_now: int | None) -> int:
        """The released bytes on ``device`` that ``free_now`` does not show yet."""
        now = self._clock()
        self._releases = [r for r in self._releases if now - r.at < SHOWS_WITHIN]
        mine = [r for r in self._releases if r.device == device]
        if not mine or free_now is None:
            return 0
        shown = max(0, free_now - min(r.free_before for r in mine))
        return max(0, sum(r.bytes for r in mine) - shown)

    def adjust(self, states: Mapping[str, DeviceState]) -> dict[str, DeviceState]:
        """``states`` with each device's free figure plus its credit."""
        out: dict[str, DeviceState] = {}
        for device, state in states.items():
            extra = self.credit(device, state.free)
            out[device] = DeviceState(state.total, state.free + extra) if extra and state.free is not None else state
        return out


async def unload_together(victims: Sequence[ManagedModel], reason: UnloadReason,
                          held: Mapping[ManagedModel, Mapping[str, int]], released: ReleasedMemory,
                          before: Mapping[str, DeviceState]) -> None:
    """Unloads ``victims`` concurrently; as each one's process tree exits, what it ``held``
    (bytes per device) is recorded in ``released`` against the devices' free figures read
    ``before`` the unloads."""

    async def one(victim: ManagedModel) -> None:
        await victim.unload(reason)
        if victim.process is None:  # it has exited (a failed stop leaves it owned)
            for device, amount in held.get(victim, {}).items():
                released.record(device, amount, before.get(device, DeviceState(None, None)).free)

    await asyncio.gather(*(one(v) for v in victims))
