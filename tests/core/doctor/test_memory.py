"""The doctor's memory probes: RAM from a meminfo file, the pressure source (a PSI trigger or
polling alone) from the same watch the manager runs, and every GPU with the reader of its
figures. GPUs are faked as in tests/core/memory/test_gpus.py: a fake NVML module and sysfs
trees in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.doctor import Probes, build_report
from app.core.doctor.memory import gpu_items, memory_items, pressure_source
from app.core.memory.gpus import GpuMemory
from tests.core.memory.test_gpus import GiB, FakeNvml, NVMLError, drm_machine, pci_card, two_gpus
from tests.core.memory.test_pressure import psi_usable


def by_key(items) -> dict:  # noqa: ANN001
    return {item.key: item for item in items}


def test_ram_from_meminfo(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text("MemTotal:       16384000 kB\nMemFree: 1 kB\nMemAvailable:    8192000 kB\n")
    ram = by_key(memory_items(root=tmp_path, psi_path=tmp_path / "no-psi"))["ram"]
    assert ram.value == {"total": 16384000 * 1024, "available": 8192000 * 1024}
    assert ram.shown() == "15.6 GB total, 7.8 GB available"
    assert ram.source == f"{tmp_path}/proc/meminfo (MemTotal, MemAvailable)"


def test_no_meminfo_says_why(tmp_path: Path) -> None:
    ram = by_key(memory_items(root=tmp_path, psi_path=tmp_path / "no-psi"))["ram"]
    assert not ram.found and "cannot be read" in ram.missing and ram.value is None


def test_without_psi_siesta_polls_alone_and_says_why(tmp_path: Path) -> None:
    item = pressure_source(tmp_path / "pressure" / "memory")
    assert item.value["psi"] is False and item.value["poll_interval"] == 1.5
    assert item.shown().startswith("polling every 1.5 s while a model is loaded; no PSI: ")
    assert "ENOENT" in item.shown()
    not_psi = tmp_path / "not-psi"
    not_psi.write_text("")  # a file that takes no trigger
    assert "no PSI" in pressure_source(not_psi).shown()


@pytest.mark.skipif(not psi_usable(), reason="no writable /proc/pressure/memory here")
def test_psi_on_this_machine() -> None:
    item = pressure_source()
    assert item.value["psi"] is True and item.value["trigger"] == "some 150000 2000000"
    assert item.shown() == ('PSI (/proc/pressure/memory, trigger "some 150000 2000000"), and polling every 1.5 s '
                            "while a model is loaded")


def test_nvidia_gpus_are_read_by_nvml(tmp_path: Path) -> None:
    nvml = FakeNvml(two_gpus())
    items = by_key(gpu_items(lambda: GpuMemory(nvml=nvml, root=tmp_path)))
    assert items["nvml"].value == "in use"
    assert items["gpu0"].value == {"name": "NVIDIA GeForce RTX 4090", "driver": "nvidia", "total": 24 * GiB,
                                   "used": 14 * GiB, "reader": "NVML"}
    assert items["gpu1"].shown() == "NVIDIA GeForce RTX 3060 (nvidia), 12.0 GB total, 2.0 GB used, read by NVML"
    assert items["gpu1"].source.startswith("NVML")
    assert nvml.shutdowns == nvml.inits == 1  # the reader is closed again


def test_drm_cards_are_read_by_sysfs_and_fdinfo(tmp_path: Path) -> None:
    drm_machine(tmp_path)  # amdgpu with VRAM totals, i915 without, and a display-only card
    items = by_key(gpu_items(lambda: GpuMemory(nvml=None, root=tmp_path)))
    assert items["nvml"].shown() == "not used: NVML is turned off"
    assert items["gpu0"].value["reader"] == "DRM fdinfo" and items["gpu0"].value["total"] == 16 * GiB
    assert "mem_info_vram_total" in items["gpu0"].source
    assert items["gpu1"].shown() == "i915 0000:00:02.0 (i915), total unknown, read by DRM fdinfo"
    assert "the i915 driver has no mem_info_vram_* files" in items["gpu1"].source
    assert "gpu2" not in items


def test_an_nvidia_card_without_nvml_says_why(tmp_path: Path) -> None:
    pci_card(tmp_path, 0, "0000:01:00.0", "nvidia", 128)
    nvml = FakeNvml([], init_error=NVMLError("Driver Not Loaded"))
    items = by_key(gpu_items(lambda: GpuMemory(nvml=nvml, root=tmp_path)))
    assert items["nvml"].shown() == "not used: nvmlInit failed: Driver Not Loaded"
    assert not items["gpu0"].found
    assert "an NVIDIA card without NVML (nvmlInit failed: Driver Not Loaded)" in items["gpu0"].missing


def test_no_gpu_at_all(tmp_path: Path) -> None:
    (tmp_path / "sys/class/drm").mkdir(parents=True)
    items = by_key(gpu_items(lambda: GpuMemory(nvml=None, root=tmp_path)))
    assert items["gpus"].value == [] and items["gpus"].shown().startswith("none found")


def test_a_gpu_reader_that_fails_is_reported_not_raised(paths, tmp_path: Path) -> None:  # noqa: ANN001
    class Broken(GpuMemory):
        def devices(self):  # noqa: ANN202
            raise RuntimeError("the driver fell over")

    report = build_report(paths, probes=Probes(gpus=lambda: Broken(nvml=None, root=tmp_path),
                                               psi_path=tmp_path / "no-psi"))
    (item,) = report.section("gpus").items
    assert item.missing == "the GPUs probe failed: RuntimeError: the driver fell over"
    assert report.item("memory", "pressure").found  # the other sections are there
