"""Races, faults and hostile input: the items of the reliability issue, each one a test.

Results of the repeated runs are recorded in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import time
from pathlib import Path

import aiohttp
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.api.server import ApiServer
from app.core.config import atomic_write
from app.core.models.model import ModelState
from app.demo_model import write_tiny_model
from tests.conftest import pid_alive

pytestmark = pytest.mark.timeout(120)

RACE_ROUNDS = int(os.environ.get("SIESTA_RACE_ROUNDS", "200"))




@pytest.mark.llama
async def test_request_racing_its_models_unload_is_always_served(manager_factory, write_recipe, tmp_path, event_log):
    """A request lands just before, at, or just after the idle deadline, hundreds of times."""
    model_file = write_tiny_model(tmp_path / "tiny.gguf")
    write_recipe("tiny", f'backend = "llamacpp"\nmodel = "{model_file}"\nargs = ["-t", "1"]\nunload_timeout = "0.03s"\n')
    manager = await manager_factory()
    events = event_log(manager)
    model = manager.get("tiny")
    rng = random.Random(1234)
    pids_seen: list[int] = []
    for round_no in range(RACE_ROUNDS):
        lease = await asyncio.wait_for(model.acquire(keep_alive=0.03), 10)
        pid = lease.process.pid
        if pids_seen and pids_seen[-1] != pid:
            assert not pid_alive(pids_seen[-1]), "two server processes for one model"
        pids_seen.append(pid)
        lease.release()
        await asyncio.sleep(rng.uniform(0.0, 0.06))  # before, around, or after the 30 ms deadline
    last = await model.acquire(keep_alive=None)  # never
    last.release()
    assert model.effective_timeout() == (None, "request")  # the last request decides
    assert model.unload_at is None and model.state is ModelState.READY
    loads = events.reasons("tiny").count("loaded")
    unloads = sum(1 for e in events.events if e["reason"] == "idle" and e["model"]["state"] == "unloaded")
    assert loads == unloads + 1  # every load but the current one ended in exactly one unload
    assert 1 < loads <= RACE_ROUNDS + 1


async def test_timeout_changed_while_loading_busy_idle_and_unloading(manager_factory, write_recipe):
    write_recipe("a", fake=["--startup-delay", "0.3", "--ignore-sigterm"], unload_timeout="10m")
    manager = await manager_factory(stop_timeout=0.3)
    model = manager.get("a")
    # loading
    pending = asyncio.create_task(model.acquire())
    await asyncio.sleep(0.05)
    assert model.state is ModelState.LOADING
    await manager.set_model_timeout("a", 3600)
    lease = await pending
    # busy: no countdown, whatever the timeout
    await manager.set_model_timeout("a", 0.2)
    assert model.unload_at is None
    lease.release()
    assert model.unload_at == pytest.approx(model.idle_since + 0.2)
    # idle: recomputed
    await manager.set_model_timeout("a", 60)
    assert model.unload_at == pytest.approx(model.idle_since + 60)
    # unloading: the unload goes on; the next load uses the new value
    unloading = asyncio.create_task(manager.unload("a"))
    await asyncio.sleep(0.01)
    assert model.state is ModelState.UNLOADING
    await manager.set_model_timeout("a", 120)
    await unloading
    assert model.state is ModelState.UNLOADED and model.unload_at is None
    (await model.acquire()).release()
    assert model.effective_timeout() == (120, "recipe")


async def test_swap_under_load_every_request_completes_or_fails_clearly(front_door, write_recipe):
    write_recipe("a", fake=["--delay", "0.02", "--chunks", "5"])
    write_recipe("b", fake=["--delay", "0.02", "--chunks", "5"])
    manager, http, url = await front_door(max_loaded_models=1, load_timeout=20)
    outcomes: list[str] = []

    async def client(i: int) -> None:
        name = "ab"[i % 2]
        for _ in range(3):
            async with http.post(f"{url}/v1/chat/completions", json={"model": name, "stream": True}) as resp:
                if resp.status == 200:
                    body = await resp.read()
                    assert body.endswith(b"data: [DONE]\n\n")
                    outcomes.append("ok")
                else:
                    error = json.loads(await resp.read())["error"]
                    assert resp.status in (502, 503) and error["message"]
                    outcomes.append(error["code"])

    await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(16))), 90)
    assert len(outcomes) == 48
    assert outcomes.count("ok") == 48, outcomes  # fair swaps: no request fails
    assert sum(1 for m in manager.models.values() if m.pid) <= 1


async def test_load_is_cancelled_when_every_waiting_client_disconnects(front_door, write_recipe, event_log):
    write_recipe("slow", fake=["--startup-delay", "3"])
    manager, http, url = await front_door()
    events = event_log(manager)
    model = manager.get("slow")
    request = asyncio.create_task(http.post(f"{url}/v1/chat/completions", json={"model": "slow"}))
    await events.wait_for("slow", "loading", timeout=5)
    deadline = time.monotonic() + 5
    while not _slow_children() and time.monotonic() < deadline:  # its server process has started
        await asyncio.sleep(0.02)
    assert _slow_children() and model.state is ModelState.LOADING
    request.cancel()  # the only client goes away
    await events.wait_for("slow", "load_cancelled", timeout=5)
    assert model.state is ModelState.UNLOADED
    assert not _slow_children()


async def test_manual_load_is_not_cancelled_with_its_waiters(manager_factory, write_recipe):
    write_recipe("slow", fake=["--startup-delay", "0.5"])
    manager = await manager_factory()
    model = manager.get("slow")
    loading = asyncio.create_task(manager.load("slow"))
    await asyncio.sleep(0.05)
    waiter = asyncio.create_task(model.acquire())
    await asyncio.sleep(0.05)
    waiter.cancel()
    await loading
    assert model.state is ModelState.READY


def _slow_children() -> list[psutil.Process]:
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "--startup-delay" in proc.cmdline() and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            pass
    return found


async def test_persist_failure_reaches_the_user_and_recipe_is_intact(front_door, write_recipe, monkeypatch):
    path = write_recipe("a", unload_timeout="5m")
    before = path.read_bytes()
    manager, http, url = await front_door()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic_write.os, "fsync", full_disk)
    async with http.patch(f"{url}/api/v1/models/a", json={"unload_timeout": "10m"}) as resp:
        assert resp.status == 500
        error = (await resp.json())["error"]
    assert error["code"] == "persist_failed" and "No space left" in error["message"] and str(path) in error["message"]
    assert path.read_bytes() == before
    assert manager.get("a").effective_timeout() == (300, "recipe")
    assert [p.name for p in path.parent.iterdir()] == ["a.toml"]


async def test_huge_bodies_and_wrong_content_type(front_door, write_recipe):
    """Slow clients are tested in test_slow_clients.py."""
    write_recipe("a")
    manager, http, url = await front_door()
    async with http.post(f"{url}/v1/chat/completions", data=b"x" * (33 * 1024 * 1024)) as resp:
        assert resp.status == 413
    async with http.post(f"{url}/api/v1/load", data=b'{"model": "a"}', headers={"Content-Type": "text/plain"}) as resp:
        assert resp.status == 415
    async with http.post(f"{url}/api/v1/load", data=b"x" * 100_000, headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 413
    assert manager.get("a").state is ModelState.UNLOADED


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(["/api/v1/load", "/api/v1/unload", "/api/v1/models/a", "/api/v1/settings", "/v1/chat/completions"]),
    body=st.one_of(
        st.binary(max_size=200),
        st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                     lambda children: st.lists(children, max_size=3) | st.dictionaries(
                         st.sampled_from(["model", "all", "unload_timeout", "global_unload_timeout", "keep_alive",
                                          "max_loaded_models", "x"]), children, max_size=4),
                     max_leaves=8).map(lambda v: json.dumps(v).encode()),
    ),
)
def test_fuzzed_requests_never_cause_a_server_error(tmp_path_factory, path, body):
    """Any body gets a 2xx or a 4xx/503 in OpenAI's error shape, never a 500 or a hang."""
    result = asyncio.run(_fuzz_once(tmp_path_factory.mktemp("fuzz"), path, body))
    status, data = result
    assert status < 500 or status == 503, (status, data)
    if status >= 400:
        assert set(data["error"]) >= {"message", "type", "code"}


async def _fuzz_once(root: Path, path: str, body: bytes) -> tuple[int, dict]:
    from app.core.config.paths import Paths
    from app.core.config.settings import load_settings
    from app.core.manager import ModelManager

    paths = Paths(config_dir=root / "c", log_dir=root / "l", data_dir=root / "d")
    paths.recipes_dir.mkdir(parents=True)
    paths.recipe_file("a").write_text('backend = "command"\ncommand = ["/nonexistent/server", "{port}"]\n')
    manager = ModelManager(paths, load_settings(paths.settings_file), watch_files=False, use_reaper=False)
    await manager.start()
    server = ApiServer(manager)
    await server.start(port=0)
    try:
        async with aiohttp.ClientSession() as http:
            method = "PATCH" if path in ("/api/v1/models/a", "/api/v1/settings") else "POST"
            async with http.request(method, f"http://127.0.0.1:{server.port}{path}", data=body,
                                    headers={"Content-Type": "application/json"}) as resp:
                raw = await resp.read()
                return resp.status, json.loads(raw) if raw else {}
    finally:
        await server.stop()
        await manager.close()


@pytest.mark.soak
async def test_soak_no_growth_in_tasks_fds_or_memory(front_door, write_recipe):
    """Thousands of requests and load/unload cycles; tasks, fds and RSS stay flat after warm-up."""
    write_recipe("a")
    manager, http, url = await front_door()
    me = psutil.Process()

    async def cycle(n: int) -> None:
        for i in range(n):
            async with http.post(f"{url}/v1/chat/completions", json={"model": "a", "stream": i % 2 == 0}) as resp:
                await resp.read()
            if i % 50 == 49:
                await manager.unload("a")

    await cycle(500)
    gc.collect()
    base = (len(asyncio.all_tasks()), me.num_fds(), me.memory_info().rss)
    await cycle(3000)
    gc.collect()
    after = (len(asyncio.all_tasks()), me.num_fds(), me.memory_info().rss)
    assert after[0] <= base[0]
    assert after[1] <= base[1] + 2
    assert after[2] <= base[2] * 1.05
