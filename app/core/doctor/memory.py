"""Memory as Siesta reads it: RAM and how memory pressure is noticed, and every GPU with the
reader of its figures, read by the same code the manager uses
(:mod:`app.core.memory.pressure`, :mod:`app.core.memory.gpus`).

The pressure source is found by starting a :class:`~app.core.memory.pressure.PressureWatch`
as the manager does, on an event loop of its own, and stopping it at once: it says whether
the kernel took the PSI trigger, or why not (then Siesta polls alone).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path

from app.core.config.sizes import format_bytes
from app.core.doctor.report import Item, found, missing
from app.core.memory.gpus import GpuDevice, GpuMemory
from app.core.memory.pressure import PSI_MEMORY, PressureWatch, read_ram

__all__ = ["memory_items", "gpu_items", "pressure_source"]


def _size(value: int | None) -> str:
    return "unknown" if value is None else format_bytes(value)


def memory_items(*, root: Path = Path("/"), psi_path: Path = PSI_MEMORY) -> Iterable[Item]:
    ram = read_ram(root)
    meminfo = str(root / "proc" / "meminfo")
    if ram.total is None:
        yield missing("ram", "RAM", f"{meminfo} cannot be read or has no MemTotal (not Linux?): Siesta has no "
                      "RAM figure here, and budgets in % of RAM do not apply", meminfo)
    else:
        yield found("ram", "RAM", {"total": ram.total, "available": ram.free},
                    f"{meminfo} (MemTotal, MemAvailable)",
                    text=f"{_size(ram.total)} total, {_size(ram.free)} available")
    yield pressure_source(psi_path)


def pressure_source(psi_path: Path = PSI_MEMORY) -> Item:
    """How memory pressure is noticed while models are loaded: the PSI trigger, and polling."""
    registered, why, interval, trigger = asyncio.run(_try_psi(psi_path))
    polling = f"polling every {interval:g} s while a model is loaded"
    if registered:
        return found("pressure", "memory pressure", {"psi": True, "psi_path": str(psi_path), "trigger": trigger,
                                                     "poll_interval": interval},
                     f"a PSI trigger written to {psi_path}",
                     text=f"PSI ({psi_path}, trigger \"{trigger}\"), and {polling}")
    return found("pressure", "memory pressure", {"psi": False, "psi_unavailable": why, "poll_interval": interval},
                 f"a PSI trigger refused by {psi_path}", text=f"{polling}; no PSI: {why}")


async def _try_psi(psi_path: Path) -> tuple[bool, str | None, float, str]:
    async def check() -> None:
        return None

    watch = PressureWatch(check, lambda: True, psi_path=psi_path)
    watch.start()  # registers the trigger as the manager's watch does; its first check is interval s away
    try:
        return watch.psi_registered, watch.psi_unavailable, watch.interval, watch.psi_trigger
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
        yield found("gpus", "devices", [], "NVML and /sys/class/drm",
                    text="none found (no NVIDIA GPU through NVML, no DRM card with a render node): "
                         "models use RAM only")
    for device in devices:
        yield _gpu(device, why_no_nvml)


def _gpu(device: GpuDevice, why_no_nvml: str | None) -> Item:
    value = {"name": device.name, "driver": device.kind, "total": device.total, "used": device.used}
    label = f"{device.id}"
    if device.kind == "nvidia" and why_no_nvml is None:
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
