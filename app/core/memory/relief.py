"""Giving memory back when another program needs it (a game starting, an image tool).

:meth:`MemoryRelief.check` runs while models are loaded: every 1.5 s, every 0.25 s while a
device's free memory is within the largest idle model's size of ``free_memory_floor`` (so a
crossing is seen in time; :attr:`MemoryRelief.poll_interval`), and at once when the kernel
reports memory pressure (:mod:`app.core.memory.pressure`). When a device's free memory has
fallen below the floor (and is not still falling fast: then it looks once more, 0.25 s later,
so it chooses for the whole shortfall), it unloads, at once and together, the cheapest set of idle models
that covers the shortfall there (:func:`app.core.memory.victims.choose`: never a busy one,
never one whose timeout is ``never``). Victims get at most
:data:`~app.core.models.lifecycle.PRESSURE_GRACE` to exit before they are killed (they have no
requests to drain), and their memory counts as freed when their processes have exited, not
when the device's figure rises (:mod:`app.core.memory.released`): another program may still be
allocating. No fixed wait: the next look, 0.25 s later, sees what is still missing.

Each unload has reason ``memory_pressure``, and each round one ``memory_given_back`` event
whose ``detail`` names every model unloaded in the episode and the bytes each held (measured
where the device could be read), and why (``"RAM, 384 MB short of the floor: unloading big
(706 MB), covers the 384 MB shortfall; kept tiny: too small to matter"``), for one
notification per episode. When pressure remains and
nothing more can go, the first model that is kept gets one ``memory_pressure_kept`` event for
the whole episode. A model unloaded for pressure is not loaded again into the same pressure:
admission checks the floor before every load.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from app.core.config.sizes import format_bytes
from app.core.memory.book import MemoryBook
from app.core.memory.candidates import as_candidates, load_rate, may_go
from app.core.memory.fit import DeviceState, device_label, under_floor
from app.core.memory.released import unload_together
from app.core.memory.victims import Candidate, Choice, choose, reload_seconds
from app.core.models.lifecycle import UnloadReason
from app.core.models.model import ManagedModel

log = logging.getLogger(__name__)

SLOW_POLL = 1.5  # s between looks while every device is far from its floor
FAST_POLL = 0.25  # s between looks while a device is within the largest idle model's size of it
STILL_FALLING = 16 * 2**20  # bytes free memory must fall between looks to count as still falling

Emit = Callable[..., None]  # (model, reason, detail=None)


class MemoryRelief:
    """The policy that frees memory under pressure; the manager owns one."""

    def __init__(self, models: Callable[[], Iterable[ManagedModel]], settings: Callable[[], Any],
                 memory: MemoryBook, emit: Emit, now: Callable[[], float]) -> None:
        self._models = models
        self._settings = settings
        self._memory = memory
        self._emit = emit
        self._now = now
        self._told: set[str] = set()  # devices whose "cannot free" was already said this episode
        self._episode: dict[str, int] = {}  # model -> bytes, unloaded while some device stays short
        self._why: list[str] = []  # this round's choices in words, one per short device
        self._last_look: dict[str, tuple[float, int]] = {}  # device -> (time, free bytes) at the last look
        self._waited = False  # this episode already waited one look for a falling figure to settle
        self.poll_interval = SLOW_POLL

    async def check(self) -> None:
        """One look at every device; frees memory where it is below the floor."""
        floor = getattr(self._settings(), "free_memory_floor", None)
        devices = await self._memory.device_states()
        missing = under_floor(devices, floor)
        self._told &= set(missing)  # an episode ends when its device is above the floor again
        if not missing:
            self._episode.clear()
            self._waited = False
        now = self._now()
        falling = [d for d in missing if self._falling(d, devices[d].free, now)]
        self._last_look = {d: (now, s.free) for d, s in devices.items() if s.free is not None}
        if falling and not self._waited:
            # the other program is still allocating: one more look (FAST_POLL later) sees how
            # much it takes, instead of choosing for a shortfall that is still growing (chosen
            # now, a small victim goes, then a second one for the rest: measured by the bench)
            self._waited = True
            self.poll_interval = FAST_POLL
            return
        self.poll_interval = FAST_POLL if self._near_floor(devices, floor) else SLOW_POLL
        victims: dict[ManagedModel, dict[str, int]] = {}
        self._why = []
        for device in sorted(missing):
            chosen = self._choose(device, missing[device], victims)
            if chosen is None:
                continue
            for model, held in chosen.items():
                victims.setdefault(model, {})[device] = held
        if not victims:
            return
        # every device each victim holds memory on is freed by its exit, not only the short one
        for model, held in victims.items():
            for device in devices:
                held.setdefault(device, self._memory.held(model, device).bytes)
        await unload_together(list(victims), UnloadReason.MEMORY_PRESSURE, victims, self._memory.released,
                              self._memory.last_read)
        self._given_back(victims, missing)
        self.poll_interval = FAST_POLL  # look again soon: the other program may still be allocating

    def _falling(self, device: str, free: int | None, now: float) -> bool:
        """Whether ``device``'s free memory fell by more than :data:`STILL_FALLING` since a look
        at most two fast polls ago."""
        last = self._last_look.get(device)
        return (last is not None and free is not None and now - last[0] <= 2 * FAST_POLL + 0.05
                and last[1] - free > STILL_FALLING)

    def _choose(self, device: str, short: int, taken: Mapping[ManagedModel, Mapping[str, int]]
                ) -> dict[ManagedModel, int] | None:
        """The victims on ``device`` (besides those ``taken`` for other devices, whose bytes
        there count first), with their bytes there; None when none is needed or none can go."""
        short -= sum(self._memory.held(m, device).bytes for m in taken)
        if short <= 0:
            return None
        models = [m for m in self._models()]
        pool = {name: pair for name, pair in as_candidates(
            (m for m in models if may_go(m) and m not in taken), self._memory, device, self._now()).items()
            if pair[1].bytes > 0}
        if not pool:
            self._cannot_free(device, short)
            return None
        rate = load_rate(models, self._memory, self._memory.last_read)
        choice = choose([c for _, c in pool.values()], need_bytes=short, load_rate=rate)
        why = f"{device_label(device)}, {format_bytes(short)} short of the floor: {explain(choice, short, rate)}"
        self._why.append(why)
        log.info("memory pressure on %s", why)
        return {pool[v.name][0]: v.bytes for v in choice.victims}

    def _near_floor(self, devices: Mapping[str, DeviceState], floor: Any) -> bool:
        """Whether some device's free memory is within its largest idle model's size of the floor."""
        if floor is None:
            return False
        idle = [m for m in self._models() if may_go(m)]
        for device, state in devices.items():
            keep = floor.for_device(device, state.total)
            if keep is None or state.free is None:
                continue
            largest = max((self._memory.held(m, device).bytes for m in idle), default=0)
            if largest and state.free - keep < largest:
                return True
        return False

    def _given_back(self, victims: Mapping[ManagedModel, Mapping[str, int]], missing: Mapping[str, int]) -> None:
        """One ``memory_given_back`` event naming everything unloaded in this episode so far."""
        for model, held in victims.items():
            if model.process is None:
                self._episode[model.name] = sum(held.values())
        if not self._episode:
            return
        biggest = max(victims, key=lambda m: sum(victims[m].values()))
        detail = {"unloaded": [{"name": n, "bytes": b} for n, b in sorted(self._episode.items())],
                  "short": {device: amount for device, amount in sorted(missing.items())},
                  "why": list(self._why)}
        self._emit(biggest, "memory_given_back", detail=detail)

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


def explain(choice: Choice, short: int, rate: float | None) -> str:
    """The choice in words, for the log: ``"unloading big (706 MB), covers the 384 MB
    shortfall; kept tiny: too small to matter"``."""
    gone = ", ".join(f"{v.name} ({format_bytes(v.bytes)})" for v in choice.victims)
    covers = "covers" if choice.covers else "all that can go; does not cover"
    words = f"unloading {gone}, {covers} the {format_bytes(short)} shortfall"
    if choice.kept:
        words += "; kept " + ", ".join(f"{k.name}: {_why_kept(k, short, rate)}" for k in choice.kept)
    return words


def _why_kept(kept: Candidate, short: int, rate: float | None) -> str:
    if kept.bytes * 10 < short:
        return "too small to matter"
    return f"costs more to bring back (reload ~{reload_seconds(kept, rate):.1f} s, idle {kept.idle_s:.0f} s)"
