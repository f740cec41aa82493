"""Giving memory back at once and choosing what costs least, against real fake-server processes.

The GPU is a fake whose used memory is what other programs take (``other``) plus, for each
model whose server process is alive, that model's size: so the device's free figure rises
only when a victim's process has really exited, and falls while a "game" keeps allocating.
The per-process figure is unknown (as NVML under WDDM), so each model counts its
``memory_estimate``, which is also its size here.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from app.core.manager import ModelManager
from app.core.memory.gpus import GpuDevice
from app.core.models.model import ModelState
from tests.conftest import pid_alive

pytestmark = pytest.mark.timeout(60)

GB = 2**30


class SizedGpu:
    """One 24 GB GPU: ``other`` plus the size of every model whose server is alive."""

    def __init__(self, sizes: dict[str, int], other: int = 2 * GB) -> None:
        self.sizes = sizes
        self.other = other
        self.manager: ModelManager | None = None

    def _ours(self) -> int:
        if self.manager is None:
            return 0
        return sum(self.sizes.get(name, 0) for name, m in self.manager.models.items()
                   if m.pid is not None and pid_alive(m.pid))

    def devices(self) -> list[GpuDevice]:
        return [GpuDevice(id="gpu0", name="Fake GPU", kind="nvidia", total=24 * GB, used=self.other + self._ours())]

    def usage_by_device(self, pids: Any) -> dict[str, int | None]:
        return {"gpu0": None}

    def usage_of(self, pids: Any) -> None:
        return None

    def close(self) -> None:
        pass


async def _start(paths, make_settings, write_recipe, sizes: dict[str, int], **flags: Any) -> tuple[ModelManager, SizedGpu]:
    for name, size in sizes.items():
        write_recipe(name, fake=[], memory_estimate=f"{size}B")
    gpu = SizedGpu(sizes)
    manager = ModelManager(paths, make_settings(**flags), watch_files=False, gpus_factory=lambda: gpu)
    gpu.manager = manager
    await manager.start()
    return manager, gpu


async def test_a_game_starting_unloads_the_set_that_covers_it_together_without_waiting_on_the_device(
        paths, make_settings, write_recipe, event_log) -> None:
    """Three idle models (2, 3 and 4 GB); a game takes 5.5 GB more than the floor allows and keeps
    allocating. Two of them go together (the cheapest cover: the 4 GB one and one other; the
    third is not needed), with no wait for the device's figure, which never rises while the game allocates;
    one ``memory_given_back`` event names both with their bytes."""
    manager, gpu = await _start(paths, make_settings, write_recipe,
                                {"two": 2 * GB, "three": 3 * GB, "four": 4 * GB},
                                free_memory_floor=f"{8 * GB}B")
    events = event_log(manager)
    keep_allocating: asyncio.Task[None] | None = None
    try:
        for name in ("two", "three", "four"):
            await manager.load(name)
            manager.get(name).last_load_seconds = 0.2  # equal reloads: the bytes decide
        # 24 - 2 - 9 = 13 GB free; the game takes 10.5 GB more: 2.5 GB free, 5.5 GB under the 8 GB floor
        crossing = time.monotonic()
        gpu.other = 12 * GB + GB // 2

        async def allocate() -> None:
            while True:  # the game keeps taking 32 MB every 50 ms, so the free figure keeps falling
                await asyncio.sleep(0.05)
                gpu.other += 32 * 2**20

        keep_allocating = asyncio.create_task(allocate())
        given = await events.wait_for("four", "memory_given_back", timeout=10)
        took = time.monotonic() - crossing
        keep_allocating.cancel()
        # 5.5 GB and what the game took until the look: four and two (6 GB), or four and three
        # when the look came late; never one at a time, never all three
        unloaded = {u["name"]: u["bytes"] for u in given["detail"]["unloaded"]}
        assert len(unloaded) == 2 and "four" in unloaded, unloaded
        kept = ({"two", "three"} - set(unloaded)).pop()
        for name, held in unloaded.items():  # its GPU share and the RAM its server process held
            assert gpu.sizes[name] < held < gpu.sizes[name] + 200 * 2**20
        assert manager.get(kept).state is ModelState.READY
        (why,) = given["detail"]["why"]
        assert why.startswith("GPU 0, ") and "covers the" in why and f"kept {kept}: " in why
        # together: both began unloading before either had stopped
        order = [(e["model"]["name"], e["reason"]) for e in events.events
                 if e["reason"] in ("unloading", "memory_pressure")]
        assert set(order[:2]) == {(name, "unloading") for name in unloaded}, order
        assert took < 3, f"{took:.1f} s from the crossing to both servers' exit (the old policy waited 5 s)"
        snapshot = manager.snapshot_of(manager.get("four"))
        assert snapshot["last_unload_reason"] == "memory_pressure" and snapshot["unloaded_at"] is not None
    finally:
        if keep_allocating is not None:
            keep_allocating.cancel()
        await manager.close()


async def test_a_new_eight_gb_model_evicts_the_idle_eight_gb_one_not_the_small_ones(
        paths, make_settings, write_recipe, event_log) -> None:
    """Five idle 2 GB models (used first) and one idle 8 GB model fill the GPU; a new 8 GB load
    needs 5 GB more than is free. Least recently used would have taken three small ones one
    after the other; the cheapest cover is the one big model."""
    sizes = {f"small{i}": 2 * GB for i in range(5)} | {"big": 8 * GB, "new": 8 * GB}
    manager, _gpu = await _start(paths, make_settings, write_recipe, sizes, free_memory_floor="1GB",
                                 max_loaded_models=8)
    events = event_log(manager)
    try:
        for i in range(5):
            await manager.load(f"small{i}")
        await manager.load("big")
        # 24 - 2 - 18 = 4 GB free, 1 GB kept: 3 GB of room for 8 GB
        lease = await asyncio.wait_for(manager.get("new").acquire(), 15)
        lease.release()
        assert "evicted" in events.reasons("big")
        assert all(manager.get(f"small{i}").state is ModelState.READY for i in range(5))
    finally:
        await manager.close()


async def test_max_loaded_models_evicts_the_cheapest_to_bring_back(paths, make_settings, write_recipe) -> None:
    """With one slot too few, the model that loaded slowly stays and the quick one goes, even
    though the slow one was used less recently."""
    manager, _gpu = await _start(paths, make_settings, write_recipe, {"slow": GB, "quick": GB, "third": GB},
                                 max_loaded_models=2)
    try:
        await manager.load("slow")
        await manager.load("quick")
        manager.get("slow").last_load_seconds = 40.0  # as if it had taken 40 s
        manager.get("quick").last_load_seconds = 0.5
        await manager.load("third")
        assert manager.get("slow").state is ModelState.READY
        assert manager.get("quick").state is ModelState.UNLOADED
    finally:
        await manager.close()
