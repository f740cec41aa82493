"""The lifecycle defects found by trying Siesta as a hostile client, a flaky network and an
impatient user would: each test failed before its fix.

A frozen event loop shows up here as a test that hits its (short) pytest timeout: the
timeout's signal interrupts the spinning code, so the test fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from app.core.config.durations import USE_GLOBAL
from app.core.models.backend import BackendProcess
from app.core.models.model import ModelState, ModelUnavailable
from tests.conftest import pid_alive
from tests.waiting import until as _until

pytestmark = pytest.mark.timeout(30)


# ---- 1. the event loop can spin forever ---------------------------------------------------

@pytest.mark.timeout(15)
async def test_client_leaving_while_a_failed_load_stops_its_server_does_not_freeze_the_loop(
        manager_factory, write_recipe):
    """The issue's repro: a server that never becomes healthy and ignores SIGTERM,
    load_timeout 1 s, stop_timeout 2 s, a client that gives up after 1.8 s (while the failed
    load is stopping the server); the next request must get an answer, not freeze Siesta."""
    write_recipe("stuck", fake=["--never-healthy", "--ignore-sigterm"])
    manager = await manager_factory(load_timeout=1, stop_timeout=2)
    model = manager.get("stuck")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(model.acquire(), 1.8)
    with pytest.raises(ModelUnavailable):
        await asyncio.wait_for(model.acquire(), 10)
    assert model.state is ModelState.FAILED
    assert model.pid is None


@pytest.mark.timeout(15)
async def test_a_load_cancelled_twice_settles_and_the_next_request_is_served(manager_factory, write_recipe):
    """The last waiter leaves (first cancel) and a manual unload arrives while the load is
    stopping its server (second cancel): the model must end up unloaded, not stuck loading."""
    write_recipe("slow", fake=["--startup-delay", "30", "--ignore-sigterm"])
    manager = await manager_factory(stop_timeout=1)
    model = manager.get("slow")
    request = asyncio.create_task(model.acquire())
    await _until(lambda: model.occupies_slot)  # admitted: its server is being started
    await asyncio.sleep(0.3)
    request.cancel()  # the only waiter goes: the load is cancelled and stops its server (1 s)
    await asyncio.sleep(0.1)
    await asyncio.wait_for(manager.unload("slow"), 10)  # a second cancel of the same load
    assert model.state is ModelState.UNLOADED
    write_recipe("slow", fake=[])  # a healthy server this time
    manager.reload_recipes()
    lease = await asyncio.wait_for(model.acquire(), 10)
    lease.release()
    assert model.state is ModelState.READY


@pytest.mark.timeout(15)
async def test_an_unload_whose_stop_raises_still_settles(manager_factory, write_recipe, monkeypatch):
    """An exception out of the unload (a log write failing with ENOSPC used to come out of
    the server's exit watch) must not leave the model 'unloading' while unload reports
    success: the next request would spin."""
    write_recipe("a", fake=[])
    manager = await manager_factory(stop_timeout=1)
    model = manager.get("a")
    (await model.acquire()).release()
    pid = model.pid
    real_stop = BackendProcess.stop

    async def stop_then_fail(self: BackendProcess, timeout: float) -> int:
        await real_stop(self, timeout)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(BackendProcess, "stop", stop_then_fail)
    await asyncio.wait_for(manager.unload("a"), 10)
    assert model.state is ModelState.UNLOADED and not pid_alive(pid)
    monkeypatch.setattr(BackendProcess, "stop", real_stop)
    lease = await asyncio.wait_for(model.acquire(), 10)
    lease.release()
    assert model.state is ModelState.READY


# ---- 3. a timeout change applies while a request's keep_alive is in force ------------------

async def test_own_timeout_change_replaces_the_requests_keep_alive(manager_factory, write_recipe, event_log):
    write_recipe("a", unload_timeout="10m")
    manager = await manager_factory()
    events = event_log(manager)
    model = manager.get("a")
    (await model.acquire(keep_alive=3600.0)).release()
    assert model.effective_timeout() == (3600.0, "request")
    await manager.set_model_timeout("a", 0.3)
    assert model.effective_timeout() == (0.3, "recipe")
    await events.wait_for("a", "idle", timeout=5)
    await _until(lambda: model.state is ModelState.UNLOADED)


async def test_setting_the_same_timeout_again_still_replaces_keep_alive(manager_factory, write_recipe, event_log):
    write_recipe("a", unload_timeout="10m")
    manager = await manager_factory()
    events = event_log(manager)
    model = manager.get("a")
    (await model.acquire(keep_alive=3600.0)).release()
    before = len(events.events)
    await manager.set_model_timeout("a", 600.0)  # the value already in the file
    assert model.effective_timeout() == (600.0, "recipe")
    assert "timeout_changed" in [e["reason"] for e in events.events[before:]]


async def test_use_global_replaces_keep_alive_but_a_global_change_does_not(manager_factory, write_recipe):
    write_recipe("a", unload_timeout="10m")
    manager = await manager_factory(global_unload_timeout="20m")
    manager.loaded_settings.sources["global_unload_timeout"] = "default"  # not pinned for this test
    model = manager.get("a")
    (await model.acquire(keep_alive=3600.0)).release()
    await manager.set_setting("global_unload_timeout", "30m")
    assert model.effective_timeout() == (3600.0, "request")  # the request was more specific
    await manager.set_model_timeout("a", USE_GLOBAL)
    assert model.effective_timeout() == (1800.0, "global")


async def test_hand_edit_of_unload_timeout_replaces_keep_alive_other_keys_do_not(
        manager_factory, write_recipe, paths):
    path = write_recipe("a", unload_timeout="10m")
    manager = await manager_factory()
    model = manager.get("a")
    (await model.acquire(keep_alive=3600.0)).release()
    path.write_text(path.read_text() + 'description = "edited"\n')
    manager._reload_recipe_file(path)
    assert model.effective_timeout() == (3600.0, "request")
    path.write_text(path.read_text().replace('"10m"', '"20m"'))
    manager._reload_recipe_file(path)
    assert model.effective_timeout() == (1200.0, "recipe")


async def test_a_request_finishing_after_the_change_sets_the_next_idle_period(manager_factory, write_recipe):
    write_recipe("a", unload_timeout="10m")
    manager = await manager_factory()
    model = manager.get("a")
    lease = await model.acquire(keep_alive=3600.0)
    await manager.set_model_timeout("a", 60.0)
    lease.release()  # the last request to finish decides
    assert model.effective_timeout() == (3600.0, "request")


# ---- 4. two servers for one model -----------------------------------------------------------

@pytest.mark.timeout(20)
async def test_recipe_recreated_while_its_server_stops_never_runs_two_servers(
        manager_factory, write_recipe, event_log):
    path = write_recipe("a", fake=["--ignore-sigterm"])
    manager = await manager_factory(stop_timeout=1, max_loaded_models=1)
    events = event_log(manager)
    model = manager.get("a")
    (await model.acquire()).release()
    old_pid = model.pid
    text = path.read_text()
    path.unlink()
    manager._reload_recipe_file(path)  # removed: its server is stopping (SIGTERM ignored: 1 s)
    await events.wait_for("a", "unloading", timeout=5, past=True)
    path.write_text(text)
    manager._reload_recipe_file(path)  # created again while the old server still runs
    assert pid_alive(old_pid)
    lease = await asyncio.wait_for(manager.get("a").acquire(), 10)
    try:
        assert not pid_alive(old_pid), "a second server started while the first one still ran"
        assert lease.process.pid != old_pid
    finally:
        lease.release()
    assert events.reasons("a").count("removed") == 0  # it came back before it was forgotten


@pytest.mark.timeout(20)
async def test_a_removed_model_still_stopping_counts_against_max_loaded_models(
        manager_factory, write_recipe):
    path = write_recipe("a", fake=["--ignore-sigterm"])
    write_recipe("b", fake=[])
    manager = await manager_factory(stop_timeout=1, max_loaded_models=1)
    (await manager.get("a").acquire()).release()
    old_pid = manager.models["a"].pid
    path.unlink()
    manager._reload_recipe_file(path)
    lease = await asyncio.wait_for(manager.get("b").acquire(), 10)
    try:
        assert not pid_alive(old_pid)  # b's server started only after a's had exited
    finally:
        lease.release()


async def test_removed_is_emitted_once(manager_factory, write_recipe, event_log):
    path = write_recipe("a", fake=[])
    manager = await manager_factory()
    events = event_log(manager)
    (await manager.get("a").acquire()).release()
    path.unlink()
    manager._reload_recipe_file(path)
    await events.wait_for("a", "removed", timeout=10)
    await asyncio.sleep(0.05)
    assert events.reasons("a").count("removed") == 1
    assert "a" not in manager.models


# ---- 6. preload on a recipe added or edited at run time --------------------------------------

async def test_preload_on_a_recipe_added_at_run_time_loads_it(manager_factory, write_recipe, event_log):
    manager = await manager_factory()
    events = event_log(manager)
    path = write_recipe("late", fake=[], preload=True)
    manager._reload_recipe_file(path)
    await events.wait_for("late", "loaded", timeout=10)
    assert manager.get("late").state is ModelState.READY


async def test_preload_turned_on_by_an_edit_loads_it(manager_factory, write_recipe, event_log):
    path = write_recipe("a", fake=[])
    manager = await manager_factory()
    events = event_log(manager)
    path.write_text(path.read_text() + "preload = true\n")
    manager._reload_recipe_file(path)
    await events.wait_for("a", "loaded", timeout=10)


# ---- 8. crash back-off --------------------------------------------------------------------------

@pytest.mark.timeout(30)
async def test_from_the_second_crash_a_request_waits_before_reloading(manager_factory, write_recipe):
    write_recipe("crashy", fake=["--exit-at-start", "1"])
    manager = await manager_factory(load_timeout=5)
    model = manager.get("crashy")
    for _ in range(2):  # two crashes: the first reload is at once
        started = time.monotonic()
        with pytest.raises(ModelUnavailable):
            await model.acquire()
        assert time.monotonic() - started < 0.9
    started = time.monotonic()
    with pytest.raises(ModelUnavailable):
        await model.acquire()  # the third try waits 1 s first, then crashes: a crash loop
    assert time.monotonic() - started >= 0.9
    with pytest.raises(ModelUnavailable) as crash_loop:
        await model.acquire()
    assert crash_loop.value.code == "crash_loop"


@pytest.mark.timeout(30)
async def test_a_back_off_longer_than_load_timeout_answers_crash_loop_with_retry_after(
        manager_factory, write_recipe):
    write_recipe("crashy", fake=["--exit-at-start", "1"])
    manager = await manager_factory(load_timeout=0.5)
    model = manager.get("crashy")
    for _ in range(2):
        with pytest.raises(ModelUnavailable):
            await model.acquire()
    started = time.monotonic()
    with pytest.raises(ModelUnavailable) as waited:
        await model.acquire()
    assert time.monotonic() - started < 0.5
    assert waited.value.code == "crash_loop" and waited.value.retry_after >= 1


@pytest.mark.timeout(30)
async def test_a_manual_load_skips_the_back_off(manager_factory, write_recipe):
    path = write_recipe("crashy", fake=["--exit-at-start", "1"])
    manager = await manager_factory(load_timeout=5)
    model = manager.get("crashy")
    for _ in range(2):
        with pytest.raises(ModelUnavailable):
            await model.acquire()
    started = time.monotonic()
    with pytest.raises(ModelUnavailable):
        await manager.load("crashy")
    assert time.monotonic() - started < 0.9


# ---- 10. smaller ones ---------------------------------------------------------------------------------

@pytest.mark.timeout(20)
async def test_a_crash_during_a_manual_unloads_drain_is_reported_as_failed(
        manager_factory, write_recipe, event_log):
    write_recipe("a", fake=["--exit-after", "1"])  # crashes on its first request
    manager = await manager_factory(stop_timeout=5)
    events = event_log(manager)
    model = manager.get("a")
    lease = await model.acquire()
    unloading = asyncio.create_task(manager.unload("a"))  # waits for the request in flight
    await events.wait_for("a", "unloading", timeout=5, past=True)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.post(f"{lease.base_url}/v1/chat/completions", json={"model": "a"}) as resp:
                await resp.read()
    lease.mark_upstream_failed()  # as the front door does when its request to the server breaks
    lease.release()
    await asyncio.wait_for(unloading, 10)
    assert model.state is ModelState.FAILED
    assert events.reasons("a")[-1] == "crashed"
    assert "manual" not in events.reasons("a")


async def test_a_recipe_with_an_invalid_file_name_is_listed_as_failed(manager_factory, paths):
    (paths.recipes_dir / "bad name.toml").write_text('backend = "llamacpp"\nmodel = "x.gguf"\n')
    manager = await manager_factory()
    listed = {s["name"]: s for s in manager.snapshots()}
    assert listed["bad name"]["state"] == "failed"
    assert "invalid model name" in listed["bad name"]["error"]
    with pytest.raises(ModelUnavailable):
        await manager.get("bad name").acquire()


# ---- 11. swaps under load are fair --------------------------------------------------------------

@pytest.mark.timeout(30)
async def test_a_swap_does_not_wait_for_steady_traffic_to_stop(manager_factory, write_recipe):
    """With one slot and steady traffic to a, a request for b is served as soon as a's
    requests in flight finish: new requests for a queue behind the swap."""
    write_recipe("a", fake=[])
    write_recipe("b", fake=[])
    manager = await manager_factory(max_loaded_models=1, load_timeout=5)
    a, b = manager.get("a"), manager.get("b")
    stop = asyncio.Event()

    async def steady_a() -> None:
        while not stop.is_set():  # always at least one request of a in flight
            lease = await a.acquire()
            await asyncio.sleep(0.05)
            lease.release()

    traffic = [asyncio.create_task(steady_a()) for _ in range(3)]
    await _until(lambda: a.in_flight > 0)
    started = time.monotonic()
    lease = await asyncio.wait_for(b.acquire(), 4)  # load_timeout is 5 s: no starving
    assert time.monotonic() - started < 4
    lease.release()
    stop.set()
    await asyncio.wait_for(asyncio.gather(*traffic), 15)


@pytest.mark.timeout(60)
async def test_a_load_whose_last_waiter_leaves_is_cancelled_every_time(manager_factory, write_recipe, event_log):
    """asyncio.wait_for on 3.11 swallows a cancellation that lands as its inner call ends;
    the health probe used it every 10 ms, so about half of these cancellations were lost
    and the model loaded anyway. Twenty rounds make a lost one show."""
    write_recipe("slow", fake=["--startup-delay", "30"])
    manager = await manager_factory(stop_timeout=1)
    events = event_log(manager)
    model = manager.get("slow")
    for _ in range(20):
        request = asyncio.create_task(model.acquire())
        await _until(lambda: model.occupies_slot)
        await asyncio.sleep(0.15)  # its server runs and is being probed
        request.cancel()
        await events.wait_for("slow", "load_cancelled", timeout=5)
        assert model.state is ModelState.UNLOADED and model.pid is None
