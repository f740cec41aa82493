"""GPU memory: every GPU's total and used bytes, and the bytes given processes hold on each.

Siesta's manager calls this from a worker thread (every function blocks briefly; no Qt, no
asyncio) to show what each model's server holds on the GPUs and how full each GPU is. A
figure that cannot be read is ``None``: nothing here is estimated or guessed. Sizes are bytes.

:class:`GpuMemory` is the one facade; the figures come from this OS's reader
(:mod:`app.core.memory.readers`):

* **Linux** (:mod:`~app.core.memory.readers.linux`): NVIDIA through NVML, AMD, Intel and other
  GPUs through sysfs totals and the kernel's per-process DRM fdinfo. Ids: NVIDIA GPUs by NVML
  index first, then DRM cards by card number.
* **Windows** (:mod:`~app.core.memory.readers.windows`): every adapter DXGI lists, with WDDM's
  per-adapter and per-process ``Dedicated Usage`` read through PDH, for every vendor; NVML
  for NVIDIA totals. Ids: NVIDIA adapters first, then the others, largest first.
* **macOS** (:mod:`~app.core.memory.readers.macos`): no devices: unified memory is RAM, and
  its cap is RAM's total (:func:`app.core.memory.pressure.read_ram`).

The set of devices is read once; the memory figures at every call. :meth:`GpuMemory.usage_of`
gives bytes per device id where the processes hold any, ``{}`` when they hold none, and
``None`` when any device's figure is unknown (a partial sum would read as a whole one);
:meth:`GpuMemory.usage_by_device` gives every device's figure or ``None`` separately.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from app.core.memory import readers
from app.core.memory.readers.base import GpuDevice, GpuReader, Reader
from app.core.memory.readers.linux import LinuxGpus, device_local_bytes, parse_fdinfo
from app.core.memory.readers.nvml import IMPORT, NVML_VALUE_NOT_AVAILABLE

__all__ = ["GpuDevice", "GpuMemory", "NVML_VALUE_NOT_AVAILABLE", "parse_fdinfo", "device_local_bytes"]


class GpuMemory:
    """Reads GPU devices and per-process GPU memory; one per Siesta instance.

    ``nvml`` is the ``pynvml`` module or a fake with the same functions; by default it is
    imported on first use, and an ImportError or an NVMLError from ``nvmlInit`` means no
    NVML figures (None: NVML turned off). ``root`` is where a Linux tree's /proc and /sys are
    read (tests pass a temporary tree; given, the Linux reader reads it on every OS);
    ``reader`` is an OS's reader (default: this machine's). Safe to call from several
    threads. Once the devices were read, :attr:`nvml_unavailable` says why NVML is not used
    (None when it is), for ``siesta doctor``.
    """

    def __init__(self, *, nvml: Any | None = IMPORT, root: Path | None = None, reader: Reader | None = None) -> None:
        if root is not None:
            self._impl: GpuReader = LinuxGpus(nvml=nvml, root=Path(root))
        else:
            self._impl = (reader or readers.current()).gpus(nvml)

    @property
    def nvml_unavailable(self) -> str | None:
        return self._impl.nvml_unavailable

    @property
    def source(self) -> str:
        """Where the figures come from, in words."""
        return self._impl.source

    def devices(self) -> list[GpuDevice]:
        """Every GPU with its memory now; [] on a machine without one (or on a Mac)."""
        return self._impl.devices()

    def usage_of(self, pids: Iterable[int]) -> dict[str, int] | None:
        """GPU bytes used by these processes, per device id ({} when they use none); None when
        the figure of any device cannot be had (NVIDIA under WDDM/WSL, or in a container without
        the host pid namespace; a DRM driver without memory figures in its fdinfo; PDH not
        answering on Windows)."""
        by_device = self.usage_by_device(pids)
        if any(used is None for used in by_device.values()):
            return None
        return {device: used for device, used in by_device.items() if used}

    def usage_by_device(self, pids: Iterable[int]) -> dict[str, int | None]:
        """Every device's id -> bytes these processes hold there (0: none), None where unknown."""
        return self._impl.usage_by_device(sorted(set(pids)))

    def close(self) -> None:
        """Shuts NVML down if it was initialised; a later call starts afresh."""
        self._impl.close()
