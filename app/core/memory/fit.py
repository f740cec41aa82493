"""Does a model fit? The memory rules of admission and of giving memory back, as plain
functions over figures (no I/O), so the policy is tested on its own.

A load fits on a device when both hold there:

* **the budget:** what Siesta's models use on the device, plus the new model's estimate,
  stays within ``memory_budget`` (a size, or a share of the device's total);
* **the floor:** the device's free memory, less what loads already admitted will still
  take, less ``free_memory_floor``, leaves room for the estimate.

A model that could never fit (its estimate is over the budget, or over the device's
total, with nothing else of Siesta's loaded) is refused at once; one that would fit once
other models go waits for them. Memory is given back when a device's free memory falls
below the floor because something else took it.

What each loaded model holds on a device is :meth:`app.core.memory.book.MemoryBook.held`;
where an estimate is expected to go is :func:`placed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from app.core.config.sizes import format_bytes


class Estimate(Protocol):
    """A model's expected memory (:class:`app.core.memory.gguf_estimate.MemoryEstimate`)."""

    @property
    def total(self) -> int: ...

    @property
    def by_device(self) -> Mapping[str, int]: ...


class Limit(Protocol):
    """A budget or a floor (:class:`app.core.config.memory_limits.MemoryLimit`)."""

    def for_device(self, device: str, total: int | None) -> int | None: ...


@dataclass(frozen=True)
class DeviceState:
    """One device now: its total and free bytes (None: unknown)."""

    total: int | None
    free: int | None


@dataclass(frozen=True)
class Shortfall:
    """Why a model does not fit now: on which device, and whether it never could."""

    device: str
    never: bool
    message: str
    missing: int = 0  # bytes to free there for it to fit (0 when it never could)


def device_label(device: str) -> str:
    """``"gpu0"`` -> ``"GPU 0"``, ``"ram"`` -> ``"RAM"``."""
    return "RAM" if device == "ram" else "GPU " + device.removeprefix("gpu")


def shortfall(name: str, need: Mapping[str, int], devices: Mapping[str, DeviceState],
              used_by_siesta: Mapping[str, int], pending: Mapping[str, int],
              budget: Limit | None, floor: Limit | None) -> Shortfall | None:
    """None when ``need`` (bytes per device) fits now; else the first device where it does
    not. ``used_by_siesta``: what Siesta's other models use per device; ``pending``: what
    loads already admitted (not yet measured) will still take there."""
    for device, amount in sorted(need.items()):
        if amount <= 0:
            continue
        state = devices.get(device, DeviceState(None, None))
        label = device_label(device)
        cap = budget.for_device(device, state.total) if budget is not None else None
        keep = (floor.for_device(device, state.total) if floor is not None else None) or 0
        if cap is not None and amount > cap:
            return Shortfall(device, True, f"model {name!r} needs {format_bytes(amount)}, more than the memory "
                                           f"budget of {format_bytes(cap)} on {label}")
        if state.total is not None and amount > state.total:
            return Shortfall(device, True, f"model {name!r} needs {format_bytes(amount)}, more than {label} has "
                                           f"({format_bytes(state.total)})")
        used = used_by_siesta.get(device, 0) + pending.get(device, 0)
        if cap is not None and used + amount > cap:
            return Shortfall(device, False, f"model {name!r} needs {format_bytes(amount)} on {label}; Siesta's "
                                            f"models use {format_bytes(used)} of its {format_bytes(cap)} budget there",
                             used + amount - cap)
        if state.free is not None:
            room = state.free - pending.get(device, 0) - keep
            if amount > room:
                return Shortfall(device, False, f"model {name!r} needs {format_bytes(amount)} on {label}; "
                                                f"{format_bytes(max(0, state.free))} is free there and "
                                                f"{format_bytes(keep)} is kept free for other programs",
                                 amount - room)
    return None


def under_floor(devices: Mapping[str, DeviceState], floor: Limit | None) -> dict[str, int]:
    """Devices whose free memory is below the floor, with the bytes missing."""
    missing: dict[str, int] = {}
    if floor is None:
        return missing
    for device, state in devices.items():
        keep = floor.for_device(device, state.total)
        if keep is not None and state.free is not None and state.free < keep:
            missing[device] = keep - state.free
    return missing


def place_total(total: int, devices: Mapping[str, DeviceState]) -> dict[str, int]:
    """Where a recipe's own ``memory_estimate`` (a total, no split) is expected: on the first
    GPU when the machine has one (models are offloaded there by default), else in RAM."""
    gpus = sorted(d for d in devices if d != "ram")
    return {gpus[0] if gpus else "ram": total}


def placed(estimate: Estimate, devices: Mapping[str, DeviceState]) -> dict[str, int]:
    """Bytes per device an estimate is expected to take: its own split when it has one, else
    its total where :func:`place_total` puts it."""
    return dict(estimate.by_device) if estimate.by_device else place_total(estimate.total, devices)
