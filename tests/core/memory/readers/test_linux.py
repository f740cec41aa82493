"""Linux's reader (app/core/memory/readers/linux.py): RAM through psutil gives /proc/meminfo's
MemTotal and MemAvailable, as Siesta's own parse did; the GPU readers' behaviour is
tests/core/memory/test_gpus.py, run unchanged against it."""

from __future__ import annotations

import os

import psutil
import pytest

from app.core.memory.readers.linux import LinuxGpus, LinuxReader, meminfo
from tests.portable import LINUX

pytestmark = pytest.mark.skipif(not LINUX, reason="reads this machine's /proc/meminfo")


def test_ram_through_psutil_is_meminfo() -> None:
    from pathlib import Path

    for _ in range(3):  # MemAvailable moves between two reads; its total never does
        mine, theirs = meminfo(Path("/")), LinuxReader().ram()
        assert theirs.total == mine.total
        assert theirs.free is not None and mine.free is not None
        if abs(theirs.free - mine.free) <= 64 << 20:
            return
    pytest.fail(f"psutil's available {theirs.free} is not /proc/meminfo's MemAvailable {mine.free}")


def test_a_process_is_its_rss() -> None:
    assert LinuxReader().process_ram(os.getpid()) == pytest.approx(psutil.Process().memory_info().rss, rel=0.5)


def test_the_gpus_are_nvml_and_drm() -> None:
    gpus = LinuxReader().gpus(None)
    assert isinstance(gpus, LinuxGpus) and gpus.source.startswith("NVML and /sys/class/drm")
    assert LinuxReader().pressure_signal() is None  # PSI is the watch's own
