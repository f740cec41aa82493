"""A Lemonade server as a remote (``kind = "lemonade"``), through a real ModelManager and
front door, against the fake of :mod:`tests.fakes.lemonade`: its models in Siesta's lists,
chats routed to its ``/api/v1`` routes, load and unload, Siesta's own countdown unloading
an idle model (Lemonade has no idle clock Siesta can set), and a Lemonade that does not
answer."""

from __future__ import annotations

import asyncio
import socket
import time
import tomllib
from typing import Any

import aiohttp
import pytest

from app.core.config.clock import Clock
from app.core.remotes.config import RemoteConfig
from app.core.remotes.engine_api import RemoteRefused
from app.core.remotes.lemonade_engine import LemonadeEngine
from tests.fakes.lemonade import FakeLemonade
from tests.fakes.remote import chat, get_json, until

pytestmark = pytest.mark.timeout(60)

KEY = "lemonade-key-for-this-remote-only"
QWEN = "Qwen3-0.6B-GGUF"
GEMMA = "Gemma-3-4b-it-GGUF"
HYBRID = "Llama-3.2-1B-Instruct-Hybrid"


@pytest.fixture
async def lemonade():
    fake = FakeLemonade([QWEN, GEMMA, HYBRID], api_key=KEY)
    await fake.start()
    yield fake
    await fake.stop()


def write_settings(paths, url: str) -> None:
    paths.settings_file.write_text(
        "# Siesta settings written by a test: this comment stays\n"
        "[remotes.lem]\n"
        'kind = "lemonade"\n'
        f'url = "{url}"\n'
        f'api_key = "{KEY}"  # the key for this remote only\n',
        encoding="utf-8")


async def listed(manager, *models: str) -> None:
    remote = manager.remotes.remotes["lem"]
    await until(lambda: all(m in remote.views for m in models), what=f"lem to list {models}")


def unloads(fake: FakeLemonade) -> list[Any]:
    return [c.body for c in fake.calls_to("/api/v1/unload")]


# ---- listing ------------------------------------------------------------------------------------


async def test_lists_downloaded_models_and_the_loaded_ones(lemonade, front_door, paths):
    lemonade.load_now(GEMMA, busy=True)  # another client's request runs on it
    write_settings(paths, lemonade.url)
    manager, http, url = await front_door()
    remote = manager.remotes.remotes["lem"]
    await listed(manager, QWEN, GEMMA, HYBRID)

    models = {m["name"]: m for m in (await get_json(http, f"{url}/api/v1/models"))["models"]}
    qwen, gemma = models[f"lem/{QWEN}"], models[f"lem/{GEMMA}"]
    assert qwen["remote"] == "lem" and qwen["remote_kind"] == "lemonade" and qwen["remote_model"] == QWEN
    assert qwen["state"] == "unloaded" and qwen["memory"] is None and qwen["unloads_in"] is None
    assert models[f"lem/{HYBRID}"]["state"] == "unloaded"
    assert gemma["state"] == "ready" and gemma["in_flight"] == 1  # busy on Lemonade: no countdown
    assert gemma["unloads_in"] is None and gemma["unload_timeout"] == 300 and gemma["can_load"] is True

    v1 = {m["id"]: m for m in (await get_json(http, f"{url}/v1/models"))["data"]}
    assert v1[f"lem/{QWEN}"] == {**v1[f"lem/{QWEN}"], "owned_by": "lem", "state": "unloaded"}
    assert v1[f"lem/{GEMMA}"]["state"] == "ready"
    (described,) = (await get_json(http, f"{url}/api/v1/remotes"))["remotes"]
    assert described == {**described, "name": "lem", "kind": "lemonade", "api_key": "(set)", "status": "ok",
                         "models": 3}
    assert lemonade.calls and all(c.headers.get("Authorization") == f"Bearer {KEY}" for c in lemonade.calls)

    # once Lemonade's request ends, Siesta's own countdown starts (from when it saw it idle)
    lemonade.loaded[GEMMA]["is_busy"] = False

    async def counting_down() -> dict[str, Any] | None:
        snap = await get_json(http, f"{url}/api/v1/models/lem/{GEMMA}")
        return snap if snap["unloads_in"] is not None else None

    snap = await until(counting_down, poke=remote.poke, what="Siesta's countdown for an idle Lemonade model")
    assert 290 < snap["unloads_in"] <= 300 and snap["in_flight"] == 0 and snap["timeout_source"] == "global"


async def test_an_answer_in_the_wrong_shape_is_a_clear_error_not_a_crash(lemonade, front_door, paths):
    lemonade.bad_shape = True
    write_settings(paths, lemonade.url)
    manager, http, url = await front_door()
    remote = manager.remotes.remotes["lem"]
    await until(lambda: remote.status == "error", what="the remote to be in error")
    (described,) = (await get_json(http, f"{url}/api/v1/remotes"))["remotes"]
    assert "expected a JSON object from /api/v1/health" in described["error"]
    assert (await get_json(http, f"{url}/api/v1/models"))["models"] == []


# ---- requests -----------------------------------------------------------------------------------


async def test_chat_goes_to_lemonades_api_v1_routes_by_qualified_and_bare_name(lemonade, front_door, paths):
    write_settings(paths, lemonade.url)
    manager, http, url = await front_door()
    await listed(manager, QWEN)
    for name in (f"lem/{QWEN}", QWEN):
        status, body = await chat(http, url, name, keep_alive="2m")
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == "hello from lemonade" and body["model"] == QWEN
    sent = lemonade.calls_to("/api/v1/chat/completions")
    assert len(sent) == 2 and lemonade.calls_to("/v1/chat/completions") == []
    assert all(c.body["model"] == QWEN and "keep_alive" not in c.body for c in sent)
    assert all(c.headers["Authorization"] == f"Bearer {KEY}" for c in sent)
    snap = await get_json(http, f"{url}/api/v1/models/lem/{QWEN}")
    assert snap["unload_timeout"] == 120 and snap["timeout_source"] == "request"  # Siesta keeps keep_alive here
    status, body = await chat(http, url, "lem/nope")
    assert status == 404 and "has not been found" in body["error"]["message"]


async def test_load_and_unload_through_the_management_api(lemonade, front_door, paths):
    write_settings(paths, lemonade.url)
    manager, http, url = await front_door()
    await listed(manager, HYBRID)
    lemonade.load_gate = asyncio.Event()

    async def load() -> tuple[int, Any]:
        async with http.post(f"{url}/api/v1/load", json={"model": f"lem/{HYBRID}"}) as resp:
            return resp.status, await resp.json()

    loading = asyncio.create_task(load())
    call = await lemonade.wait_for_call(lambda c: c.path == "/api/v1/load")
    assert call.body == {"model_name": HYBRID}
    await asyncio.sleep(0.1)
    assert not loading.done()  # Lemonade answers once the model is loaded
    lemonade.load_gate.set()
    status, body = await loading
    assert status == 200, body
    assert body["name"] == f"lem/{HYBRID}" and body["state"] == "ready"
    assert 290 < body["unloads_in"] <= 300  # Siesta's countdown starts at the load

    async with http.post(f"{url}/api/v1/unload", json={"model": f"lem/{HYBRID}"}) as resp:
        body = await resp.json()
    assert resp.status == 200 and body["state"] == "unloaded" and body["unloads_in"] is None
    assert unloads(lemonade) == [{"model_name": HYBRID}] and HYBRID not in lemonade.loaded

    async with http.post(f"{url}/api/v1/unload", json={"model": f"lem/{HYBRID}"}) as resp:
        body = await resp.json()
    assert resp.status == 404 and body["error"]["code"] == "remote_refused"
    assert "Model not loaded" in body["error"]["message"]


# ---- Siesta's countdown -------------------------------------------------------------------------


async def test_siestas_countdown_unloads_an_idle_model_through_api_v1_unload(lemonade, front_door, paths,
                                                                            event_log):
    write_settings(paths, lemonade.url)
    manager, http, url = await front_door(global_unload_timeout=0.3)
    events = event_log(manager)
    await listed(manager, QWEN)

    lemonade.chat_gate = asyncio.Event()
    answering = asyncio.create_task(chat(http, url, f"lem/{QWEN}"))
    await lemonade.wait_for_call(lambda c: c.path == "/api/v1/chat/completions")
    # a model with a request in flight never counts down: no countdown is armed at all
    view = manager.remotes.remotes["lem"].views[QWEN]
    assert view.in_flight == 1 and view.countdown is None
    assert manager.snapshot_by_name(f"lem/{QWEN}")["unload_at"] is None
    assert unloads(lemonade) == []
    lemonade.chat_gate.set()
    assert (await answering)[0] == 200
    ended = time.monotonic()

    await lemonade.wait_for_call(lambda c: c.path == "/api/v1/unload")
    assert time.monotonic() - ended >= 0.25
    assert unloads(lemonade) == [{"model_name": QWEN}] and QWEN not in lemonade.loaded
    await events.wait_for(f"lem/{QWEN}", "unloaded", past=True)
    await until(lambda: manager.remotes.remotes["lem"].views[QWEN].info.state == "unloaded", what="unloaded")


async def test_a_timeout_set_for_a_lemonade_model_is_kept_in_settings_and_moves_its_countdown(
        lemonade, front_door, paths):
    lemonade.load_now(QWEN)
    write_settings(paths, lemonade.url)
    manager, http, url = await front_door()
    await listed(manager, QWEN)
    await until(lambda: manager.remotes.remotes["lem"].views[QWEN].unload_at is not None, what="a countdown")

    async with http.patch(f"{url}/api/v1/models/lem/{QWEN}", json={"unload_timeout": "1s"}) as resp:
        body = await resp.json()
    assert resp.status == 200, body
    assert body["unload_timeout"] == 1 and body["timeout_source"] == "remote"
    text = paths.settings_file.read_text(encoding="utf-8")
    assert "# Siesta settings written by a test: this comment stays" in text
    assert "# the key for this remote only" in text
    assert tomllib.loads(text)["remotes"]["lem"]["timeouts"] == {QWEN: "1s"}
    await lemonade.wait_for_call(lambda c: c.path == "/api/v1/unload", timeout=5)
    assert unloads(lemonade) == [{"model_name": QWEN}]

    async with http.patch(f"{url}/api/v1/models/lem/{QWEN}", json={"unload_timeout": "default"}) as resp:
        assert resp.status == 200
    assert "timeouts" not in tomllib.loads(paths.settings_file.read_text(encoding="utf-8"))["remotes"]["lem"]


async def test_a_model_loaded_again_elsewhere_counts_down_from_when_siesta_saw_it(lemonade, front_door, paths,
                                                                                  event_log):
    wall = [1_000_000.0]
    write_settings(paths, lemonade.url)
    manager, http, url = await front_door(clock=Clock(wall=lambda: wall[0], max_slice=0.02),
                                          global_unload_timeout=60)
    events = event_log(manager)
    remote = manager.remotes.remotes["lem"]
    await listed(manager, QWEN)
    assert (await chat(http, url, f"lem/{QWEN}"))[0] == 200
    await until(lambda: remote.views[QWEN].unload_at == 1_000_060.0, poke=remote.poke, what="the countdown")
    wall[0] = 1_000_061.0
    await lemonade.wait_for_call(lambda c: c.path == "/api/v1/unload")
    await until(lambda: remote.views[QWEN].info.state == "unloaded", poke=remote.poke, what="unloaded")

    wall[0] = 1_002_000.0
    lemonade.load_now(QWEN)  # another client loads it on Lemonade
    remote.poke()
    loaded = await events.wait_for(f"lem/{QWEN}", "loaded")
    assert loaded["model"]["unload_at"] == 1_002_060.0
    await asyncio.sleep(0.2)
    assert len(unloads(lemonade)) == 1


# ---- a Lemonade that does not answer ---------------------------------------------------------------


async def test_an_unreachable_lemonade_lists_nothing_and_answers_502_at_once(front_door, paths, write_recipe):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    write_recipe("local")
    write_settings(paths, f"http://127.0.0.1:{port}")
    manager, http, url = await front_door()
    remote = manager.remotes.remotes["lem"]
    await until(lambda: remote.status == "unreachable", what="the remote to be unreachable")

    (described,) = (await get_json(http, f"{url}/api/v1/remotes"))["remotes"]
    assert described["status"] == "unreachable" and f":{port}" in described["error"] and described["models"] == 0
    assert [m["name"] for m in (await get_json(http, f"{url}/api/v1/models"))["models"]] == ["local"]
    assert [m["id"] for m in (await get_json(http, f"{url}/v1/models"))["data"]] == ["local"]

    started = time.monotonic()
    status, body = await chat(http, url, f"lem/{QWEN}")
    assert status == 502 and body["error"]["code"] == "remote_unreachable" and body["error"]["remote"] == "lem"
    assert time.monotonic() - started < 1.5
    async with http.post(f"{url}/api/v1/load", json={"model": f"lem/{QWEN}"}) as resp:
        assert resp.status == 502 and (await resp.json())["error"]["code"] == "remote_unreachable"
    status, body = await chat(http, url, "local")  # local models keep working
    assert status == 200 and body["pid"] == manager.get("local").pid


# ---- the engine on its own ----------------------------------------------------------------------------


async def test_routes_paths_and_shapes():
    async with aiohttp.ClientSession() as http:
        engine = LemonadeEngine(RemoteConfig("lem", "lemonade", "http://127.0.0.1:13305"), http)
        assert engine.openai_url("/v1/chat/completions") == "http://127.0.0.1:13305/api/v1/chat/completions"
        assert engine.probe_path == "/api/v1/health" and engine.siesta_counts_idle and engine.can_load
        answers: dict[str, Any] = {}

        async def answer(method: str, path: str, body: Any = None, **kw: Any) -> Any:
            return answers[path]

        engine.call = answer  # type: ignore[method-assign]
        # before multi-model support, health named one model as model_loaded
        answers.update({"/api/v1/models": {"data": [{"id": QWEN}, {"id": GEMMA}, {"no": "id"}]},
                        "/api/v1/health": {"status": "ok", "model_loaded": GEMMA}})
        states = {i.model: i.state for i in await engine.list_models()}
        assert states == {QWEN: "unloaded", GEMMA: "ready"}
        for wrong, message in (({"models": []}, r'expected \{"data"'), ([], r'expected \{"data"')):
            answers["/api/v1/models"] = wrong
            with pytest.raises(RemoteRefused, match=message):
                await engine.list_models()
        answers.update({"/api/v1/models": {"data": []}, "/api/v1/health": {"all_models_loaded": {"x": 1}}})
        with pytest.raises(RemoteRefused, match="all_models_loaded"):
            await engine.list_models()
        answers["/api/v1/load"] = {"status": "error", "message": "not enough memory"}
        with pytest.raises(RemoteRefused, match="not enough memory"):
            await engine.load(QWEN)
