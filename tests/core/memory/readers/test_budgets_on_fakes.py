"""The budget, the floor, admission and relief on a fake Windows PC (NVIDIA and AMD) and a fake
Mac, end to end: real model servers (tests/fakes/backend.py) under the manager, with every
memory figure read through GpuMemory, read_ram and the readers of those OSes, built on the
fakes of DXGI, PDH, NVML, sysctl, proc_pid_rusage and Metal (tests/fakes/windows_gpu.py,
tests/fakes/darwin_memory.py; unverified on real hardware). Each live server holds a set
amount: on Windows PDH lists it under the server's pid, on the Mac proc_pid_rusage gives it as
the server's footprint, and the device's used (or RAM's available) memory follows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from app.core.manager import ModelManager
from app.core.memory.gpus import GpuMemory
from app.core.memory.readers.base import Reader
from app.core.memory.readers.macos import MacReader
from app.core.memory.readers.windows import WindowsReader
from app.core.models.model import ModelState, ModelUnavailable
from tests.conftest import pid_alive
from tests.fakes.darwin_memory import (
    DISPATCH_MEMORYPRESSURE_WARN,
    INT,
    M1_PRO_16GB,
    M1_PRO_METAL_CAP,
    FakeLibdispatch,
    FakeMetal,
    FakeProcPidRusage,
    FakeSysctl,
)
from tests.fakes.windows_gpu import (
    ADAPTER_COUNTER,
    PROCESS_COUNTER,
    RTX_4090,
    RX_7900_XTX,
    FakeAdapter,
    FakeDxgi,
    FakePdh,
    WddmNvml,
    adapter_instance,
    process_instance,
)

pytestmark = pytest.mark.timeout(60)

GB = 2**30


class Machine:
    """What the fakes need from the running manager: the pids of its model servers alive."""

    def __init__(self) -> None:
        self.manager: ModelManager | None = None

    def servers(self) -> list[int]:
        if self.manager is None:
            return []
        return [m.pid for m in self.manager.models.values() if m.pid is not None and pid_alive(m.pid)]


class WindowsPc(Machine):
    """One adapter; every model server holds ``each`` on it (PDH's GPU Process Memory), other
    programs ``other`` (a game raises it); the adapter's Dedicated Usage is the sum."""

    def __init__(self, adapter: FakeAdapter, *, each: int = 6 * GB, other: int = 2 * GB, nvml: Any = None) -> None:
        super().__init__()
        self.adapter, self.each, self.other, self.nvml = adapter, each, other, nvml
        self.pdh = FakePdh({ADAPTER_COUNTER: self._adapter, PROCESS_COUNTER: self._processes})
        self.reader = WindowsReader(dxgi=FakeDxgi([adapter]), pdh=self.pdh)

    def _adapter(self) -> dict[str, int | None]:
        return {adapter_instance(self.adapter): self.other + self.each * len(self.servers())}

    def _processes(self) -> dict[str, int | None]:
        return {process_instance(pid, self.adapter): self.each for pid in self.servers()}

    def gpus(self) -> GpuMemory:
        return GpuMemory(nvml=self.nvml, reader=self.reader)


class Mac(Machine):
    """A 16 GB Apple M1 Pro: Metal's cap, every model server's footprint ``each``, and RAM's
    available memory ``available`` less what the servers hold."""

    def __init__(self, *, each: int = 5 * GB, available: int = 12 * GB) -> None:
        super().__init__()
        self.each, self.available = each, available
        self.libdispatch, self.sysctl = FakeLibdispatch(), FakeSysctl(M1_PRO_16GB)
        self.reader = MacReader(sysctlbyname=self.sysctl, metal=FakeMetal(M1_PRO_METAL_CAP),
                                proc_pid_rusage=FakeProcPidRusage(self._footprints), libdispatch=self.libdispatch,
                                virtual_memory=self._vm)

    def _footprints(self) -> dict[int, int]:
        return {pid: self.each for pid in self.servers()}

    def _vm(self) -> SimpleNamespace:
        return SimpleNamespace(total=16 * GB, available=max(0, self.available - self.each * len(self.servers())))

    def gpus(self) -> GpuMemory:
        return GpuMemory(reader=self.reader)


async def start(machine: WindowsPc | Mac, use_reader: Callable[[Reader], Reader], paths: Any, make_settings: Any,
                **flags: Any) -> ModelManager:
    use_reader(machine.reader)  # read_ram, process_ram and the pressure watch take it
    manager = ModelManager(paths, make_settings(**flags), watch_files=False, use_reaper=False,
                           gpus_factory=machine.gpus)
    machine.manager = manager
    await manager.start()
    return manager


# ---- Windows --------------------------------------------------------------------------------------


def nvidia_pc() -> WindowsPc:
    return WindowsPc(RTX_4090, nvml=WddmNvml([(0x2684, "NVIDIA GeForce RTX 4090", 25_757_220_864, 0)]))


def amd_pc() -> WindowsPc:
    return WindowsPc(RX_7900_XTX)


PCS = pytest.mark.parametrize("make_pc", [nvidia_pc, amd_pc], ids=["nvidia", "amd"])


@PCS
async def test_windows_a_budget_in_percent_of_the_gpus_total(
        paths, make_settings, write_recipe, event_log, use_reader, make_pc) -> None:  # noqa: ANN001
    """45 % of the GPU's total (the RTX 4090's from NVML, 25,757,220,864 bytes; the Radeon's
    from DXGI, 24 GiB): 10.8 GB. Two 6 GB models do not fit together, so the idle one makes
    room; an 11 GB one never fits and is refused at once."""
    write_recipe("a", fake=[], memory_estimate="6GB")
    write_recipe("b", fake=[], memory_estimate="6GB")
    write_recipe("big", fake=[], memory_estimate="11GB")
    pc = make_pc()
    manager = await start(pc, use_reader, paths, make_settings, memory_budget="45%")
    events = event_log(manager)
    try:
        a = await manager.load("a")
        pid_a = a.pid
        assert manager.snapshot_of(a)["vram"] == 6 * GB  # measured: PDH's figure for its pid
        lease = await asyncio.wait_for(manager.get("b").acquire(), 15)
        try:
            assert not pid_alive(pid_a) and "evicted" in events.reasons("a")
        finally:
            lease.release()
        started = time.monotonic()
        with pytest.raises(ModelUnavailable) as refused:
            await manager.get("big").acquire()
        assert time.monotonic() - started < 2 and refused.value.code == "insufficient_memory"
        assert "needs 11.0 GB, more than the memory budget of 10.8 GB on GPU 0" in str(refused.value)
    finally:
        await manager.close()


@PCS
async def test_windows_a_game_starting_gets_the_idle_models_memory_back(
        paths, make_settings, write_recipe, event_log, use_reader, make_pc) -> None:  # noqa: ANN001
    """The GPU's used memory (PDH's GPU Adapter Memory) climbs past the floor: the idle model,
    which PDH shows holding 6 GB there, goes; the busy one stays, and is not loaded again into
    the same pressure."""
    write_recipe("idle", fake=[], memory_estimate="6GB")
    write_recipe("busy", fake=[], memory_estimate="6GB")
    pc = make_pc()
    manager = await start(pc, use_reader, paths, make_settings, free_memory_floor="6GB", load_timeout=2)
    events = event_log(manager)
    try:
        await manager.load("idle")
        lease = await manager.get("busy").acquire()
        assert [d.kind for d in pc.gpus().devices()] == [{0x10DE: "nvidia", 0x1002: "amd"}[pc.adapter.vendor_id]]
        pc.other = 13 * GB  # a game: 24 - 13 - 12 < 0 GB free; 5 GB once the idle one goes, under the 6 GB floor
        unloaded = await events.wait_for("idle", "memory_pressure", timeout=10)
        assert unloaded["model"]["state"] == "unloaded"
        await events.wait_for("busy", "memory_pressure_kept", timeout=10)
        assert manager.get("busy").state is ModelState.READY
        with pytest.raises(ModelUnavailable) as refused:
            await manager.get("idle").acquire()  # waits out load_timeout for the busy one
        assert refused.value.code == "insufficient_memory" and "GPU 0" in str(refused.value)
        lease.release()
    finally:
        await manager.close()


# ---- macOS ----------------------------------------------------------------------------------------


async def test_mac_a_budget_in_percent_of_metals_cap(
        paths, make_settings, write_recipe, event_log, use_reader) -> None:  # noqa: ANN001
    """90 % of Metal's 11.45 GB cap is 9.6 GB, not 90 % of the 16 GB of RAM (14.4 GB): a 10 GB
    model is refused at once, and two 5 GB ones do not fit together."""
    write_recipe("a", fake=[], memory_estimate="5GB")
    write_recipe("b", fake=[], memory_estimate="5GB")
    write_recipe("big", fake=[], memory_estimate="10GB")
    mac = Mac()
    manager = await start(mac, use_reader, paths, make_settings, memory_budget="90%")
    events = event_log(manager)
    try:
        started = time.monotonic()
        with pytest.raises(ModelUnavailable) as refused:
            await manager.get("big").acquire()
        assert time.monotonic() - started < 2
        assert "needs 10.0 GB, more than the memory budget of 9.6 GB on RAM" in str(refused.value)
        a = await manager.load("a")
        pid_a = a.pid
        assert manager.snapshot_of(a)["memory"] == 5 * GB  # its footprint, not its RSS
        lease = await asyncio.wait_for(manager.get("b").acquire(), 15)
        try:
            assert not pid_alive(pid_a) and "evicted" in events.reasons("a")
        finally:
            lease.release()
    finally:
        await manager.close()


async def test_mac_the_floor_and_the_pressure_signal(
        paths, make_settings, write_recipe, event_log, use_reader) -> None:  # noqa: ANN001
    """Another program takes RAM: available memory falls below the floor and macOS reports
    pressure. The idle model goes, the busy one stays."""
    write_recipe("idle", fake=[], memory_estimate="3GB")
    write_recipe("busy", fake=[], memory_estimate="3GB")
    mac = Mac(each=3 * GB, available=12 * GB)
    manager = await start(mac, use_reader, paths, make_settings, free_memory_floor="4GB")
    events = event_log(manager)
    try:
        await manager.load("idle")
        lease = await manager.get("busy").acquire()
        assert manager._pressure.signal_registered  # the Mac's signal, through the reader in place
        mac.available = 13 * GB // 2  # 0.5 GB left; 3.5 GB once the idle one goes: still under the 4 GB floor
        mac.sysctl.values["kern.memorystatus_vm_pressure_level"] = (INT, 2)  # warning
        await asyncio.to_thread(mac.libdispatch.fire, DISPATCH_MEMORYPRESSURE_WARN)
        await events.wait_for("idle", "memory_pressure", timeout=10)
        await events.wait_for("busy", "memory_pressure_kept", timeout=10)
        assert manager.get("busy").state is ModelState.READY
        lease.release()
    finally:
        await manager.close()
    assert mac.libdispatch.live() == []  # the watch stopped the source with the manager
