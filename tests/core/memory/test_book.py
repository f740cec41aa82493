"""What each model uses and is expected to use, as the manager and the API show it.

RAM is real (fake-backend processes and the real llama-server); GPU figures come from a
fake GPU reader at the boundary, so every GPU number asserted here was put in by the test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psutil
import pytest

from app.core.manager import ModelManager
from app.core.memory.book import HeldBytes
from app.core.memory.gpus import GpuDevice
from app.core.models.model import ModelState
from tests.waiting import until as _until

pytestmark = pytest.mark.timeout(60)

GIB = 2**30


class FakeGpus:
    """Stands in for app.core.memory.gpus.GpuMemory: one 24 GiB GPU; the models' servers use
    ``per_process`` bytes each on it."""

    def __init__(self, per_process: int = 3 * GIB) -> None:
        self.per_process = per_process
        self.closed = False

    def devices(self) -> list[GpuDevice]:
        return [GpuDevice(id="gpu0", name="Fake GPU", kind="nvidia", total=24 * GIB, used=10 * GIB)]

    def usage_of(self, pids: Any) -> dict[str, int] | None:
        return {"gpu0": self.per_process}

    def close(self) -> None:
        self.closed = True


async def _started(paths, make_settings, **kwargs: Any) -> ModelManager:
    manager = ModelManager(paths, make_settings(), watch_files=False, **kwargs)
    await manager.start()
    return manager


async def test_a_loaded_model_shows_its_ram_and_gpu_memory(paths, make_settings, write_recipe) -> None:
    write_recipe("a", fake=[])
    gpus = FakeGpus()
    manager = await _started(paths, make_settings, gpus_factory=lambda: gpus)
    try:
        model = await manager.load("a")  # returns once measured
        snap = manager.snapshot_of(model)
        rss = psutil.Process(model.pid).memory_info().rss
        assert 0.5 * rss < snap["memory"] < 2 * rss
        assert snap["vram"] == 3 * GIB
        assert snap["memory_by_device"] == {"ram": snap["memory"], "gpu0": 3 * GIB}
        assert snap["last_load_seconds"] is not None and snap["last_load_seconds"] >= 0
        system = await manager.system_memory()
        assert system["memory"]["devices"] == [{"id": "gpu0", "name": "Fake GPU", "kind": "nvidia",
                                                "total": 24 * GIB, "used": 10 * GIB, "free": 14 * GIB,
                                                "models": 3 * GIB}]
        ram = system["memory"]["ram"]
        assert ram["total"] == psutil.virtual_memory().total and ram["models"] == snap["memory"]
        await manager.unload("a")
        assert manager.snapshot_of(model)["vram"] is None and manager.snapshot_of(model)["memory"] is None
    finally:
        await manager.close()
    assert gpus.closed


async def test_without_gpus_vram_is_null_never_zero(paths, make_settings, write_recipe) -> None:
    write_recipe("a", fake=[])

    class NoGpus(FakeGpus):
        def devices(self) -> list[GpuDevice]:
            return []

    manager = await _started(paths, make_settings, gpus_factory=NoGpus)
    try:
        model = await manager.load("a")
        snap = manager.snapshot_of(model)
        assert snap["vram"] is None and set(snap["memory_by_device"]) == {"ram"}
        assert (await manager.system_memory())["memory"]["devices"] == []
    finally:
        await manager.close()


async def test_a_recipe_states_its_own_estimate(paths, make_settings, write_recipe) -> None:
    write_recipe("a", fake=[], memory_estimate="6GB")
    write_recipe("bad", fake=[], memory_estimate="lots")
    manager = await _started(paths, make_settings, gpus_factory=FakeGpus)
    try:
        snap = manager.snapshot_of(manager.get("a"))
        assert (snap["memory_estimate"], snap["memory_estimate_source"]) == (6 * GIB, "recipe")
        bad = manager.snapshot_of(manager.get("bad"))
        assert bad["state"] == "failed" and "memory_estimate" in bad["error"] and "lots" in bad["error"]
    finally:
        await manager.close()


async def test_a_gguf_recipe_is_estimated_before_any_load(paths, make_settings, write_recipe, tmp_path) -> None:
    from app.demo_model import write_tiny_model

    model_file = tmp_path / "tiny.gguf"
    write_tiny_model(model_file)
    write_recipe("tiny", f'backend = "llamacpp"\nmodel = "{model_file}"\nargs = ["--ctx-size", "512"]\n')
    manager = await _started(paths, make_settings, gpus_factory=FakeGpus)
    try:
        model = manager.get("tiny")
        manager.snapshot_of(model)  # asks for it; it is read off the loop
        await _until(lambda: manager.snapshot_of(model)["memory_estimate"] is not None)
        snap = manager.snapshot_of(model)
        assert snap["memory_estimate_source"] == "gguf" and snap["state"] == "unloaded"
        assert model_file.stat().st_size < snap["memory_estimate"] < 256 * 2**20
    finally:
        await manager.close()


async def test_what_a_load_measured_is_remembered_across_restarts(paths, make_settings, write_recipe) -> None:
    write_recipe("a", fake=[])
    manager = await _started(paths, make_settings, gpus_factory=FakeGpus)
    try:
        measured = manager.snapshot_of(await manager.load("a"))
        snap = manager.snapshot_of(manager.get("a"))
        assert snap["memory_estimate_source"] == "measured"
        assert snap["memory_estimate"] == measured["memory"] + 3 * GIB
    finally:
        await manager.close()
    await _until(lambda: paths.memory_file.exists())
    again = await _started(paths, make_settings, gpus_factory=FakeGpus)
    try:
        model = again.get("a")
        again.snapshot_of(model)
        await _until(lambda: again.snapshot_of(model)["memory_estimate"] is not None)
        snap = again.snapshot_of(model)
        assert model.state is ModelState.UNLOADED
        assert (snap["memory_estimate"], snap["memory_estimate_source"]) == (measured["memory"] + 3 * GIB, "measured")
        write_recipe("a", fake=["--chunks", "9"])  # other arguments: that measurement no longer applies
        again.reload_recipes()
        await _until(lambda: again.snapshot_of(model)["memory_estimate_source"] != "measured", 5)
    finally:
        await again.close()


async def test_a_broken_state_file_is_reported_and_replaced(paths, make_settings, write_recipe, caplog) -> None:
    paths.memory_file.parent.mkdir(parents=True, exist_ok=True)
    paths.memory_file.write_text("{not json")
    write_recipe("a", fake=[])
    manager = await _started(paths, make_settings, gpus_factory=FakeGpus)
    try:
        assert "cannot read the remembered memory figures" in caplog.text
        await manager.load("a")
        await _until(lambda: paths.memory_file.read_text().startswith("{\n"))
        assert json.loads(paths.memory_file.read_text())["measured"]
    finally:
        await manager.close()


async def test_system_endpoint(front_door, write_recipe) -> None:
    write_recipe("a", fake=[])
    manager, http, url = await front_door()
    async with http.get(f"{url}/api/v1/system") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert set(body["memory"]) == {"ram", "devices"}
    assert body["memory"]["ram"]["total"] > 0 and body["memory"]["ram"]["models"] == 0
    async with http.post(f"{url}/api/v1/load", json={"model": "a"}) as resp:
        loaded = await resp.json()
    assert loaded["memory"] > 1_000_000 and "memory_by_device" in loaded and "memory_estimate" in loaded
    async with http.get(f"{url}/api/v1/system") as resp:
        assert (await resp.json())["memory"]["ram"]["models"] == loaded["memory"]


@pytest.mark.llama
async def test_what_llama_server_printed_replaces_the_estimate(paths, make_settings, write_recipe, tmp_path) -> None:
    """At log verbosity 4 this llama-server prints its buffers (model, KV, compute); they
    become the recipe's measured figure."""
    from app.core.memory.gguf_estimate import parse_buffer_sizes
    from app.demo_model import write_tiny_model

    model_file = tmp_path / "tiny.gguf"
    write_tiny_model(model_file)
    write_recipe("tiny", f'backend = "llamacpp"\nmodel = "{model_file}"\n'
                         'args = ["--ctx-size", "512", "-t", "1", "-lv", "4"]\n')
    manager = await _started(paths, make_settings, gpus_factory=FakeGpus)
    try:
        model = await manager.load("tiny")
        await model.process.log.flushed()  # the log is written off the loop
        printed = parse_buffer_sizes(Path(manager.snapshot_of(model)["log_file"]).read_text().splitlines())
        assert printed and set(printed) == {"ram"}
        snap = manager.snapshot_of(model)
        assert snap["memory_estimate_source"] == "measured"
        assert snap["memory_estimate"] == sum(printed.values())
    finally:
        await manager.close()


class TwoGpus(FakeGpus):
    """Two 24 GiB GPUs; ``figures`` is what each server holds on each, None where the
    per-process figure cannot be had (NVML under Windows' WDDM, or in a container)."""

    def __init__(self, figures: dict[str, int | None]) -> None:
        super().__init__()
        self.figures = figures

    def devices(self) -> list[GpuDevice]:
        return [GpuDevice(id=i, name="Fake GPU", kind="nvidia", total=24 * GIB, used=10 * GIB) for i in ("gpu0", "gpu1")]

    def usage_by_device(self, pids: Any) -> dict[str, int | None]:
        return dict(self.figures)

    def usage_of(self, pids: Any) -> dict[str, int] | None:
        raise AssertionError("the book reads each device's figure where the reader gives them")


async def test_a_measured_gpu_figure_replaces_the_estimate(paths, make_settings, write_recipe) -> None:
    write_recipe("a", fake=[], memory_estimate="6GB")
    manager = await _started(paths, make_settings, gpus_factory=FakeGpus)  # 3 GiB per server
    try:
        model = manager.get("a")
        assert manager.memory.held(model, "gpu0") == HeldBytes(0, "none")  # not loaded
        await manager.load("a")
        assert manager.memory.held(model, "gpu0") == HeldBytes(3 * GIB, "measured")
        assert manager.memory.held(model, "ram") == HeldBytes(manager.snapshot_of(model)["memory"], "measured")
        assert manager.memory.held(model, "gpu1") == HeldBytes(0, "measured")  # measured as none there
    finally:
        await manager.close()


async def test_a_ram_only_measurement_keeps_the_gpu_estimate(paths, make_settings, write_recipe) -> None:
    """The reader gives only a whole figure, and cannot have it (None): RAM is measured, the GPU
    is not; the recipe's total stays on the first GPU, where admission placed it."""

    class Blind(FakeGpus):
        def usage_of(self, pids: Any) -> dict[str, int] | None:
            return None

    write_recipe("a", fake=[], memory_estimate="6GB")
    manager = await _started(paths, make_settings, gpus_factory=Blind)
    try:
        model = await manager.load("a")
        snap = manager.snapshot_of(model)
        assert snap["vram"] is None and set(snap["memory_by_device"]) == {"ram"}  # shown: only what was measured
        assert manager.memory.held(model, "gpu0") == HeldBytes(6 * GIB, "estimate")
        assert manager.memory.held(model, "ram") == HeldBytes(snap["memory"], "measured")
    finally:
        await manager.close()


async def test_each_gpu_is_measured_or_estimated_on_its_own_and_remembered_so(
        paths, make_settings, write_recipe) -> None:
    """A first load measures both GPUs; a second one can read gpu1 only: gpu1's new figure
    replaces the remembered one, gpu0 keeps what was remembered for it, in what the book
    counts now and in what it remembers for the next load."""
    write_recipe("a", fake=[])
    gpus = TwoGpus({"gpu0": 3 * GIB, "gpu1": 1 * GIB})
    manager = await _started(paths, make_settings, gpus_factory=lambda: gpus)
    try:
        model = await manager.load("a")
        assert manager.memory.held(model, "gpu0") == HeldBytes(3 * GIB, "measured")
        await manager.unload("a")
        gpus.figures = {"gpu0": None, "gpu1": 2 * GIB}
        await manager.load("a")
        snap = manager.snapshot_of(model)
        assert snap["vram"] is None  # one GPU unknown: no total is shown
        assert manager.memory.held(model, "gpu0") == HeldBytes(3 * GIB, "estimate")
        assert manager.memory.held(model, "gpu1") == HeldBytes(2 * GIB, "measured")
        estimate = manager.memory.estimate_of(model.recipe)
        assert estimate is not None and estimate.source == "measured"
        assert estimate.by_device == {"ram": snap["memory"], "gpu0": 3 * GIB, "gpu1": 2 * GIB}
    finally:
        await manager.close()
