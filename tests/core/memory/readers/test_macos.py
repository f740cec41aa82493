"""macOS's reader (app/core/memory/readers/macos.py), run here through fakes of sysctlbyname,
proc_pid_rusage, pyobjc's Metal and libdispatch (tests/fakes/darwin_memory.py, which cites
Apple's headers and pages; unverified on real hardware): unified memory as one device capped
where Metal caps it, a model's figure as its physical footprint, and the memory-pressure
signal, down to the watch that runs the relief check at once."""

from __future__ import annotations

import asyncio
import ctypes
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from app.core.doctor.memory import gpu_items, memory_items, pressure_source
from app.core.memory import readers
from app.core.memory.gpus import GpuMemory
from app.core.memory.pressure import PressureWatch, read_ram
from app.core.memory.readers.base import (
    PRESSURE_CRITICAL,
    PRESSURE_NORMAL,
    PRESSURE_WARNING,
)
from app.core.memory.readers.macos import (
    DispatchPressureSignal,
    MacReader,
    RusageInfoV2,
    metal_working_set,
    sysctl_int,
)
from tests.fakes.darwin_memory import (
    DISPATCH_MEMORYPRESSURE_CRITICAL,
    DISPATCH_MEMORYPRESSURE_WARN,
    INT,
    M1_PRO_16GB,
    M1_PRO_METAL_CAP,
    QUAD,
    RUSAGE_INFO_V2,
    RUSAGE_V2,
    FakeLibdispatch,
    FakeMetal,
    FakeProcPidRusage,
    FakeSysctl,
    GiB,
)
from tests.waiting import until

pytestmark = pytest.mark.timeout(30)


def vm(total: int, available: int) -> SimpleNamespace:
    return SimpleNamespace(total=total, available=available)


def mac(*, metal: int | None = M1_PRO_METAL_CAP, sysctl: dict | None = None, available: int = 9 * GiB,
        footprints: dict | None = None, libdispatch: FakeLibdispatch | None = None) -> MacReader:
    values = dict(M1_PRO_16GB) | (sysctl or {})
    return MacReader(sysctlbyname=FakeSysctl(values), metal=FakeMetal(metal),
                     proc_pid_rusage=FakeProcPidRusage(footprints or {}), libdispatch=libdispatch or FakeLibdispatch(),
                     virtual_memory=lambda: vm(16 * GiB, available))


# ---- the structures and sysctls ---------------------------------------------------------------------


def test_rusage_info_v2_is_apples_layout() -> None:
    assert ctypes.sizeof(RusageInfoV2) == RUSAGE_V2.size == 160
    assert RusageInfoV2.ri_phys_footprint.offset == 72 and RusageInfoV2.ri_resident_size.offset == 64
    assert RUSAGE_INFO_V2 == 2


def test_sysctls_of_either_size_and_missing_ones() -> None:
    sysctl = FakeSysctl(M1_PRO_16GB | {"vm.negative": (INT, -3)})
    assert sysctl_int(sysctl, "hw.optional.arm64") == 1
    assert sysctl_int(sysctl, "hw.memsize") == 16 * GiB
    assert sysctl_int(sysctl, "vm.negative") == -3
    assert sysctl_int(sysctl, "iogpu.no_such_thing") is None


# ---- RAM: one device, capped where Metal caps it ----------------------------------------------------


def test_apple_silicon_ram_is_metals_working_set() -> None:
    ram = mac().ram()
    assert (ram.total, ram.free, ram.physical) == (M1_PRO_METAL_CAP, 9 * GiB, 16 * GiB)
    assert ram.limit == "Metal's recommendedMaxWorkingSetSize"


def test_free_is_what_ram_has_available_even_above_the_cap() -> None:
    """Other programs can have it, and it rises by what an unloaded model held (admission waits
    for that); what the models take together is the budget's to bound."""
    ram = mac(available=14 * GiB).ram()
    assert (ram.total, ram.free) == (M1_PRO_METAL_CAP, 14 * GiB)


def test_without_metal_iogpu_wired_limit_mb_then_two_thirds() -> None:
    raised = mac(metal=None, sysctl={"iogpu.wired_limit_mb": (INT, 12288)}).ram()
    assert (raised.total, raised.limit) == (12 * GiB, "iogpu.wired_limit_mb")
    default = mac(metal=None).ram()  # 0: macOS's own default
    assert default.total == 16 * GiB * 2 // 3 and default.limit.startswith("two thirds of RAM")
    no_pyobjc = MacReader(sysctlbyname=FakeSysctl(M1_PRO_16GB), metal=None, virtual_memory=lambda: vm(16 * GiB, GiB))
    assert no_pyobjc.ram().total == 16 * GiB * 2 // 3


def test_the_cap_is_never_above_the_ram() -> None:
    assert mac(metal=None, sysctl={"iogpu.wired_limit_mb": (INT, 65536)}).ram().total == 16 * GiB


def test_metal_is_asked_once_and_again_when_the_wired_limit_changes() -> None:
    sysctl, metal = FakeSysctl(M1_PRO_16GB), FakeMetal(M1_PRO_METAL_CAP)
    reader = MacReader(sysctlbyname=sysctl, metal=metal, virtual_memory=lambda: vm(16 * GiB, GiB))
    for _ in range(3):
        reader.ram()
    assert metal.devices_made == 1
    sysctl.values["iogpu.wired_limit_mb"] = (INT, 14336)  # sudo sysctl iogpu.wired_limit_mb=14336
    metal.working_set = 14 * GiB
    assert reader.ram().total == 14 * GiB and metal.devices_made == 2


def test_an_intel_mac_is_plain_ram() -> None:
    for arm64 in ({"hw.optional.arm64": (INT, 0)}, {}):
        values = {k: v for k, v in M1_PRO_16GB.items() if k != "hw.optional.arm64"} | arm64
        reader = MacReader(sysctlbyname=FakeSysctl(values), metal=FakeMetal(GiB), virtual_memory=lambda: vm(16 * GiB, 5 * GiB))
        ram = reader.ram()
        assert (ram.total, ram.free, ram.limit) == (16 * GiB, 5 * GiB, None)


def test_metal_that_fails_or_has_no_device_gives_nothing() -> None:
    class Broken:
        def MTLCreateSystemDefaultDevice(self):  # noqa: ANN201, N802
            raise RuntimeError("objc.error")

    assert metal_working_set(Broken()) is None
    assert metal_working_set(FakeMetal(None)) is None
    assert metal_working_set(FakeMetal(0)) is None


def test_read_ram_and_gpu_memory_on_a_mac(use_reader) -> None:  # noqa: ANN001
    use_reader(mac())
    assert read_ram().total == M1_PRO_METAL_CAP
    gpus = GpuMemory()
    assert gpus.devices() == [] and gpus.usage_of([1]) == {} and "unified memory" in gpus.source


# ---- a process's footprint --------------------------------------------------------------------------


def test_a_process_is_its_physical_footprint() -> None:
    rusage = FakeProcPidRusage({4242: 6 * GiB})
    reader = MacReader(proc_pid_rusage=rusage, sysctlbyname=FakeSysctl(M1_PRO_16GB), metal=None)
    assert reader.process_ram(4242) == 6 * GiB  # not the resident size (3 GiB in the fake)
    assert rusage.calls == [(4242, RUSAGE_INFO_V2)]


def test_a_gone_process_is_no_such_process_and_other_errors_access_denied(use_reader) -> None:  # noqa: ANN001
    reader = MacReader(proc_pid_rusage=FakeProcPidRusage({}), sysctlbyname=FakeSysctl(M1_PRO_16GB), metal=None)
    with pytest.raises(psutil.NoSuchProcess):
        reader.process_ram(4242)

    def refused(pid: int, flavor: int, buffer) -> int:  # noqa: ANN001
        ctypes.set_errno(1)  # EPERM
        return -1

    with pytest.raises(psutil.AccessDenied):
        MacReader(proc_pid_rusage=refused).process_ram(4242)
    use_reader(reader)
    with pytest.raises(psutil.NoSuchProcess):
        readers.process_ram(4242)  # what memory/book.py calls


def test_without_libproc_a_process_is_its_rss(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.core.memory.readers import macos

    def missing() -> None:
        raise OSError("no proc_pid_rusage in libproc or libSystem")

    monkeypatch.setattr(macos, "load_proc_pid_rusage", missing)
    assert MacReader().process_ram(os.getpid()) == pytest.approx(psutil.Process().memory_info().rss, rel=0.5)


# ---- the pressure signal -----------------------------------------------------------------------------


def test_the_signal_is_a_memory_pressure_source_for_warn_and_critical() -> None:
    lib, sysctl = FakeLibdispatch(), FakeSysctl(M1_PRO_16GB)
    signal = DispatchPressureSignal(libdispatch=lib, sysctlbyname=sysctl)
    heard: list[tuple[int, str]] = []
    signal.start(lambda level: heard.append((level, threading.current_thread().name)))
    (source,) = lib.live()
    assert source.mask == DISPATCH_MEMORYPRESSURE_WARN | DISPATCH_MEMORYPRESSURE_CRITICAL and source.resumed
    assert lib.fire(PRESSURE_NORMAL) == 0  # not asked for
    sysctl.values["kern.memorystatus_vm_pressure_level"] = (INT, 2)
    assert lib.fire(DISPATCH_MEMORYPRESSURE_WARN) == 1
    sysctl.values["kern.memorystatus_vm_pressure_level"] = (INT, 4)
    lib.fire(DISPATCH_MEMORYPRESSURE_CRITICAL)
    assert heard == [(PRESSURE_WARNING, "fake-dispatch-queue"), (PRESSURE_CRITICAL, "fake-dispatch-queue")]
    assert signal.level() == PRESSURE_CRITICAL
    signal.stop()
    assert source.cancelled and lib.live() == [] and not lib.misuse
    assert lib.fire(DISPATCH_MEMORYPRESSURE_WARN) == 0 and len(heard) == 2


def test_without_the_sysctl_the_sources_own_level_is_used() -> None:
    lib = FakeLibdispatch()
    signal = DispatchPressureSignal(libdispatch=lib, sysctlbyname=FakeSysctl({}))
    heard: list[int] = []
    signal.start(heard.append)
    lib.fire(DISPATCH_MEMORYPRESSURE_CRITICAL)
    signal.stop()
    assert heard == [PRESSURE_CRITICAL] and signal.level() is None


def test_a_source_libdispatch_will_not_make_is_an_os_error() -> None:
    class Refusing(FakeLibdispatch):
        def dispatch_source_create(self, *args):  # noqa: ANN002, ANN201
            return None

    with pytest.raises(OSError, match="dispatch_source_create"):
        DispatchPressureSignal(libdispatch=Refusing()).start(lambda level: None)


class Checks:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1


async def test_warning_runs_the_check_at_once_not_at_the_next_tick(tmp_path: Path) -> None:
    lib, sysctl = FakeLibdispatch(), FakeSysctl(M1_PRO_16GB | {"kern.memorystatus_vm_pressure_level": (INT, 2)})
    checks, active = Checks(), [True]
    watch = PressureWatch(checks, lambda: active[0], interval=60, psi_path=tmp_path / "no-psi",
                          signal=DispatchPressureSignal(libdispatch=lib, sysctlbyname=sysctl))
    watch.start()
    try:
        assert watch.signal_registered and watch.signal_unavailable is None and watch.polling
        await asyncio.to_thread(lib.fire, DISPATCH_MEMORYPRESSURE_WARN)
        await until(lambda: checks.calls == 1)  # the tick is 60 s away
        assert watch.pressure_events == 1
        active[0] = False  # the last model unloaded
        watch._tick()  # the tick that finds it inactive
        assert not watch.polling
        await asyncio.to_thread(lib.fire, DISPATCH_MEMORYPRESSURE_WARN)
        await asyncio.sleep(0.05)
        assert checks.calls == 1 and watch.pressure_events == 1  # dropped on its own thread: no wake-up
        active[0] = True
        watch.wake()
        await asyncio.to_thread(lib.fire, DISPATCH_MEMORYPRESSURE_CRITICAL)
        await until(lambda: checks.calls == 2)
    finally:
        await watch.stop()
    (source,) = lib.sources.values()
    assert source.cancelled and lib.live() == [] and not watch.signal_registered


async def test_a_normal_level_is_not_pressure(tmp_path: Path) -> None:
    checks = Checks()
    watch = PressureWatch(checks, lambda: True, interval=60, psi_path=tmp_path / "no-psi", signal=None)
    watch.start()
    try:
        watch._on_signal(PRESSURE_NORMAL)
        await asyncio.sleep(0.02)
        assert checks.calls == 0 and watch.signal_name is None
    finally:
        await watch.stop()


async def test_a_signal_that_cannot_start_leaves_the_watch_polling(tmp_path: Path) -> None:
    class Refusing(FakeLibdispatch):
        def dispatch_source_create(self, *args):  # noqa: ANN002, ANN201
            return None

    checks = Checks()
    watch = PressureWatch(checks, lambda: True, interval=0.05, psi_path=tmp_path / "no-psi",
                          signal=DispatchPressureSignal(libdispatch=Refusing()))
    watch.start()
    try:
        await until(lambda: checks.calls >= 2)
        assert not watch.signal_registered and "dispatch_source_create" in watch.signal_unavailable
    finally:
        await watch.stop()


async def test_the_watch_takes_the_macs_signal_by_default(use_reader, tmp_path: Path) -> None:  # noqa: ANN001
    lib = FakeLibdispatch()
    use_reader(mac(libdispatch=lib))
    watch = PressureWatch(Checks(), lambda: True, interval=60, psi_path=tmp_path / "no-psi")
    watch.start()
    try:
        assert watch.signal_registered and watch.signal_name.startswith("macOS memory pressure")
    finally:
        await watch.stop()


# ---- siesta doctor on a Mac -----------------------------------------------------------------------------


def test_siesta_doctor_on_a_mac(use_reader, tmp_path: Path) -> None:  # noqa: ANN001
    use_reader(mac())
    items = {item.key: item for item in memory_items(psi_path=tmp_path / "no-psi")}
    assert items["ram"].value["limit"] == "Metal's recommendedMaxWorkingSetSize"
    assert items["ram"].shown() == ("10.7 GB for models and GPU (unified memory, by Metal's "
                                    "recommendedMaxWorkingSetSize) of 16.0 GB, 9.0 GB available")
    assert items["process_ram"].value == "proc_pid_rusage(RUSAGE_INFO_V2): ri_phys_footprint"
    assert items["pressure"].shown().startswith("macOS memory pressure notifications")
    assert "polling every 1.5 s" in items["pressure"].shown()
    assert pressure_source(tmp_path / "no-psi").value["signal_unavailable"] is None
    gpus = {item.key: item for item in gpu_items(GpuMemory)}
    assert gpus["gpus"].shown().startswith("none found (unified memory")


def test_siesta_doctor_says_why_the_macs_signal_is_not_used(use_reader, tmp_path: Path) -> None:  # noqa: ANN001
    class Refusing(FakeLibdispatch):
        def dispatch_source_create(self, *args):  # noqa: ANN002, ANN201
            return None

    use_reader(mac(libdispatch=Refusing()))
    item = pressure_source(tmp_path / "no-psi")
    assert item.shown().startswith("polling every 1.5 s while a model is loaded; no macOS memory pressure")
    assert "dispatch_source_create" in item.value["signal_unavailable"]


def test_sizes_in_the_fake_are_little_endian_ints() -> None:
    """The fake's own check: what sysctlbyname copies out reads back through the code's helper."""
    assert sysctl_int(FakeSysctl({"x": (QUAD, 2**40 + 5)}), "x") == 2**40 + 5
