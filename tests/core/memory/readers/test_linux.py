"""Linux's reader (app/core/memory/readers/linux.py): RAM through psutil gives /proc/meminfo's
MemTotal and MemAvailable, as Siesta's own parse did; the GPU readers' behaviour is
tests/core/memory/test_gpus.py, run unchanged against it."""

from __future__ import annotations

import os

import psutil
import pytest

from app.core.memory.readers.linux import LinuxGpus, LinuxReader, meminfo, per_cpu_free
from tests.portable import LINUX

pytestmark = pytest.mark.skipif(not LINUX, reason="reads this machine's /proc/meminfo")


def test_ram_is_meminfo_plus_the_per_cpu_free_lists() -> None:
    from pathlib import Path

    for _ in range(3):  # MemAvailable and the lists move between two reads; the total never does
        mine, theirs = meminfo(Path("/")), LinuxReader().ram()
        lists = per_cpu_free()
        assert theirs.total == mine.total
        assert theirs.free is not None and mine.free is not None
        if abs(theirs.free - (mine.free + lists)) <= 64 << 20:
            return
    pytest.fail(f"the reader's free {theirs.free} is not MemAvailable {mine.free} plus the per-CPU lists {lists}")


def test_the_per_cpu_free_lists_are_the_count_lines_of_zoneinfo(tmp_path) -> None:  # noqa: ANN001
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "zoneinfo").write_text(
        "Node 0, zone   Normal\n  pages free     1000\n  pagesets\n    cpu: 0\n              count:    250\n"
        "              high:     2378\n    cpu: 1\n              count: 6\n  vm stats threshold: 24\n"
        "Node 0, zone DMA\n  pagesets\n    cpu: 0\n              count:    x\n")
    assert per_cpu_free(tmp_path) == 256 * os.sysconf("SC_PAGE_SIZE")
    assert per_cpu_free(tmp_path / "nowhere") == 0


def test_a_process_is_its_rss() -> None:
    assert LinuxReader().process_ram(os.getpid()) == pytest.approx(psutil.Process().memory_info().rss, rel=0.5)


def test_the_gpus_are_nvml_and_drm() -> None:
    gpus = LinuxReader().gpus(None)
    assert isinstance(gpus, LinuxGpus) and gpus.source.startswith("NVML and /sys/class/drm")
    assert LinuxReader().pressure_signal() is None  # PSI is the watch's own
