"""The choice of memory reader (app/core/memory/readers/__init__.py), made once at start-up, and
the facades that go through it: read_ram, GpuMemory and process_ram. The Linux reader's own
behaviour is tests/core/memory/test_gpus.py and test_pressure.py, unchanged; here only that
Linux gets it and that the facades hand every call to the reader in place."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from app.core.memory import readers
from app.core.memory.gpus import GpuMemory
from app.core.memory.pressure import DeviceFree, read_ram
from app.core.memory.readers.base import GpuDevice, NoGpus, Reader
from app.core.memory.readers.linux import LinuxGpus, LinuxReader
from app.core.memory.readers.macos import MacReader
from app.core.memory.readers.windows import WindowsGpus, WindowsReader


@pytest.mark.parametrize(("system", "kind"), [("linux", LinuxReader), ("darwin", MacReader),
                                              ("win32", WindowsReader), ("freebsd14", Reader)])
def test_each_os_gets_its_reader(system: str, kind: type) -> None:
    assert type(readers.reader_for(system)) is kind


def test_this_machine_got_its_reader_once() -> None:
    expected = {"win32": "windows", "darwin": "macos"}.get(sys.platform, "linux" if sys.platform.startswith("linux")
                                                           else "generic")
    assert readers.current().name == expected
    assert readers.current() is readers.current()


class Recording(Reader):
    """A reader that says where each figure came from."""

    name = "recording"

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[Any] = []

    def ram(self) -> DeviceFree:
        self.asked.append("ram")
        return DeviceFree("ram", 8 << 30, 3 << 30)

    def process_ram(self, pid: int) -> int:
        self.asked.append(pid)
        return 1234

    def gpus(self, nvml: Any) -> Any:
        self.asked.append(("gpus", nvml))
        return NoGpus("none here")


def test_the_facades_ask_the_reader_in_place(use_reader) -> None:  # noqa: ANN001
    recording = use_reader(Recording())
    assert read_ram() == DeviceFree("ram", 8 << 30, 3 << 30)
    assert readers.process_ram(4242) == 1234
    gpus = GpuMemory(nvml=None)
    assert gpus.devices() == [] and gpus.usage_of([1, 2]) == {} and gpus.source == "none here"
    assert recording.asked == ["ram", 4242, ("gpus", None)]


def test_a_linux_tree_is_read_by_the_linux_reader_whatever_the_os(use_reader, tmp_path: Path) -> None:  # noqa: ANN001
    """``root`` (tests, ``siesta doctor``) means a Linux /proc and /sys tree on every OS."""
    use_reader(Recording())
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "meminfo").write_text("MemTotal: 2048 kB\nMemAvailable: 1024 kB\n")
    assert read_ram(tmp_path) == DeviceFree("ram", 2048 * 1024, 1024 * 1024)
    assert isinstance(GpuMemory(nvml=None, root=tmp_path)._impl, LinuxGpus)


def test_a_reader_can_be_given_to_one_gpu_memory() -> None:
    assert isinstance(GpuMemory(nvml=None, reader=WindowsReader())._impl, WindowsGpus)


def test_the_base_reader_is_psutil() -> None:
    ram = Reader().ram()
    vm = psutil.virtual_memory()
    assert ram.total == vm.total and ram.free is not None and 0 < ram.free <= ram.total
    assert Reader().process_ram(os.getpid()) == pytest.approx(psutil.Process().memory_info().rss, rel=0.5)
    with pytest.raises(psutil.NoSuchProcess):
        Reader().process_ram(2**22 + 12345)
    assert Reader().gpus(None).devices() == [] and Reader().pressure_signal() is None


def test_a_device_says_where_its_figures_come_from_without_changing_equality() -> None:
    assert GpuDevice("gpu0", "x", "nvidia", 1, 0, via="NVML") == GpuDevice("gpu0", "x", "nvidia", 1, 0)
    assert DeviceFree("ram", 2, 1, physical=3, limit="Metal") == DeviceFree("ram", 2, 1)
