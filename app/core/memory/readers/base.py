"""What every OS's memory reader gives, and the part they share (psutil).

A :class:`Reader` answers four questions, each blocking briefly (no Qt, no asyncio; the
manager calls them from a worker thread, except :meth:`Reader.ram`, which is cheap enough for
the loop):

* :meth:`Reader.ram`: RAM's total and what other programs can still have (:class:`DeviceFree`);
* :meth:`Reader.process_ram`: the bytes one process holds in RAM (raises psutil's
  ``NoSuchProcess``, ``ZombieProcess`` or ``AccessDenied`` as psutil does);
* :meth:`Reader.gpus`: a :class:`GpuReader`, the GPUs with their memory and what given
  processes hold there;
* :meth:`Reader.pressure_signal`: the OS's own memory-pressure notification, where Siesta uses
  one besides Linux's PSI (which :mod:`app.core.memory.pressure` registers itself), else None.

This base class is the reader of an OS without one of its own (a BSD): RAM and a process's
resident bytes through psutil, no GPUs, no signal. A figure that cannot be read is ``None``:
nothing here is estimated or guessed. Sizes are bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import psutil

__all__ = ["DeviceFree", "GpuDevice", "GpuReader", "NoGpus", "PressureSignal", "Reader",
           "PRESSURE_NORMAL", "PRESSURE_WARNING", "PRESSURE_CRITICAL"]

# Memory pressure levels, as macOS's kern.memorystatus_vm_pressure_level gives them (the
# dispatch levels NOTE_MEMORYSTATUS_PRESSURE_*; see readers/macos.py).
PRESSURE_NORMAL = 1
PRESSURE_WARNING = 2
PRESSURE_CRITICAL = 4


@dataclass(frozen=True)
class DeviceFree:
    """One device's memory as other programs see it now; ``None`` where it cannot be read.

    ``physical`` and ``limit`` say what ``total`` is where it is not simply the RAM installed:
    on an Apple Silicon Mac ``total`` is the share of unified memory that Metal lets the GPU
    use, ``physical`` the RAM installed and ``limit`` which cap was used. They do not take
    part in comparisons."""

    id: str  # "ram", "gpu0", ...
    total: int | None
    free: int | None  # bytes available to other programs now (RAM: MemAvailable)
    physical: int | None = field(default=None, compare=False)
    limit: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class GpuDevice:
    """One GPU and its memory now, in bytes (``None``: unknown). ``via`` says where the
    figures come from ("NVML", "sysfs", "DXGI and PDH", ...); it takes no part in comparisons."""

    id: str  # "gpu0", "gpu1", ...
    name: str  # "NVIDIA GeForce RTX 4090", or "amdgpu 0000:03:00.0"
    kind: str  # the driver on Linux ("nvidia", "amdgpu", "i915", "xe"), the vendor on Windows ("nvidia", "amd", "intel")
    total: int | None
    used: int | None
    via: str = field(default="", compare=False)

    @property
    def free(self) -> int | None:
        if self.total is None or self.used is None:
            return None
        return max(self.total - self.used, 0)


class GpuReader(Protocol):
    """The GPUs of one machine (one per :class:`app.core.memory.gpus.GpuMemory`)."""

    nvml_unavailable: str | None  # why NVML is not used, once the devices were read (None: it is)
    source: str  # where the figures come from, in words, for ``siesta doctor``

    def devices(self) -> list[GpuDevice]: ...

    def usage_by_device(self, pids: list[int]) -> dict[str, int | None]:
        """Every device's id -> bytes these processes hold there (0: none), None where unknown."""
        ...

    def close(self) -> None: ...


class NoGpus:
    """A machine whose GPUs Siesta does not read separately (a Mac: unified memory is RAM)."""

    def __init__(self, why: str) -> None:
        self.nvml_unavailable: str | None = why
        self.source = why

    def devices(self) -> list[GpuDevice]:
        return []

    def usage_by_device(self, pids: list[int]) -> dict[str, int | None]:
        return {}

    def close(self) -> None:
        pass


class PressureSignal(Protocol):
    """The OS telling Siesta that memory runs short, between the watch's polls."""

    name: str  # for logs and ``siesta doctor``

    def start(self, notify: Callable[[int], None]) -> None:
        """Starts listening; ``notify(level)`` may then be called from any thread, with
        :data:`PRESSURE_WARNING` or :data:`PRESSURE_CRITICAL` (or NORMAL when it ends).
        Raises OSError when the OS refuses (then Siesta polls alone)."""
        ...

    def stop(self) -> None:
        """Stops listening; no ``notify`` starts after it returns. Can be started again."""
        ...

    def level(self) -> int | None:
        """The pressure level now (:data:`PRESSURE_NORMAL`, ...), None when it cannot be read."""
        ...


def _psutil_ram() -> DeviceFree:
    vm = psutil.virtual_memory()
    return DeviceFree("ram", int(vm.total), int(vm.available))


class Reader:
    """The reader of an OS without one of its own: psutil for RAM, no GPUs, no signal.
    ``virtual_memory`` is psutil's function or a fake with its ``total`` and ``available``."""

    name = "generic"
    ram_source = "psutil.virtual_memory() (total, available)"
    process_ram_source = "psutil: the resident set size"

    def __init__(self, *, virtual_memory: Callable[[], Any] | None = None) -> None:
        self._virtual_memory = virtual_memory

    def ram(self) -> DeviceFree:
        """RAM's total and what can be allocated without swapping, now."""
        if self._virtual_memory is None:
            return _psutil_ram()
        vm = self._virtual_memory()
        return DeviceFree("ram", int(vm.total), int(vm.available))

    def process_ram(self, pid: int) -> int:
        """The bytes one process holds in RAM (psutil's resident set size)."""
        return int(psutil.Process(pid).memory_info().rss)

    def gpus(self, nvml: Any) -> GpuReader:
        """This machine's GPUs (``nvml``: see :class:`app.core.memory.gpus.GpuMemory`)."""
        return NoGpus("no GPU reader for this OS")

    def pressure_signal(self) -> PressureSignal | None:
        return None
