"""Memory as Siesta reads it: RAM (on a Mac, the share of it the GPU may use), how a model's
RAM is counted, how memory pressure is noticed, and every GPU with the reader of its figures,
read by the same code the manager uses (:mod:`app.core.memory.pressure`,
:mod:`app.core.memory.gpus`, this OS's reader in :mod:`app.core.memory.readers`).

The pressure source is found by starting a :class:`~app.core.memory.pressure.PressureWatch`
as the manager does, on an event loop of its own, and stopping it at once: it says whether
the kernel took the PSI trigger, or why not, and whether the OS's own signal (macOS) could
be registered (without either, Siesta polls alone).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path

from app.core.config.sizes import format_bytes
from app.core.doctor.report import Item, found, missing
from app.core.memory import readers
from app.core.memory.gpus import GpuDevice, GpuMemory
from app.core.memory.pressure import PSI_MEMORY, PressureWatch, read_ram

__all__ = ["memory_items", "gpu_items", "pressure_source"]


def _size(value: int | None) -> str:
    return "unknown" if value is None else format_bytes(value)


def memory_items(*, root: Path | None = None, psi_path: Path = PSI_MEMORY) -> Iterable[Item]:
    """RAM (``root``: a Linux tree whose proc/meminfo is read instead of this machine's
    reader), how a model's RAM is counted, and the pressure source."""
    reader = readers.current()
    ram = read_ram(root)
    where = f"{root / 'proc' / 'meminfo'}" if root is not None else reader.ram_source
    if ram.total is None:
        yield missing("ram", "RAM", f"{where} cannot be read or has no total: Siesta has no RAM figure here, and "
                      "budgets in % of RAM do not apply", where)
    elif ram.limit is not None:
        yield found("ram", "RAM", {"total": ram.total, "available": ram.free, "physical": ram.physical,
                                   "limit": ram.limit},
                    f"{where}; the models' share: {ram.limit}",
                    text=f"{_size(ram.total)} for models and GPU (unified memory, by {ram.limit}) of "
                         f"{_size(ram.physical)}, {_size(ram.free)} available")
    else:
        yield found("ram", "RAM", {"total": ram.total, "available": ram.free},
                    f"{where} (MemTotal, MemAvailable)" if root is not None else where,
                    text=f"{_size(ram.total)} total, {_size(ram.free)} available")
    if root is None:
        yield found("process_ram", "a model's RAM", reader.process_ram_source, f"the {reader.name} reader")
    yield pressure_source(psi_path)


def pressure_source(psi_path: Path = PSI_MEMORY) -> Item:
    """How memory pressure is noticed while models are loaded: the PSI trigger or the OS's
    signal, and polling."""
    registered, why, interval, trigger, signal, signal_why = asyncio.run(_try_psi(psi_path))
    polling = f"polling every {interval:g} s while a model is loaded"
    if signal is not None:
        value = {"psi": False, "signal": signal, "signal_unavailable": signal_why, "poll_interval": interval}
        if signal_why is None:
            return found("pressure", "memory pressure", value, signal, text=f"{signal}, and {polling}")
        return found("pressure", "memory pressure", value, signal, text=f"{polling}; no {signal}: {signal_why}")
    if registered:
        return found("pressure", "memory pressure", {"psi": True, "psi_path": str(psi_path), "trigger": trigger,
                                                     "poll_interval": interval},
                     f"a PSI trigger written to {psi_path}",
                     text=f"PSI ({psi_path}, trigger \"{trigger}\"), and {polling}")
    return found("pressure", "memory pressure", {"psi": False, "psi_unavailable": why, "poll_interval": interval},
                 f"a PSI trigger refused by {psi_path}", text=f"{polling}; no PSI: {why}")


async def _try_psi(psi_path: Path) -> tuple[bool, str | None, float, str, str | None, str | None]:
    async def check() -> None:
        return None

    watch = PressureWatch(check, lambda: True, psi_path=psi_path)
    watch.start()  # registers the trigger (and the OS's signal) as the manager's watch does; its first check is interval s away
    try:
        return (watch.psi_registered, watch.psi_unavailable, watch.interval, watch.psi_trigger, watch.signal_name,
                watch.signal_unavailable)
    finally:
        await watch.stop()


def gpu_items(gpus: Callable[[], GpuMemory] = GpuMemory) -> Iterable[Item]:
    memory = gpus()
    try:
        devices = memory.devices()
        why_no_nvml = memory.nvml_unavailable
    finally:
        memory.close()
    if why_no_nvml is None:
        yield found("nvml", "NVML", "in use", "import pynvml, nvmlInit()")
    else:
        yield found("nvml", "NVML", "not used", "import pynvml, nvmlInit()", text=f"not used: {why_no_nvml}")
    if not devices:
        source = getattr(memory, "source", "NVML and /sys/class/drm")
        why = ("no NVIDIA GPU through NVML, no DRM card with a render node" if source.startswith("NVML")
               else source)
        yield found("gpus", "devices", [], source, text=f"none found ({why}): models use RAM only")
    for device in devices:
        yield _gpu(device, why_no_nvml)


def _gpu(device: GpuDevice, why_no_nvml: str | None) -> Item:
    value = {"name": device.name, "driver": device.kind, "total": device.total, "used": device.used}
    label = f"{device.id}"
    if device.via.startswith("DXGI"):
        reader = "DXGI and PDH"
        source = ("DXGI (the adapter" + (", NVML for the total" if "NVML" in device.via else "") + "); used and "
                  "per process: PDH's GPU Adapter Memory and GPU Process Memory, Dedicated Usage")
    elif device.kind == "nvidia" and why_no_nvml is None:
        reader = "NVML"
        source = "NVML (nvmlDeviceGetMemoryInfo; per process: nvmlDeviceGet*RunningProcesses)"
    elif device.kind.startswith("nvidia"):
        return missing(device.id, label, f"{device.name}: an NVIDIA card without NVML ({why_no_nvml}); install "
                       "nvidia-ml-py for its memory figures", "/sys/class/drm")
    elif device.total is not None:
        reader = "DRM fdinfo"
        source = "sysfs mem_info_vram_total/_used; per process: DRM fdinfo"
    else:
        reader = "DRM fdinfo"
        source = f"per process: DRM fdinfo; the {device.kind} driver has no mem_info_vram_* files for totals"
    value["reader"] = reader
    if device.total is None:
        text = f"{device.name} ({device.kind}), total unknown, read by {reader}"
    else:
        text = (f"{device.name} ({device.kind}), {_size(device.total)} total, {_size(device.used)} used, "
                f"read by {reader}")
    return found(device.id, label, value, source, text=text)
