"""Windows' reader (app/core/memory/readers/windows.py), run here through fakes of DXGI, PDH and
NVML under WDDM (tests/fakes/windows_gpu.py, which cites the page each call follows; unverified
on real hardware): the adapters and their order, what each holds and what given processes hold
there, for NVIDIA, AMD and Intel alike, and what happens when a call fails."""

from __future__ import annotations

import ctypes
import dataclasses

import pytest

from app.core.doctor.memory import gpu_items
from app.core.engine import release as er
from app.core.memory.gpus import GpuMemory
from app.core.memory.readers.base import GpuDevice
from app.core.memory.readers.windows import (
    DXGI_ADAPTER_DESC1,
    PDH_FMT_COUNTERVALUE_ITEM_W,
    WindowsGpus,
    WindowsReader,
    enumerate_adapters,
    parse_instance,
    read_counter,
)
from tests.fakes.windows_gpu import (
    ADAPTER_COUNTER,
    BASIC_RENDER,
    DESC1,
    ITEM,
    PROCESS_COUNTER,
    RTX_4090,
    RX_7900_XTX,
    UHD_770,
    FakeDxgi,
    FakePdh,
    GiB,
    MiB,
    WddmNvml,
    adapter_instance,
    process_instance,
)

WINDOWS = er.Platform("windows", "x64")


def machine(adapters: list, adapter_used: dict | None = None, processes: dict | None = None,
            counters: set[str] | None = None) -> tuple[FakeDxgi, FakePdh]:
    """DXGI over ``adapters``; PDH with each adapter's used bytes and (pid, adapter) -> bytes."""
    adapter_used = adapter_used if adapter_used is not None else {}
    processes = processes if processes is not None else {}
    listings = {
        ADAPTER_COUNTER: lambda: {adapter_instance(a): used for a, used in adapter_used.items()},
        PROCESS_COUNTER: lambda: {process_instance(pid, a): used for (pid, a), used in processes.items()},
    }
    if counters is not None:
        listings = {path: listing for path, listing in listings.items() if path in counters}
    return FakeDxgi(adapters), FakePdh(listings)


def gpus_of(dxgi: FakeDxgi, pdh: FakePdh, nvml=None) -> GpuMemory:  # noqa: ANN001
    return GpuMemory(nvml=nvml, reader=WindowsReader(dxgi=dxgi, pdh=pdh))


# ---- the structures and names ------------------------------------------------------------------


def test_the_structures_are_microsofts_layouts() -> None:
    assert ctypes.sizeof(DXGI_ADAPTER_DESC1) == DESC1.size == 312
    offsets = {name: getattr(DXGI_ADAPTER_DESC1, name).offset for name in
               ("VendorId", "DeviceId", "DedicatedVideoMemory", "SharedSystemMemory", "AdapterLuid", "Flags")}
    assert offsets == {"VendorId": 256, "DeviceId": 260, "DedicatedVideoMemory": 272, "SharedSystemMemory": 288,
                       "AdapterLuid": 296, "Flags": 304}
    assert ctypes.sizeof(PDH_FMT_COUNTERVALUE_ITEM_W) == ITEM.size == 24
    assert PDH_FMT_COUNTERVALUE_ITEM_W.FmtValue.offset == 8


@pytest.mark.parametrize(("name", "parsed"), [
    ("pid_1234_luid_0x00000000_0x0000D1E5_phys_0", (1234, "0x00000000_0x0000D1E5", 0, False)),
    ("pid_10232_luid_0x00000000_0x0001136A_phys_0", (10232, "0x00000000_0x0001136A", 0, False)),
    ("luid_0x00000000_0x0001136a_phys_1", (None, "0x00000000_0x0001136A", 1, False)),  # case does not matter
    ("luid_0x00000000_0x0001136A_phys_0_part_0", (None, "0x00000000_0x0001136A", 0, True)),
    ("pid_9524_luid_0x00000000_0x000095CA_phys_0_eng_0_engtype_3D", None),  # a GPU Engine instance
    ("_Total", None),
])
def test_counter_instances_are_read_as_published(name: str, parsed: tuple | None) -> None:
    assert parse_instance(name) == parsed


# ---- DXGI --------------------------------------------------------------------------------------


def test_the_adapters_come_from_dxgi_and_every_object_is_released() -> None:
    dxgi = FakeDxgi([UHD_770, RTX_4090, BASIC_RENDER])
    adapters = enumerate_adapters(dxgi)
    assert [(a.name, a.kind, a.device_id, a.dedicated, a.luid) for a in adapters] == [
        ("Intel(R) UHD Graphics 770", "intel", 0x4680, 128 * MiB, "0x00000000_0x0000C2F1"),
        ("NVIDIA GeForce RTX 4090", "nvidia", 0x2684, 24 * GiB, "0x00000000_0x0000D1E5"),
        ("Microsoft Basic Render Driver", "gpu", 0x008C, 0, "0x00000000_0x0000B3A0"),
    ]
    assert [name for name, _ in dxgi.calls if name != "Release"] == [
        "CreateDXGIFactory1", "EnumAdapters1", "GetDesc1", "EnumAdapters1", "GetDesc1", "EnumAdapters1", "GetDesc1",
        "EnumAdapters1"]
    assert dxgi.live() == 0 and not dxgi.misuse  # the factory and three adapters, released once each


def test_a_negative_luid_high_part_is_written_as_the_counters_write_it() -> None:
    odd = dataclasses.replace(RX_7900_XTX, luid_high=-1)
    (adapter,) = enumerate_adapters(FakeDxgi([odd]))
    assert adapter.luid == "0xFFFFFFFF_0x0001136A"


def test_no_dxgi_factory_means_no_gpus_and_says_why() -> None:
    dxgi, pdh = machine([RTX_4090])
    dxgi.fail = 0x887A0004  # DXGI_ERROR_UNSUPPORTED
    gpus = gpus_of(dxgi, pdh)
    assert gpus.devices() == [] and gpus.usage_of([1]) == {}
    assert gpus.nvml_unavailable == "DXGI lists no adapters"


# ---- PDH ---------------------------------------------------------------------------------------


def test_a_counter_is_read_in_two_calls_and_the_query_closed() -> None:
    pdh = FakePdh({PROCESS_COUNTER: lambda: {"pid_1234_luid_0x00000000_0x0000D1E5_phys_0": 6 * GiB,
                                             "pid_77_luid_0x00000000_0x0000D1E5_phys_0": None}})
    assert read_counter(pdh, PROCESS_COUNTER) == {"pid_1234_luid_0x00000000_0x0000D1E5_phys_0": 6 * GiB,
                                                  "pid_77_luid_0x00000000_0x0000D1E5_phys_0": None}
    assert pdh.calls == ["PdhOpenQueryW", f"PdhAddEnglishCounterW {PROCESS_COUNTER}", "PdhCollectQueryData",
                         "PdhGetFormattedCounterArrayW", "PdhGetFormattedCounterArrayW", "PdhCloseQuery"]
    assert pdh.open_queries() == 0 and not pdh.misuse


def test_a_counter_without_instances_is_empty_and_a_missing_one_fails() -> None:
    pdh = FakePdh({PROCESS_COUNTER: dict})
    assert read_counter(pdh, PROCESS_COUNTER) == {}
    with pytest.raises(OSError, match="PdhAddEnglishCounterW"):
        read_counter(pdh, ADAPTER_COUNTER)  # before Windows 10 1709 there is no GPU counter set
    assert pdh.open_queries() == 0 and not pdh.misuse


# ---- the devices ----------------------------------------------------------------------------------


def test_nvidia_first_then_the_largest_and_software_adapters_left_out() -> None:
    dxgi, pdh = machine([UHD_770, RX_7900_XTX, BASIC_RENDER, RTX_4090],
                        adapter_used={RTX_4090: 3 * GiB, RX_7900_XTX: 1 * GiB, UHD_770: 40 * MiB})
    devices = gpus_of(dxgi, pdh).devices()
    assert devices == [
        GpuDevice("gpu0", "NVIDIA GeForce RTX 4090", "nvidia", 24 * GiB, 3 * GiB),
        GpuDevice("gpu1", "AMD Radeon RX 7900 XTX", "amd", 24 * GiB, 1 * GiB),
        # an integrated GPU's 128 MiB is a pool its driver keeps, not what it can use: unknown, as i915 on Linux
        GpuDevice("gpu2", "Intel(R) UHD Graphics 770", "intel", None, None),
    ]
    assert [d.via for d in devices] == ["DXGI", "DXGI", "DXGI"]
    assert devices[0].free == 21 * GiB


def test_an_adapter_pdh_does_not_list_has_unknown_use() -> None:
    dxgi, pdh = machine([RX_7900_XTX], adapter_used={})
    assert gpus_of(dxgi, pdh).devices()[0].used is None
    dxgi, pdh = machine([RX_7900_XTX], counters=set())  # no GPU counters at all
    (device,) = gpus_of(dxgi, pdh).devices()
    assert device.total == 24 * GiB and device.used is None and device.free is None


def test_linked_adapters_and_partitions_are_summed_once() -> None:
    luid = RX_7900_XTX.luid
    pdh = FakePdh({ADAPTER_COUNTER: lambda: {f"luid_{luid}_phys_0": 2 * GiB, f"luid_{luid}_phys_1": 1 * GiB,
                                             f"luid_{luid}_phys_0_part_0": 2 * GiB}})
    (device,) = gpus_of(FakeDxgi([RX_7900_XTX]), pdh).devices()
    assert device.used == 3 * GiB  # the whole adapter's instances; the partition is part of them


def test_nvml_gives_the_nvidia_total_and_never_its_wddm_process_figures() -> None:
    nvml = WddmNvml([(0x2684, "NVIDIA GeForce RTX 4090", 25_757_220_864, 2 * GiB)])
    dxgi, pdh = machine([RTX_4090, RX_7900_XTX], adapter_used={RTX_4090: 3 * GiB, RX_7900_XTX: 0},
                        processes={(4242, RTX_4090): 5 * GiB})
    gpus = gpus_of(dxgi, pdh, nvml)
    nvidia, amd = gpus.devices()
    assert (nvidia.total, nvidia.used, nvidia.via) == (25_757_220_864, 3 * GiB, "DXGI, NVML")
    assert (amd.total, amd.via) == (24 * GiB, "DXGI")
    assert gpus.nvml_unavailable is None
    assert gpus.usage_of([4242]) == {"gpu0": 5 * GiB}  # PDH's figure; NVML says "not available" for 4242
    gpus.close()
    assert nvml.shutdowns == nvml.inits == 1


def test_an_nvidia_adapter_nvml_does_not_know_keeps_dxgis_total() -> None:
    nvml = WddmNvml([(0x2204, "NVIDIA GeForce RTX 3090", 24 * GiB, 0)])  # another card than DXGI's
    dxgi, pdh = machine([RTX_4090], adapter_used={RTX_4090: 0})
    (device,) = gpus_of(dxgi, pdh, nvml).devices()
    assert (device.total, device.via) == (24 * GiB, "DXGI")


def test_without_an_nvidia_adapter_nvml_is_not_loaded() -> None:
    nvml = WddmNvml([])
    dxgi, pdh = machine([RX_7900_XTX], adapter_used={RX_7900_XTX: 0})
    gpus = gpus_of(dxgi, pdh, nvml)
    gpus.devices()
    assert nvml.inits == 0 and gpus.nvml_unavailable == "no NVIDIA adapter"


# ---- per process ------------------------------------------------------------------------------------


def test_what_given_processes_hold_on_each_adapter() -> None:
    dxgi, pdh = machine([RTX_4090, RX_7900_XTX], adapter_used={RTX_4090: 9 * GiB, RX_7900_XTX: 5 * GiB},
                        processes={(4242, RTX_4090): 6 * GiB, (4243, RTX_4090): 1 * GiB, (4243, RX_7900_XTX): 3 * GiB,
                                   (999, RTX_4090): 2 * GiB})
    gpus = gpus_of(dxgi, pdh)
    assert gpus.usage_by_device([4242, 4243]) == {"gpu0": 7 * GiB, "gpu1": 3 * GiB}
    assert gpus.usage_of([4242]) == {"gpu0": 6 * GiB}
    assert gpus.usage_of([5555]) == {}  # no instance: holds nothing
    assert gpus.usage_of([]) == {}
    assert pdh.open_queries() == 0 and not pdh.misuse


def test_a_process_figure_pdh_cannot_give_is_unknown() -> None:
    dxgi, pdh = machine([RTX_4090], adapter_used={RTX_4090: 0}, counters={ADAPTER_COUNTER})
    gpus = gpus_of(dxgi, pdh)
    assert gpus.usage_by_device([4242]) == {"gpu0": None} and gpus.usage_of([4242]) is None
    dxgi, pdh = machine([RTX_4090], processes={(4242, RTX_4090): None})  # PDH marks it not valid
    assert gpus_of(dxgi, pdh).usage_of([4242]) is None


# ---- what else reads the GPUs -------------------------------------------------------------------------


def test_engine_install_sees_every_vendor_through_dxgi() -> None:
    dxgi, pdh = machine([RTX_4090], adapter_used={RTX_4090: 0})
    gpus = er.probe_gpus(nvml=None, reader=WindowsReader(dxgi=dxgi, pdh=pdh))
    assert er.detect_backend(WINDOWS, gpus) == ("cuda", "NVIDIA GeForce RTX 4090 found through DXGI: CUDA")
    dxgi, pdh = machine([RX_7900_XTX], adapter_used={RX_7900_XTX: 0})
    gpus = er.probe_gpus(nvml=None, reader=WindowsReader(dxgi=dxgi, pdh=pdh))
    assert er.detect_backend(WINDOWS, gpus) == (
        "vulkan", "AMD Radeon RX 7900 XTX (vendor amd) found through DXGI: Vulkan")


def test_siesta_doctor_names_dxgi_and_pdh() -> None:
    dxgi, pdh = machine([RTX_4090], adapter_used={RTX_4090: 3 * GiB})
    items = {item.key: item for item in gpu_items(lambda: gpus_of(dxgi, pdh))}
    assert items["gpu0"].shown() == "NVIDIA GeForce RTX 4090 (nvidia), 24.0 GB total, 3.0 GB used, read by DXGI and PDH"
    assert "GPU Process Memory" in items["gpu0"].source


def test_the_windows_reader_reads_ram_with_psutil() -> None:
    assert WindowsReader().ram().total  # this machine's, through psutil
    ram = WindowsReader(virtual_memory=lambda: _vm(64 * GiB, 40 * GiB)).ram()
    assert (ram.total, ram.free, ram.limit) == (64 * GiB, 40 * GiB, None)
    assert isinstance(WindowsReader().gpus(None), WindowsGpus) and WindowsReader().pressure_signal() is None


def _vm(total: int, available: int):  # noqa: ANN202
    from types import SimpleNamespace

    return SimpleNamespace(total=total, available=available)
