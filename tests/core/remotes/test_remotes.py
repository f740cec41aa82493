"""Remotes without a real engine: ``[remotes]`` read from settings.toml with clear errors,
names (qualified, bare, ambiguous, local first), routing to any OpenAI server, hops
between Siestas, edits applied without a restart, and the API key kept out of sight."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from aiohttp import web

from app.core.remotes import parse_remotes
from app.core.remotes.config import api_key_env
from tests.waiting import until


class FakeOpenAI:
    """Any OpenAI-compatible server: a fixed model list, a chat that echoes what it got."""

    def __init__(self, models: list[str]) -> None:
        self.models = models
        self.seen: list[tuple[str, dict, dict]] = []  # (path, headers, body)
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.chunk_gate: asyncio.Queue[None] = asyncio.Queue()

    async def start(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_post("/v1/chat/completions", self.chat)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    async def list_models(self, request: web.Request) -> web.Response:
        self.seen.append((request.path, dict(request.headers), {}))
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append((request.path, dict(request.headers), body))
        if not body.get("stream"):
            return web.json_response({"choices": [{"message": {"role": "assistant",
                                                               "content": f"from {body['model']}"}}]})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for word in ("one", "two", "three"):
            await response.write(f"data: {json.dumps({'choices': [{'delta': {'content': word}}]})}\n\n".encode())
            await self.chunk_gate.get()  # the test lets each chunk go
        await response.write(b"data: [DONE]\n\n")
        return response

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def fake_openai():
    servers: list[FakeOpenAI] = []

    async def start(models: list[str]) -> FakeOpenAI:
        server = await FakeOpenAI(models).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def remotes_toml(**remotes: tuple[str, str]) -> str:
    return "".join(f'\n[remotes.{name}]  # a remote\nkind = "{kind}"\nurl = "{url}"\n'
                   for name, (kind, url) in remotes.items())


# ---- configuration ------------------------------------------------------------------------


def test_each_bad_remote_is_named_with_what_was_expected(tmp_path: Path) -> None:
    file = tmp_path / "settings.toml"
    remotes, errors = parse_remotes({"remotes": {
        "good": {"kind": "ollama", "url": "http://127.0.0.1:11434/"},
        "bad/name": {"kind": "siesta", "url": "http://x:1"},
        "nokind": {"kind": "vllm", "url": "http://x:1"},
        "nourl": {"kind": "siesta", "url": "ftp://x"},
        "extra": {"kind": "siesta", "url": "http://x:1", "colour": "red"},
        "badtimeout": {"kind": "ollama", "url": "http://x:1", "timeouts": {"m": "soonish"}},
    }}, file, environ={})
    assert list(remotes) == ["good"] and remotes["good"].url == "http://127.0.0.1:11434"
    text = "\n".join(errors)
    assert str(file) in text
    assert "[remotes.bad/name]" in text and "no /" in text
    assert "[remotes.nokind]" in text and "siesta, ollama, llama.cpp-router, lemonade, openai" in text
    assert "[remotes.nourl]" in text and "http://" in text
    assert "[remotes.extra]" in text and "colour" in text
    assert "[remotes.badtimeout]" in text and "soonish" in text


def test_api_key_from_the_environment_and_never_in_repr(tmp_path: Path) -> None:
    env = {api_key_env("gpu-box"): "from-env"}
    assert api_key_env("gpu-box") == "SIESTA_REMOTE_GPU_BOX_API_KEY"
    remotes, errors = parse_remotes({"remotes": {"gpu-box": {"kind": "siesta", "url": "http://h:1",
                                                             "api_key": "from-file"}}}, tmp_path / "s.toml", env)
    assert not errors and remotes["gpu-box"].api_key == "from-env"
    assert "from-env" not in repr(remotes["gpu-box"]) and "from-env" not in str(remotes["gpu-box"].describe())


# ---- names and routing ---------------------------------------------------------------------


async def test_qualified_bare_ambiguous_and_local_first(front_door, paths, write_recipe, fake_openai, caplog):
    one = await fake_openai(["shared", "only-one", "hf.co/org/m:Q4"])
    two = await fake_openai(["shared", "mine"])
    paths.settings_file.write_text("# my settings\n" + remotes_toml(one=("openai", one.url + "/v1"),
                                                                     two=("openai", two.url)))
    write_recipe("mine")  # a local recipe with the name "two" also has
    caplog.set_level(logging.DEBUG)
    manager, http, url = await front_door()
    await until(lambda: len(manager.remotes.snapshots()) == 5)

    async with http.get(url + "/v1/models") as resp:
        ids = [m["id"] for m in (await resp.json())["data"]]
    assert ids == ["mine", "one/hf.co/org/m:Q4", "one/only-one", "one/shared", "two/mine", "two/shared"]

    async def chat(model: str, **headers: str) -> tuple[int, dict]:
        async with http.post(url + "/v1/chat/completions", headers=headers,
                             json={"model": model, "messages": []}) as resp:
            return resp.status, await resp.json()

    status, body = await chat("one/hf.co/org/m:Q4")  # split on the first "/" only
    assert status == 200 and body["choices"][0]["message"]["content"] == "from hf.co/org/m:Q4"
    assert one.seen[-1][0] == "/v1/chat/completions"  # a URL written with /v1 is the same server
    status, body = await chat("only-one")  # bare, and exactly one remote has it
    assert status == 200 and body["choices"][0]["message"]["content"] == "from only-one"
    status, body = await chat("shared")
    assert status == 409 and body["error"]["code"] == "ambiguous_model"
    assert body["error"]["candidates"] == ["one/shared", "two/shared"]
    assert "one/shared" in body["error"]["message"]
    assert not [s for s in two.seen if s[0] == "/v1/chat/completions"]  # "mine" is local: it never went to two
    async with http.get(url + "/api/v1/models/two/mine") as resp:
        remote_model = await resp.json()
    assert remote_model["remote"] == "two" and remote_model["remote_model"] == "mine"

    # A request from another Siesta reaches only local models: no loops between Siestas.
    status, body = await chat("one/only-one", **{"X-Siesta-Hop": "1"})
    assert status == 404
    async with http.get(url + "/api/v1/models", headers={"X-Siesta-Hop": "1"}) as resp:
        assert [m["name"] for m in (await resp.json())["models"]] == ["mine"]

    # openai remotes only route: no lifecycle to control
    async with http.post(url + "/api/v1/load", json={"model": "one/shared"}) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "not_supported"


async def test_remotes_edited_without_a_restart(front_door, paths, fake_openai, event_log):
    server = await fake_openai(["m"])
    paths.settings_file.write_text("# my settings\nmax_loaded_models = 2\n")
    manager, http, url = await front_door(watch_files=True)
    events = event_log(manager)
    paths.settings_file.write_text(paths.settings_file.read_text() + remotes_toml(box=("openai", server.url)))
    await until(lambda: [s["name"] for s in manager.snapshots()] == ["box/m"])
    async with http.get(url + "/api/v1/remotes") as resp:
        assert (await resp.json())["remotes"][0] | {"retry_in": None} == {
            "name": "box", "kind": "openai", "url": server.url, "api_key": None, "status": "ok", "error": None,
            "retry_in": None, "models": 1}
    paths.settings_file.write_text("# my settings\nmax_loaded_models = 2\n")
    await until(lambda: manager.snapshots() == [])
    assert "removed" in events.reasons("box/m")
    assert "# my settings" in paths.settings_file.read_text()


async def test_the_key_goes_to_its_remote_only_and_is_never_logged(front_door, paths, fake_openai, caplog,
                                                                   monkeypatch):
    keyed = await fake_openai(["a"])
    other = await fake_openai(["b"])
    monkeypatch.setenv("SIESTA_REMOTE_KEYED_API_KEY", "sk-very-secret")
    paths.settings_file.write_text(remotes_toml(keyed=("openai", keyed.url), other=("openai", other.url)))
    caplog.set_level(logging.DEBUG)
    manager, http, url = await front_door()
    await until(lambda: len(manager.remotes.snapshots()) == 2)
    for model in ("keyed/a", "other/b"):
        async with http.post(url + "/v1/chat/completions", json={"model": model, "messages": []}) as resp:
            assert resp.status == 200
    assert all(h.get("Authorization") == "Bearer sk-very-secret" for _, h, _ in keyed.seen)
    assert not any("Authorization" in h for _, h, _ in other.seen)
    async with http.get(url + "/api/v1/health") as resp:
        health = await resp.text()
    assert "sk-very-secret" not in health and '"api_key": "(set)"' in health
    assert "sk-very-secret" not in caplog.text


async def test_unreachable_remote_never_slows_start_or_local_requests(front_door, paths, write_recipe):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    paths.settings_file.write_text(remotes_toml(gone=("siesta", f"http://127.0.0.1:{port}")))
    write_recipe("local")
    loop = asyncio.get_running_loop()
    started = loop.time()
    manager, http, url = await front_door()
    assert loop.time() - started < 2.0
    async with http.post(url + "/v1/chat/completions", json={"model": "local", "messages": []}) as resp:
        assert resp.status == 200
    await until(lambda: manager.remotes.remotes["gone"].status == "unreachable")
    async with http.post(url + "/v1/chat/completions", json={"model": "gone/x", "messages": []}) as resp:
        body = await resp.json()
    assert resp.status == 502 and body["error"]["code"] == "remote_unreachable"
    assert f"127.0.0.1:{port}" in body["error"]["message"] and "'gone'" in body["error"]["message"]


async def test_a_stream_through_a_remote_arrives_chunk_by_chunk_and_counts_in_flight(front_door, paths, fake_openai):
    server = await fake_openai(["m"])
    paths.settings_file.write_text(remotes_toml(box=("openai", server.url)))
    manager, http, url = await front_door()
    await until(lambda: manager.remotes.snapshots())
    async with http.post(url + "/v1/chat/completions",
                         json={"model": "box/m", "messages": [], "stream": True}) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        first = await resp.content.readuntil(b"\n\n")
        assert b'"one"' in first  # before the server has sent the rest
        assert manager.snapshot_by_name("box/m")["in_flight"] == 1
        for _ in range(3):
            server.chunk_gate.put_nowait(None)
        rest = await resp.read()
    assert b'"two"' in rest and b'"three"' in rest and rest.endswith(b"data: [DONE]\n\n")
    await until(lambda: manager.snapshot_by_name("box/m")["in_flight"] == 0)


async def test_making_room_never_unloads_a_remote_model(front_door, paths, write_recipe):
    """Engines elsewhere (or on this machine) are other programs for Siesta's admission:
    max_loaded_models and memory evict only Siesta's own models."""
    from tests.fakes.lemonade import FakeLemonade

    lemonade = FakeLemonade(["qwen"])
    await lemonade.start()
    try:
        lemonade.load_now("qwen")
        paths.settings_file.write_text(remotes_toml(lem=("lemonade", lemonade.url)))
        write_recipe("a")
        write_recipe("b")
        manager, http, url = await front_door(max_loaded_models=1)
        await until(lambda: manager.remotes.snapshots() and manager.snapshot_by_name("lem/qwen")["state"] == "ready")
        for name in ("a", "b"):
            async with http.post(url + "/v1/chat/completions", json={"model": name, "messages": []}) as resp:
                assert resp.status == 200
        assert manager.get("a").state.value == "unloaded" and manager.get("b").state.value == "ready"
        assert manager.snapshot_by_name("lem/qwen")["state"] == "ready"
        assert not lemonade.calls_to("/api/v1/unload")
    finally:
        await lemonade.stop()
