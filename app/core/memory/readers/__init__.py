"""How this OS tells Siesta about memory: one reader module per OS behind one interface
(:mod:`.base`), as psutil does, and the one for this OS chosen once, at start-up
(:func:`current`; tests put a reader of another OS, built on fakes, in its place with :func:`use`).

* :mod:`.linux`: RAM through psutil (``/proc/meminfo``), GPUs through NVML and the kernel's DRM
  fdinfo with the totals from sysfs; memory pressure from PSI, which
  :class:`app.core.memory.pressure.PressureWatch` registers itself.
* :mod:`.windows`: RAM through psutil, every GPU through DXGI (the adapters) and PDH (WDDM's
  per-adapter and per-process ``Dedicated Usage``), NVML for NVIDIA totals.
* :mod:`.macos`: unified memory as one device, RAM, capped at Metal's working-set size; a
  process's figure from ``proc_pid_rusage``'s ``phys_footprint``; the kernel's
  memory-pressure level through a libdispatch source.
* :mod:`.nvml`: NVIDIA's NVML, which Linux and Windows share.

The facades are :class:`app.core.memory.gpus.GpuMemory` (the GPUs) and
:func:`app.core.memory.pressure.read_ram` (RAM); :func:`process_ram` is a process's RAM for
:mod:`app.core.memory.book`. Every module imports on every OS (the OS calls are made only when
used), so the tests run each one here with fakes of them.
"""

from __future__ import annotations

import sys

from app.core.memory.readers.base import (
    PRESSURE_CRITICAL,
    PRESSURE_NORMAL,
    PRESSURE_WARNING,
    DeviceFree,
    GpuDevice,
    GpuReader,
    NoGpus,
    PressureSignal,
    Reader,
)
from app.core.memory.readers.linux import LinuxReader
from app.core.memory.readers.macos import MacReader
from app.core.memory.readers.windows import WindowsReader

__all__ = ["DeviceFree", "GpuDevice", "GpuReader", "NoGpus", "PressureSignal", "Reader", "PRESSURE_NORMAL",
           "PRESSURE_WARNING", "PRESSURE_CRITICAL", "current", "process_ram", "reader_for", "use"]


def reader_for(system: str) -> Reader:
    """The reader for ``sys.platform`` value ``system`` (nothing is loaded yet)."""
    if system.startswith("linux"):
        return LinuxReader()
    if system == "win32":
        return WindowsReader()
    if system == "darwin":
        return MacReader()
    return Reader()


_current: Reader = reader_for(sys.platform)


def current() -> Reader:
    """This machine's reader."""
    return _current


def use(reader: Reader) -> Reader:
    """Puts ``reader`` in the place of this machine's (tests: a reader of another OS on fakes);
    returns the one it replaced, to be put back."""
    global _current
    previous, _current = _current, reader
    return previous


def process_ram(pid: int) -> int:
    """The bytes one process holds in RAM, as this OS counts them (RSS; on a Mac its physical
    footprint); raises psutil's ``NoSuchProcess``, ``ZombieProcess`` or ``AccessDenied``."""
    return _current.process_ram(pid)
