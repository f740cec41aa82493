"""llama.cpp's router as a remote (``kind = "llama.cpp-router"``).

Most tests run the real router (``llama-server --models-dir DIR``, no model) on the tiny
model the project makes itself, with Siesta in front of it: its models are listed as
``router/<id>``, a chat goes through, Siesta's idle countdown unloads a model through the
router's API, manual loads and unloads work, the router's sleep and LRU show as they
should, and a router that goes away is unreachable. A small fake router checks what the
real one cannot be made to do: a wrong answer, a missing event stream, a load that
never ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from app.core.manager import ModelManager
from app.core.remotes import RemoteConfig, RemoteRefused
from app.core.remotes.router_engine import RouterEngine
from app.demo_model import write_tiny_model
from tests.conftest import LLAMA_SERVER
from tests.llama_router import LlamaProcess

CHAT = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


# ---- the real router -------------------------------------------------------------------------------


@pytest.fixture
def router_models(tmp_path: Path) -> Path:
    """A models dir with two copies of the tiny model (ids ``tiny`` and ``tiny2``)."""
    folder = tmp_path / "router-models"
    write_tiny_model(folder / "tiny.gguf")
    shutil.copyfile(folder / "tiny.gguf", folder / "tiny2.gguf")
    return folder


@pytest.fixture
def start_router(router_models: Path, tmp_path: Path, paths) -> Iterator[Callable[..., LlamaProcess]]:
    """Starts the real router on a free port and names it ``router`` in settings.toml;
    always ends it and every child it started."""
    started: list[LlamaProcess] = []

    def start(*extra: str) -> LlamaProcess:
        assert LLAMA_SERVER is not None
        router = LlamaProcess(LLAMA_SERVER, tmp_path / f"router-{len(started)}.log", "--models-dir",
                              str(router_models), *extra)
        started.append(router)
        router.wait_healthy()
        paths.settings_file.write_text(f'[remotes.router]\nkind = "llama.cpp-router"\nurl = "{router.url}"\n')
        return router

    yield start
    for router in started:
        router.stop()
        assert not router.children(), f"the router left children behind: {router.children()}"


async def until(manager: ModelManager, name: str, check: Callable[[dict[str, Any] | None], bool],
                timeout: float = 20.0) -> dict[str, Any] | None:
    """Awaits the manager's events until ``check`` passes for model ``name``'s snapshot
    (None while Siesta does not list it); returns that snapshot."""
    changed = asyncio.Event()
    unsubscribe = manager.subscribe(lambda event: changed.set())
    try:
        async with asyncio.timeout(timeout):
            while True:
                snapshot = next((s for s in manager.remotes.snapshots() if s["name"] == name), None)
                if check(snapshot):
                    return snapshot
                changed.clear()
                await changed.wait()
    finally:
        unsubscribe()


def in_state(state: str) -> Callable[[dict[str, Any] | None], bool]:
    return lambda snapshot: snapshot is not None and snapshot["state"] == state


def idle_and_ready(snapshot: dict[str, Any] | None) -> bool:
    """Ready and no request in flight (a client can have its whole answer a moment
    before the front door counts the request as ended)."""
    return snapshot is not None and snapshot["state"] == "ready" and snapshot["in_flight"] == 0


async def start_siesta(front_door, **flags: Any) -> tuple[ModelManager, aiohttp.ClientSession, str]:
    """The front door, once it lists the router's ``tiny``."""
    manager, http, url = await front_door(**flags)
    await until(manager, "router/tiny", lambda s: s is not None)
    return manager, http, url


@pytest.mark.llama
@pytest.mark.timeout(90)
async def test_models_are_listed_and_a_chat_goes_through(start_router, front_door):
    router = start_router()
    manager, http, url = await start_siesta(front_door)
    async with http.get(f"{url}/api/v1/models") as resp:
        listed = {m["name"]: m for m in (await resp.json())["models"]}
    for model in ("tiny", "tiny2"):
        entry = listed[f"router/{model}"]
        assert (entry["remote"], entry["remote_model"], entry["state"]) == ("router", model, "unloaded")
        assert entry["remote_kind"] == "llama.cpp-router" and entry["can_load"] is True
    async with http.get(f"{url}/v1/models") as resp:
        ids = {m["id"]: m for m in (await resp.json())["data"]}
    assert ids["router/tiny"]["owned_by"] == "router"
    assert manager.remotes.remotes["router"].engine.events() is not None  # this build has /models/sse

    async with http.post(f"{url}/v1/chat/completions", json={"model": "router/tiny", **CHAT}) as resp:
        body = await resp.json()
    assert resp.status == 200, body
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert (await router.statuses())["tiny"]["value"] == "loaded"  # the router loaded it for the request
    snapshot = await until(manager, "router/tiny", idle_and_ready)
    assert snapshot["unload_timeout"] == 300 and snapshot["timeout_source"] == "global"
    assert snapshot["unload_at"] == pytest.approx(snapshot["idle_since"] + 300)  # Siesta's countdown runs
    assert (await router.statuses())["tiny2"]["value"] == "unloaded"


@pytest.mark.llama
@pytest.mark.timeout(90)
async def test_siesta_countdown_unloads_the_model_through_the_router(start_router, front_door):
    router = start_router()
    manager, http, url = await start_siesta(front_door, global_unload_timeout="1s")
    async with http.post(f"{url}/v1/chat/completions", json={"model": "router/tiny", **CHAT}) as resp:
        assert resp.status == 200, await resp.text()
    answered = time.time()
    ready = await until(manager, "router/tiny", idle_and_ready)
    assert ready["unload_at"] == pytest.approx(ready["idle_since"] + 1)
    children = router.children()
    assert len(children) == 1  # the model's own llama-server

    await until(manager, "router/tiny", in_state("unloaded"))
    assert time.time() - answered >= 0.8  # not before its timeout (counted from the end of the request)
    status = (await router.statuses())["tiny"]
    assert status["value"] == "unloaded" and not status.get("failed")  # stopped, not crashed
    assert router.children() == []  # the process is gone, not asleep


@pytest.mark.llama
@pytest.mark.timeout(90)
async def test_manual_load_and_unload_by_the_qualified_name(start_router, front_door):
    router = start_router()
    manager, http, url = await start_siesta(front_door)
    started = time.time()
    async with http.post(f"{url}/api/v1/load", json={"model": "router/tiny"}) as resp:
        loaded = await resp.json()
    assert resp.status == 200, loaded
    assert (loaded["name"], loaded["state"]) == ("router/tiny", "ready")
    assert loaded["unload_at"] >= started + 300  # counted from the load
    assert (await router.statuses())["tiny"]["value"] == "loaded"
    async with http.post(f"{url}/api/v1/load", json={"model": "router/tiny"}) as resp:
        assert resp.status == 200 and (await resp.json())["state"] == "ready"  # already loaded: fine

    async with http.post(f"{url}/api/v1/unload", json={"model": "router/tiny"}) as resp:
        unloaded = await resp.json()
    assert resp.status == 200, unloaded
    assert (unloaded["state"], unloaded["unload_at"]) == ("unloaded", None)
    assert (await router.statuses())["tiny"]["value"] == "unloaded" and router.children() == []
    async with http.post(f"{url}/api/v1/unload", json={"model": "router/tiny"}) as resp:
        assert resp.status == 200 and (await resp.json())["state"] == "unloaded"  # not running: fine

    async with http.post(f"{url}/api/v1/load", json={"model": "router/nope"}) as resp:
        refused = await resp.json()
    assert resp.status == 404 and refused["error"]["code"] == "remote_refused", refused


@pytest.mark.llama
@pytest.mark.timeout(90)
async def test_a_load_that_fails_says_why(start_router, router_models, front_door):
    (router_models / "broken.gguf").write_bytes((router_models / "tiny.gguf").read_bytes()[:1000])
    start_router()
    manager, http, url = await start_siesta(front_door)
    async with http.post(f"{url}/api/v1/load", json={"model": "router/broken"}) as resp:
        body = await resp.json()
    assert resp.status == 502 and body["error"]["code"] == "remote_error", body
    assert "load broken" in body["error"]["message"] and "exited with code" in body["error"]["message"]
    snapshot = await until(manager, "router/broken", in_state("failed"))
    assert "exited with code" in snapshot["error"]


@pytest.mark.llama
@pytest.mark.timeout(90)
async def test_a_manual_load_after_an_idle_unload_counts_from_the_load(start_router, front_door):
    start_router()
    manager, http, url = await start_siesta(front_door, global_unload_timeout="1s")
    async with http.post(f"{url}/v1/chat/completions", json={"model": "router/tiny", **CHAT}) as resp:
        assert resp.status == 200
    await until(manager, "router/tiny", in_state("ready"))
    await until(manager, "router/tiny", in_state("unloaded"))

    async with http.post(f"{url}/api/v1/load", json={"model": "router/tiny"}) as resp:
        loaded = await resp.json()
    assert resp.status == 200 and loaded["state"] == "ready", loaded
    returned = time.time()
    await until(manager, "router/tiny", in_state("unloaded"))
    assert time.time() - returned >= 0.8  # its own full timeout, not the old request's


@pytest.mark.llama
@pytest.mark.timeout(90)
async def test_a_sleeping_model_is_ready_and_siesta_still_unloads_it(start_router, front_door):
    router = start_router("--sleep-idle-seconds", "1")
    manager, http, url = await start_siesta(front_door, global_unload_timeout="4s")
    async with http.post(f"{url}/v1/chat/completions", json={"model": "router/tiny", **CHAT}) as resp:
        assert resp.status == 200
    await router.wait_status("tiny", "sleeping")
    snapshot = await until(manager, "router/tiny", idle_and_ready)
    assert snapshot["unload_at"] is not None  # asleep, still counted down
    assert len(router.children()) == 1  # the router's sleep keeps the process
    await until(manager, "router/tiny", in_state("unloaded"))
    assert router.children() == []


@pytest.mark.llama
@pytest.mark.timeout(90)
async def test_the_routers_own_lru_unload_shows_and_ends_the_countdown(start_router, front_door):
    router = start_router("--models-max", "1")
    manager, http, url = await start_siesta(front_door)
    async with http.post(f"{url}/api/v1/load", json={"model": "router/tiny"}) as resp:
        assert resp.status == 200
    async with http.post(f"{url}/api/v1/load", json={"model": "router/tiny2"}) as resp:
        assert resp.status == 200 and (await resp.json())["state"] == "ready"
    assert (await router.statuses())["tiny"]["value"] == "unloaded"
    evicted = await until(manager, "router/tiny", in_state("unloaded"))
    assert evicted["unload_at"] is None


@pytest.mark.llama
@pytest.mark.timeout(90)
async def test_a_router_that_goes_away_is_unreachable(start_router, front_door):
    router = start_router()
    manager, http, url = await start_siesta(front_door)
    router.stop()  # ends its event stream too: Siesta lists again and finds nobody
    assert await until(manager, "router/tiny", lambda s: s is None) is None  # "removed"
    async with http.get(f"{url}/api/v1/remotes") as resp:
        (described,) = (await resp.json())["remotes"]
    assert described["status"] == "unreachable"
    async with http.post(f"{url}/v1/chat/completions", json={"model": "router/tiny", **CHAT}) as resp:
        assert resp.status == 502 and (await resp.json())["error"]["code"] == "remote_unreachable"


@pytest.mark.llama
@pytest.mark.timeout(60)
async def test_a_plain_llama_server_is_not_taken_for_a_router(router_models, tmp_path):
    assert LLAMA_SERVER is not None
    plain = LlamaProcess(LLAMA_SERVER, tmp_path / "plain.log", "-m", str(router_models / "tiny.gguf"))
    try:
        plain.wait_healthy()
        async with aiohttp.ClientSession() as http:
            engine = RouterEngine(RemoteConfig("plain", "llama.cpp-router", plain.url), http)
            assert await engine.probe()
            with pytest.raises(RemoteRefused, match="llama.cpp router"):
                await engine.list_models()
    finally:
        plain.stop()


# ---- a fake router: what the real one cannot be made to do ------------------------------------------


class FakeRouter:
    """``/models``, ``/models/load`` and ``/models/sse`` with answers a test sets."""

    def __init__(self) -> None:
        self.models: Any = {"data": [{"id": "tiny", "status": {"value": "unloaded"}}]}
        self.raw: str | None = None  # sent as it is instead of ``models``
        self.load_status = 200
        self.after_load: list[str] = []  # the statuses /models goes through after a load, one per listing
        self.sse: str = "events"  # events | missing | html | broken
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.add_routes([web.get("/models", self.list), web.post("/models/load", self.load),
                        web.get("/models/sse", self.events)])
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def list(self, request: web.Request) -> web.StreamResponse:
        if self.raw is not None:
            return web.Response(text=self.raw)
        if self.after_load:
            self.models = {"data": [{"id": "tiny", "status": {"value": self.after_load.pop(0)}}]}
        return web.json_response(self.models)

    async def load(self, request: web.Request) -> web.Response:
        if self.load_status != 200:
            return web.json_response({"error": {"code": self.load_status, "message": "model is already running"}},
                                     status=self.load_status)
        return web.json_response({"success": True})

    async def events(self, request: web.Request) -> web.StreamResponse:
        if self.sse == "missing":
            return web.json_response({"error": {"message": "File Not Found"}}, status=404)
        if self.sse == "html":
            return web.Response(text="<html>the web UI</html>", content_type="text/html")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"model":"tiny","event":"status_change","data":{"status":"loading"}}\n\n')
        await response.write(b"data: not json\n\n")
        await response.write(b'data: {"model":"tiny","event":"status_change","data":{"status":"loaded"}}\n\n')
        if self.sse == "broken":
            assert request.transport is not None
            request.transport.close()  # mid-stream, without the end of the chunked body
        return response


@pytest.fixture
async def fake_router() -> AsyncIterator[tuple[FakeRouter, RouterEngine]]:
    fake = FakeRouter()
    await fake.start()
    async with aiohttp.ClientSession() as http:
        yield fake, RouterEngine(RemoteConfig("fake", "llama.cpp-router", fake.url), http)
    await fake.stop()


@pytest.mark.parametrize("answer, expected", [
    ('["tiny"]', 'expected {"data": [...]}'),
    ('{"data": "tiny"}', 'expected {"data": [...]}'),
    ('{"data": [{"status": {"value": "loaded"}}]}', 'to have an "id"'),
    ('{"data": [{"id": "tiny", "object": "model"}]}', "has no status.value; is this a llama.cpp router"),
    ('{"data": [{"id": "tiny", "status": {"value": 3}}]}', "has no status.value"),
    ("<html>not JSON</html>", "not JSON"),
])
async def test_a_wrong_answer_is_refused_with_a_clear_message(fake_router, answer, expected):
    fake, engine = fake_router
    fake.raw = answer
    with pytest.raises(RemoteRefused, match=expected.replace("[", r"\[").replace("]", r"\]")) as caught:
        await engine.list_models()
    assert caught.value.status == 502 and "'fake'" in str(caught.value)


@pytest.mark.parametrize("status, state, error", [
    ({"value": "loaded"}, "ready", None),
    ({"value": "sleeping"}, "ready", None),
    ({"value": "loading"}, "loading", None),
    ({"value": "unloaded"}, "unloaded", None),
    ({"value": "unloaded", "exit_code": 0}, "unloaded", None),
    ({"value": "unloaded", "failed": True, "exit_code": 3}, "failed", "exited with code 3"),
    ({"value": "failed"}, "failed", "failed"),
    ({"value": "pondering"}, "failed", "status 'pondering', which Siesta does not know"),
    ("loaded", "ready", None),
])
async def test_the_routers_statuses_in_siestas_words(fake_router, status, state, error):
    fake, engine = fake_router
    fake.models = {"data": [{"id": "tiny", "status": status}]}
    (info,) = await engine.list_models()
    assert (info.model, info.state) == ("tiny", state)
    assert (info.error is None) if error is None else (error in info.error)


async def test_a_load_waits_until_the_router_has_loaded_the_model(fake_router):
    fake, engine = fake_router
    fake.after_load = ["loading", "loading", "loaded"]
    await engine.load("tiny")
    assert fake.after_load == []


async def test_a_load_of_a_model_already_loading_waits_for_it(fake_router):
    fake, engine = fake_router
    fake.load_status = 400  # the router's answer for a model already loading or loaded
    fake.after_load = ["loading", "loading", "sleeping"]
    await engine.load("tiny")
    assert fake.after_load == []


async def test_a_load_that_is_never_done_gives_up_naming_the_model(fake_router):
    fake, engine = fake_router
    fake.models = {"data": [{"id": "tiny", "status": {"value": "loading"}}]}
    engine.config = dataclasses.replace(engine.config, load_timeout=0.5)  # the remote's own load_timeout
    with pytest.raises(RemoteRefused, match=r"load tiny failed: HTTP 504: tiny was still not loaded after 0.5 s "
                                            r"\(the load_timeout of remote 'fake'"):
        await engine.load("tiny")


async def test_a_load_refused_for_another_reason_says_so(fake_router):
    fake, engine = fake_router
    fake.load_status = 400  # and the model is not loading: a real refusal
    with pytest.raises(RemoteRefused, match="HTTP 400"):
        await engine.load("tiny")


async def test_each_status_change_on_the_stream_means_list_again(fake_router):
    fake, engine = fake_router
    stream = engine.events()
    assert stream is not None
    async with asyncio.timeout(10):
        assert [item async for item in stream] == [None, None]  # the line that is not JSON is skipped


async def test_a_stream_that_breaks_just_ends(fake_router):
    fake, engine = fake_router
    fake.sse = "broken"
    stream = engine.events()
    assert stream is not None
    async with asyncio.timeout(10):
        items = [item async for item in stream]
    assert items == [None, None]
    assert engine.events() is not None  # broken, not missing: the next one reconnects


@pytest.mark.parametrize("kind", ["missing", "html"])
async def test_a_router_without_the_stream_is_polled(fake_router, kind):
    fake, engine = fake_router
    fake.sse = kind
    stream = engine.events()
    assert stream is not None
    async with asyncio.timeout(10):
        assert [item async for item in stream] == []
    assert engine.events() is None  # from now on Siesta lists every few seconds
