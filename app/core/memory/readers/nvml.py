"""NVIDIA's management library (NVML), which the Linux and the Windows readers share.

Through the ``pynvml`` module of the ``nvidia-ml-py`` package (a default dependency on Linux
and Windows): ``nvmlDeviceGetName`` and ``nvmlDeviceGetMemoryInfo`` (total, used), the
running processes with their used memory, and ``nvmlDeviceGetPciInfo``. NVML is initialised
once, on first use; ``nvidia-smi`` is never started and no CUDA context is made. Without NVML
(not installed, or ``nvmlInit`` fails) there is no NVML figure, and :attr:`Nvml.unavailable`
says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["IMPORT", "NVML_VALUE_NOT_AVAILABLE", "Nvml", "NvidiaGpu"]

NVML_VALUE_NOT_AVAILABLE = 2**64 - 1
IMPORT: Any = object()  # the default ``nvml``: import pynvml on first use


@dataclass(frozen=True)
class NvidiaGpu:
    index: int  # NVML's
    handle: Any
    name: str


class Nvml:
    """One NVML session: ``module`` is the ``pynvml`` module, a fake with its functions,
    :data:`IMPORT` (import it on first use) or None (NVML turned off). Not thread-safe by
    itself: its owner holds a lock around :meth:`open` and :meth:`close`."""

    def __init__(self, module: Any = IMPORT) -> None:
        self._arg = module
        self.module: Any | None = None  # set once nvmlInit succeeded
        self.unavailable: str | None = None  # why there are no NVML figures (None: NVML is used)

    def error(self) -> type[BaseException]:
        """NVML's exception class (OSError for a fake without one)."""
        error = getattr(self._arg if self.module is None else self.module, "NVMLError", None)
        return error if isinstance(error, type) and issubclass(error, BaseException) else OSError

    def open(self) -> list[NvidiaGpu]:
        """Initialises NVML and lists its GPUs in NVML's order; [] without NVML (and
        :attr:`unavailable` says why)."""
        nvml = self._arg
        if nvml is IMPORT:
            try:
                import pynvml as nvml  # type: ignore[import-not-found, no-redef]
            except ImportError:
                log.debug("no NVML: nvidia-ml-py is not installed")
                self.unavailable = "nvidia-ml-py is not installed (the pynvml module)"
                return []
            self._arg = nvml
        if nvml is None:
            self.unavailable = "NVML is turned off"
            return []
        error = self.error()
        try:
            nvml.nvmlInit()
        except (error, OSError) as exc:
            log.debug("no NVML: %s", exc)
            self.unavailable = f"nvmlInit failed: {exc}"
            return []
        self.unavailable = None
        self.module = nvml
        found: list[NvidiaGpu] = []
        try:
            count = nvml.nvmlDeviceGetCount()
        except error as exc:
            log.warning("NVML counts no GPUs: %s", exc)
            return []
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
            except error as exc:
                log.warning("NVML cannot open GPU %d: %s", index, exc)
                continue
            try:
                name = nvml.nvmlDeviceGetName(handle)
            except error:
                name = f"NVIDIA GPU {index}"
            name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
            found.append(NvidiaGpu(index=index, handle=handle, name=name))
        return found

    def memory(self, gpu: NvidiaGpu) -> tuple[int | None, int | None]:
        """(total, used) bytes now; (None, None) when NVML cannot say."""
        try:
            info = self.module.nvmlDeviceGetMemoryInfo(gpu.handle)
            return int(info.total), int(info.used)
        except self.error() as exc:
            log.debug("NVML memory of GPU %d: %s", gpu.index, exc)
            return None, None

    def processes(self, gpu: NvidiaGpu) -> list[Any]:
        """Compute and graphics processes on the GPU, each with ``pid`` and ``usedGpuMemory``
        (a pid can be in both lists); raises :meth:`error` when NVML cannot list them."""
        listed: list[Any] = []
        for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            if hasattr(self.module, getter):
                listed.extend(getattr(self.module, getter)(gpu.handle))
        return listed

    def pci_device_id(self, gpu: NvidiaGpu) -> int | None:
        """The PCI device id (``nvmlPciInfo_t.pciDeviceId`` holds the device id in its upper
        16 bits and the vendor id in its lower 16), None when NVML cannot say."""
        try:
            info = self.module.nvmlDeviceGetPciInfo(gpu.handle)
            return (int(info.pciDeviceId) >> 16) & 0xFFFF
        except (self.error(), AttributeError, TypeError, ValueError) as exc:
            log.debug("NVML PCI info of GPU %d: %s", gpu.index, exc)
            return None

    def close(self) -> None:
        """Shuts NVML down if it was initialised; a later :meth:`open` starts afresh."""
        nvml, self.module = self.module, None
        if nvml is not None:
            try:
                nvml.nvmlShutdown()
            except Exception as exc:  # noqa: BLE001 - shutting down must not fail
                log.debug("nvmlShutdown: %s", exc)
