"""A stand-in for nvidia-ml-py: one 24 GB GPU holding what Siesta's model servers ask for."""
import os
from types import SimpleNamespace

import psutil

MB, GB = 1 << 20, 1 << 30
OTHERS = int(1.4 * GB)  # what the desktop and other programs hold


class NVMLError(Exception):
    pass


def _servers():
    out = []
    for child in psutil.Process(os.getpid()).children(recursive=True):
        try:
            vram = child.environ().get("SIESTA_SHOT_VRAM_MB")
        except psutil.Error:
            continue
        if vram:
            out.append(SimpleNamespace(pid=child.pid, usedGpuMemory=int(vram) * MB))
    return out


def nvmlInit(): pass
def nvmlShutdown(): pass
def nvmlDeviceGetCount(): return 1
def nvmlDeviceGetHandleByIndex(index): return index
def nvmlDeviceGetName(handle): return "NVIDIA GeForce RTX 4090"
def nvmlDeviceGetComputeRunningProcesses(handle): return _servers()
def nvmlDeviceGetGraphicsRunningProcesses(handle): return []


def nvmlDeviceGetMemoryInfo(handle):
    used = OTHERS + sum(p.usedGpuMemory for p in _servers())
    return SimpleNamespace(total=24 * GB, used=used, free=24 * GB - used)
