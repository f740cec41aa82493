"""The lifecycle invariants of a model, against real fake-backend processes.

Each test drives ModelManager directly; the fake backend is a real server process
(tests/fakes/backend.py) on a real port, so starting, health polling, crashes and stops
are real. The same invariants run against the real llama-server in test_llama.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from app.core.config.clock import Clock
from app.core.models.model import ModelState, ModelUnavailable
from tests.conftest import pid_alive
from tests.portable import KILLED_RETURNCODE, kill_hard
from tests.waiting import until as _until

pytestmark = pytest.mark.timeout(60)


async def test_first_request_loads_and_concurrent_requests_share_one_load(manager_factory, write_recipe, event_log):
    write_recipe("a", fake=["--startup-delay", "0.3"])
    manager = await manager_factory()
    events = event_log(manager)
    model = manager.get("a")
    leases = await asyncio.gather(*(model.acquire() for _ in range(5)))
    assert model.state is ModelState.READY
    assert len({lease.process.pid for lease in leases}) == 1
    assert events.reasons("a").count("loading") == 1
    assert model.in_flight == 5
    for lease in leases:
        lease.release()
    assert model.in_flight == 0


async def test_idle_model_unloads_at_its_deadline_and_process_is_gone(manager_factory, write_recipe, event_log):
    write_recipe("a", unload_timeout="1s")
    manager = await manager_factory()
    events = event_log(manager)
    model = manager.get("a")
    pid = await _serve_one_request(model)
    idle_since = model.idle_since
    assert model.unload_at == pytest.approx(idle_since + 1.0)
    event = await events.wait_for("a", "idle", timeout=5)  # the unload event, reason idle
    assert event["model"]["state"] == "unloaded"
    assert time.time() >= idle_since + 1.0
    assert not pid_alive(pid)
    assert model.unload_at is None and model.idle_since is None


async def test_busy_model_never_counts_down(manager_factory, write_recipe):
    write_recipe("a", unload_timeout="0.3s", fake=[])
    manager = await manager_factory()
    model = manager.get("a")
    lease = await model.acquire()
    assert model.unload_at is None
    await asyncio.sleep(0.8)  # well past the timeout while busy: nothing may happen
    assert model.state is ModelState.READY
    assert model.unload_at is None
    before = time.time()
    lease.release()
    assert model.unload_at == pytest.approx(before + 0.3, abs=0.05)  # counted from the end of the request
    await _until(lambda: model.state is ModelState.UNLOADED)


async def test_timeout_zero_unloads_as_soon_as_idle(manager_factory, write_recipe, event_log):
    write_recipe("a", unload_timeout=0)
    manager = await manager_factory()
    events = event_log(manager)
    model = manager.get("a")
    lease = await model.acquire()
    lease.release()
    await events.wait_for("a", "idle", timeout=5, past=True)
    await _until(lambda: model.state is ModelState.UNLOADED)
    assert "idle" in events.reasons("a")[-1:]


async def test_keep_alive_of_the_last_request_to_finish_decides(manager_factory, write_recipe):
    write_recipe("a", unload_timeout="10m")
    manager = await manager_factory()
    model = manager.get("a")
    first = await model.acquire(keep_alive=60.0)
    second = await model.acquire(keep_alive=None)  # never
    second.release()
    assert model.unload_at is None  # still busy with the first
    first.release()
    assert model.effective_timeout() == (60.0, "request")
    assert model.unload_at == pytest.approx(time.time() + 60, abs=1)
    third = await model.acquire()  # no keep_alive: back to the recipe's timeout
    third.release()
    assert model.effective_timeout() == (600.0, "recipe")


async def test_timeout_change_recomputes_running_countdown_and_unloads_if_past(manager_factory, write_recipe, event_log):
    write_recipe("a", unload_timeout="10m")
    manager = await manager_factory()
    events = event_log(manager)
    model = manager.get("a")
    (await model.acquire()).release()
    assert model.unload_at is not None
    await asyncio.sleep(0.3)
    await manager.set_model_timeout("a", 0.1)  # the model has been idle longer than that already
    await events.wait_for("a", "idle", timeout=5, past=True)
    await _until(lambda: model.state is ModelState.UNLOADED)
    assert 'unload_timeout = "0.1s"' in manager.paths.recipe_file("a").read_text()


async def test_global_timeout_change_reaches_running_countdowns(manager_factory, write_recipe):
    write_recipe("a")
    manager = await manager_factory(global_unload_timeout="10m")
    model = manager.get("a")
    (await model.acquire()).release()
    assert model.effective_timeout() == (600.0, "global")
    manager.loaded_settings.sources["global_unload_timeout"] = "default"  # not pinned for this test
    await manager.set_setting("global_unload_timeout", "1h")
    assert model.unload_at == pytest.approx(model.idle_since + 3600)
    assert 'global_unload_timeout = "1h"' in manager.paths.settings_file.read_text()


async def test_every_unload_path_clears_the_countdown(manager_factory, write_recipe):
    write_recipe("a", unload_timeout="10m", group="g")
    write_recipe("b", unload_timeout="10m", group="g")
    manager = await manager_factory()
    a, b = manager.get("a"), manager.get("b")
    (await a.acquire()).release()
    assert a.unload_at is not None
    (await b.acquire()).release()  # group exclusivity unloads a
    assert a.state is ModelState.UNLOADED and a.unload_at is None and a.idle_since is None
    await manager.unload("b")
    assert b.state is ModelState.UNLOADED and b.unload_at is None
    (await a.acquire()).release()
    await manager.close()
    assert a.state is ModelState.UNLOADED and a.unload_at is None


async def test_group_loading_one_member_unloads_the_others(manager_factory, write_recipe, event_log):
    write_recipe("a", group="gpu")
    write_recipe("b", group="gpu")
    write_recipe("c")
    manager = await manager_factory()
    events = event_log(manager)
    a_pid = (lease := await manager.get("a").acquire()).process.pid
    lease.release()
    (await manager.get("c").acquire()).release()
    (await manager.get("b").acquire()).release()
    assert manager.get("a").state is ModelState.UNLOADED
    assert "group" in events.reasons("a")
    assert not pid_alive(a_pid)
    assert manager.get("c").state is ModelState.READY  # not in the group


async def test_max_loaded_models_evicts_least_recently_used_idle_model(manager_factory, write_recipe, event_log):
    for name in "abc":
        write_recipe(name)
    write_recipe("keep", unload_timeout="never")
    manager = await manager_factory(max_loaded_models=2)
    events = event_log(manager)
    (await manager.get("keep").acquire()).release()
    (await manager.get("a").acquire()).release()
    (await manager.get("b").acquire()).release()  # evicts a, never "keep"
    assert manager.get("a").state is ModelState.UNLOADED
    assert "evicted" in events.reasons("a")
    assert manager.get("keep").state is ModelState.READY
    lease_b = await manager.get("b").acquire()  # b busy, keep never: nothing can go
    manager.loaded_settings.values = manager.settings.model_copy(update={"load_timeout": 0.5})
    with pytest.raises(ModelUnavailable) as info:
        await manager.get("c").acquire()
    assert info.value.code == "no_capacity"
    assert manager.get("c").state is ModelState.FAILED
    lease_b.release()
    manager.loaded_settings.values = manager.settings.model_copy(update={"load_timeout": 10})
    (await manager.get("c").acquire()).release()  # b is idle now and goes
    assert manager.get("b").state is ModelState.UNLOADED


async def test_load_waits_for_a_busy_model_to_become_idle_then_evicts_it(manager_factory, write_recipe):
    write_recipe("a")
    write_recipe("b")
    manager = await manager_factory(max_loaded_models=1)
    lease_a = await manager.get("a").acquire()
    pending = asyncio.create_task(manager.get("b").acquire())
    await asyncio.sleep(0.2)
    assert not pending.done()
    lease_a.release()
    lease_b = await asyncio.wait_for(pending, 10)
    assert manager.get("a").state is ModelState.UNLOADED
    lease_b.release()


async def test_crash_is_noticed_at_once_and_next_request_reloads(manager_factory, write_recipe, event_log):
    write_recipe("a", fake=[])
    manager = await manager_factory()
    events = event_log(manager)
    model = manager.get("a")
    pid = await _serve_one_request(model)
    assert model.unload_at is not None
    kill_hard(pid)
    event = await events.wait_for("a", "crashed", timeout=5)
    assert event["model"]["state"] == "failed"
    assert event["model"]["exit_code"] == KILLED_RETURNCODE
    assert model.unload_at is None
    lease = await model.acquire()
    assert lease.process.pid != pid
    lease.release()


async def test_crash_loop_stops_retrying_until_manual_load(manager_factory, write_recipe, event_log):
    write_recipe("a", fake=["--exit-at-start", "7"])
    manager = await manager_factory()
    model = manager.get("a")
    for _ in range(3):
        with pytest.raises(ModelUnavailable) as info:
            await model.acquire()
        assert "code 7" in str(info.value)
    with pytest.raises(ModelUnavailable) as info:
        await model.acquire()
    assert info.value.code == "crash_loop"
    assert model.snapshot()["crash_loop"] is True
    with pytest.raises(ModelUnavailable) as info:
        await manager.load("a")  # a manual load tries again (and fails again here)
    assert info.value.code == "model_unavailable"
    assert "exiting at start" in info.value.log_tail


async def test_backend_that_never_becomes_healthy_fails_with_bounded_wait_and_log_tail(manager_factory, write_recipe):
    write_recipe("a", fake=["--never-healthy"])
    manager = await manager_factory(load_timeout=1)
    model = manager.get("a")
    started = time.monotonic()
    with pytest.raises(ModelUnavailable) as info:
        await model.acquire()
    assert time.monotonic() - started < 5
    assert "did not become healthy" in str(info.value)
    assert "fake backend listening" in info.value.log_tail
    assert model.pid is None


async def test_backend_ignoring_sigterm_is_killed_after_stop_timeout(manager_factory, write_recipe):
    write_recipe("a", fake=["--ignore-sigterm"])
    manager = await manager_factory(stop_timeout=0.5)
    model = manager.get("a")
    pid = await _serve_one_request(model)
    started = time.monotonic()
    await manager.unload("a")
    assert 0.4 < time.monotonic() - started < 4
    assert not pid_alive(pid)


async def test_request_arriving_while_unloading_waits_and_reloads(manager_factory, write_recipe):
    write_recipe("a", fake=["--ignore-sigterm"])
    manager = await manager_factory(stop_timeout=0.5)
    model = manager.get("a")
    old_pid = await _serve_one_request(model)
    unloading = asyncio.create_task(manager.unload("a"))
    await asyncio.sleep(0)
    assert model.state is ModelState.UNLOADING
    lease = await asyncio.wait_for(model.acquire(), 10)
    assert unloading.done()
    assert lease.process.pid != old_pid
    assert not pid_alive(old_pid)  # at most one server process per model
    lease.release()


async def test_manual_unload_waits_for_in_flight_requests(manager_factory, write_recipe):
    write_recipe("a")
    manager = await manager_factory(stop_timeout=5)
    model = manager.get("a")
    lease = await model.acquire()
    unloading = asyncio.create_task(manager.unload("a"))
    await asyncio.sleep(0.3)
    assert not unloading.done() and model.state is ModelState.UNLOADING
    lease.release()
    await asyncio.wait_for(unloading, 5)
    assert model.state is ModelState.UNLOADED


async def test_shutdown_leaves_no_child_process(manager_factory, write_recipe):
    write_recipe("a")
    write_recipe("b", fake=["--ignore-sigterm"])
    manager = await manager_factory(stop_timeout=0.5)
    pids = []
    for name in "ab":
        lease = await manager.get(name).acquire()
        pids.append(lease.process.pid)
        lease.release()
    await manager.close()
    assert not any(pid_alive(pid) for pid in pids)
    with pytest.raises(ModelUnavailable):
        await manager.get("a").acquire()


async def test_suspended_laptop_unloads_promptly_on_resume(manager_factory, write_recipe, event_log):
    """The monotonic clock stops during suspend; the wall clock does not. Jump the wall clock."""
    offset = [0.0]
    clock = Clock(wall=lambda: time.time() + offset[0], max_slice=0.05)
    write_recipe("a", unload_timeout="1h")
    manager = await manager_factory(clock=clock)
    events = event_log(manager)
    model = manager.get("a")
    (await model.acquire()).release()
    await asyncio.sleep(0.1)
    assert model.state is ModelState.READY
    offset[0] = 3601.0  # the machine slept for an hour
    await events.wait_for("a", "idle", timeout=2, past=True)
    await _until(lambda: model.state is ModelState.UNLOADED, timeout=2)


async def test_recipe_edits_apply_without_restart(manager_factory, write_recipe, event_log, paths):
    path = write_recipe("a", unload_timeout="10m")
    manager = await manager_factory(watch_files=True)
    events = event_log(manager)
    model = manager.get("a")
    (await model.acquire()).release()
    text = path.read_text().replace('"10m"', '"20m"')
    path.write_text(text)
    await events.wait_for("a", "timeout_changed", timeout=10)
    assert model.effective_timeout() == (1200.0, "recipe")
    path.write_text(text + 'args = ["--delay", "0"]\n')
    await _until(lambda: model.stale, timeout=10)
    assert model.snapshot()["stale"] is True
    write_recipe("new")
    await events.wait_for("new", "added", timeout=10)
    path.unlink()
    await events.wait_for("a", "removed", timeout=10)
    assert "a" not in manager.models
    assert model.state is ModelState.UNLOADED


async def test_broken_recipe_is_listed_as_failed_and_others_keep_working(manager_factory, write_recipe):
    write_recipe("bad", "backend = 'llamacpp'\nmodel = [1\n")
    write_recipe("wrongtype", "backend = 'llamacpp'\nmodel = 5\n")
    write_recipe("good")
    manager = await manager_factory()
    bad = manager.get("bad").snapshot()
    assert bad["state"] == "failed" and "bad.toml" in bad["error"] and "TOML" in bad["error"]
    wrong = manager.get("wrongtype").snapshot()
    assert "'model'" in wrong["error"]
    with pytest.raises(ModelUnavailable):
        await manager.get("bad").acquire()
    (await manager.get("good").acquire()).release()


async def _serve_one_request(model) -> int:
    """One request start to end (loading the model if needed); returns the server's pid."""
    lease = await model.acquire()
    lease.release()
    return lease.process.pid



async def test_preload_loads_at_start_and_counts_down(manager_factory, write_recipe, event_log):
    write_recipe("early", preload=True, unload_timeout="10m")
    write_recipe("late")
    manager = await manager_factory()
    model = manager.get("early")
    await _until(lambda: model.state is ModelState.READY)
    assert model.unload_at is not None  # idle from the moment it is ready
    assert manager.get("late").state is ModelState.UNLOADED


async def test_missing_model_file_is_a_clear_load_error(manager_factory, write_recipe, tmp_path):
    write_recipe("ghost", f'backend = "llamacpp"\nmodel = "{tmp_path}/nowhere.gguf"\n')
    manager = await manager_factory()
    with pytest.raises(ModelUnavailable) as info:
        await manager.get("ghost").acquire()
    assert "nowhere.gguf" in str(info.value) and "'model'" in str(info.value)
    assert manager.get("ghost").snapshot()["state"] == "failed"


async def test_concurrent_requests_for_two_group_members_all_get_served(manager_factory, write_recipe):
    """No ping-pong: each load finishes and serves its waiters before a rival takes the group."""
    write_recipe("a", group="g", fake=["--startup-delay", "0.2"])
    write_recipe("b", group="g", fake=["--startup-delay", "0.2"])
    manager = await manager_factory(stop_timeout=2)

    async def use(name: str) -> str:
        lease = await manager.get(name).acquire()
        await asyncio.sleep(0.05)
        lease.release()
        return name

    done = await asyncio.wait_for(asyncio.gather(*(use("ab"[i % 2]) for i in range(10))), 30)
    assert sorted(done) == sorted("ab" * 5)
    assert sum(1 for m in manager.models.values() if m.pid) == 1


async def test_load_waiting_for_admission_does_not_hold_a_slot(manager_factory, write_recipe):
    """Two loads at once under max_loaded_models = 1: the second waits for the first to go idle,
    and is not itself counted as holding the slot while it waits."""
    write_recipe("a", fake=["--startup-delay", "0.3"])
    write_recipe("b", fake=["--startup-delay", "0.3"])
    manager = await manager_factory(max_loaded_models=1, load_timeout=10)
    tasks = {asyncio.create_task(manager.get(n).acquire()) for n in "ab"}
    done, pending = await asyncio.wait(tasks, timeout=8, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1
    first = done.pop().result()
    first.release()  # now idle: the other load evicts it
    second = await asyncio.wait_for(pending.pop(), 8)
    assert second.model is not first.model and first.model.state is ModelState.UNLOADED
    second.release()
