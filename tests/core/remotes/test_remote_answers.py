"""What Siesta takes from a remote that answers badly, or with hostile intent: only the
fields of :data:`MODEL_FIELDS`, checked (a model with a bad one is left out, said once in
the log), no answer past its cap, no more than 10,000 models, and no load, unload or routed
request without a time limit."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from app.cli.table import format_table
from app.core.remotes import RemoteConfig, RemoteRefused, parse_remotes
from app.core.remotes import remote as remote_module
from app.core.remotes.kinds import engine_for
from app.core.remotes.limits import ANSWER_CAP, ERROR_CAP, EVENT_CAP, MAX_MODELS
from app.core.remotes.model_fields import MODEL_FIELDS, Rejected, check_model
from tests.fakes.lemonade import FakeLemonade
from tests.fakes.ollama import FakeOllama
from tests.fakes.remote import ScriptedServer, endless
from tests.fakes.siesta import FakeSiesta, snapshot
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)

INF_ENTRY = '{"name": "inf", "state": "ready", "unloads_in": 1e999}'  # valid JSON; Python reads it as inf


def strict_json(text: str) -> Any:
    """JSON as any other parser reads it: Infinity and NaN are not JSON."""
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def settings_for(paths, kind: str, url: str, extra: str = "") -> None:
    paths.settings_file.write_text(f'# a test\n[remotes.box]\nkind = "{kind}"\nurl = "{url}"\n{extra}')


@pytest.fixture
async def servers():
    started: list[Any] = []

    async def start(server: Any) -> Any:
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def engine(kind: str, url: str, http: aiohttp.ClientSession, **config: Any):
    return engine_for(RemoteConfig("box", kind, url, **config), http)


def warnings_about(caplog: pytest.LogCaptureFixture, *words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and all(w in r.getMessage() for w in words)]


# ---- the fields of a remote's model ---------------------------------------------------------------


def test_one_table_of_fields_each_checked_for_type_and_bounds():
    assert {"name", "state", "unload_timeout", "unloads_in", "unload_at", "memory"} <= set(MODEL_FIELDS)
    good = check_model({**snapshot("tiny"), "colour": "red"})
    assert isinstance(good, dict) and good["name"] == "tiny"
    assert "colour" not in good and "log_file" not in good  # only the table's fields are kept
    for field, bad in [("unloads_in", float("inf")), ("unloads_in", float("nan")), ("unloads_in", -1),
                       ("unload_timeout", "abc"), ("unload_at", 1e300), ("memory", 2**70), ("memory", 1.5),
                       ("in_flight", True), ("in_flight", None), ("stale", None), ("state", "dreaming"), ("name", ""), ("name", "x" * 257),
                       ("name", "a\nb"), ("memory_by_device", {"ram": -1}), ("error", "e" * 20_000)]:
        rejected = check_model({**snapshot("tiny"), field: bad})
        assert isinstance(rejected, Rejected) and rejected.field == field, (field, bad)
    assert isinstance(check_model({"name": "tiny"}), Rejected)  # state is required
    assert check_model({"name": "tiny", "state": "ready", "unloads_in": None, "unload_timeout": None}) == {
        "name": "tiny", "state": "ready", "unload_timeout": None, "unloads_in": None}  # null: unknown, or never


async def test_a_siesta_remotes_bad_fields_leave_its_model_out_and_siesta_ps_still_prints(
        servers, front_door, paths, caplog):
    fake = await servers(FakeSiesta([snapshot("good", colour="red"), INF_ENTRY,
                                     snapshot("abc", unload_timeout="abc")]))
    settings_for(paths, "siesta", fake.url)
    caplog.set_level(logging.INFO)
    manager, http, url = await front_door()
    remote = manager.remotes.remotes["box"]
    await until(lambda: "good" in remote.views, what="box to list good")

    async with http.get(url + "/api/v1/models") as resp:
        models = strict_json(await resp.text())["models"]  # valid JSON: no Infinity in it
    assert [m["name"] for m in models] == ["box/good"]
    assert "colour" not in models[0] and models[0]["log_file"] is None
    assert "box/good" in format_table(models)  # `siesta ps` formats every field it reads
    assert len(warnings_about(caplog, "'box'", "'unloads_in'")) == 1
    assert len(warnings_about(caplog, "'box'", "'abc'", "'unload_timeout'")) == 1

    # Events are checked as a listing is: a bad one changes nothing, and adds nothing.
    fake.send('{"reason": "changed", "model": {"name": "good", "state": "ready", "unloads_in": 1e999}}')
    fake.send({"reason": "changed", "model": {"name": "new", "state": "ready", "memory": -5}})
    fake.send({"reason": "changed", "model": snapshot("good", memory=5)})
    await until(lambda: remote.views["good"].info.memory == 5, what="the good event")
    assert set(remote.views) == {"good"}
    async with http.get(url + "/api/v1/models") as resp:
        strict_json(await resp.text())
    assert len(warnings_about(caplog, "'box'", "'good'", "'unloads_in'")) == 1
    assert len(warnings_about(caplog, "'box'", "'new'", "'memory'")) == 1


async def test_every_kinds_listing_is_checked_and_each_problem_logged_once(servers, http, caplog):
    caplog.set_level(logging.INFO)
    long_name = "x" * 300
    ollama = await servers(FakeOllama({"ok": 1000, long_name: 1000, "huge": 2**70}))
    ollama.load_now("huge")
    lemonade = await servers(FakeLemonade(["ok", "bell\x07"]))
    lemonade.load_now("ok", busy=True)
    router_models = {"data": [{"id": "ok", "status": {"value": "loaded"}},
                              {"id": long_name, "status": {"value": "loaded"}}]}
    openai_models = {"data": [{"id": "ok"}, {"id": long_name}, {"id": "tab\there"}]}
    scripted = await servers(ScriptedServer([web.get("/models", answer(router_models)),
                                             web.get("/v1/models", answer(openai_models))]))
    for kind, url, field in [("ollama", ollama.url, "'memory'"), ("lemonade", lemonade.url, "'name'"),
                             ("llama.cpp-router", scripted.url, "'name'"), ("openai", scripted.url, "'name'")]:
        caplog.clear()
        remote = engine(kind, url, http)
        for _ in range(2):
            infos = await remote.list_models()
            assert [i.model for i in infos] == ["ok"], kind
        problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert problems and all("'box'" in p and "left out" in p for p in problems), kind
        assert any(field in p for p in problems), (kind, problems)
        assert len(problems) == len(set(problems)), f"{kind}: logged more than once: {problems}"
        assert not any(long_name in p for p in problems)  # a name that long is cut short in the log
    (busy,) = await engine("lemonade", lemonade.url, http).list_models()
    assert busy.busy


def answer(data: Any) -> Any:
    """A handler that answers ``data`` as JSON."""
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(data)
    return handler


def streaming(head: bytes, **options: Any) -> Any:
    """A handler whose answer never ends (:func:`endless`)."""
    async def handler(request: web.Request) -> web.StreamResponse:
        return await endless(request, head, **options)
    return handler


# ---- how much is read ---------------------------------------------------------------------------------


async def test_an_answer_over_its_cap_is_refused_without_reading_it_all(servers, http):
    sent = [0]
    fake = await servers(ScriptedServer([web.get("/v1/models", streaming(b'{"data": [', sent=sent))]))
    async with asyncio.timeout(20):
        with pytest.raises(RemoteRefused, match="larger than 4 MB") as caught:
            await engine("openai", fake.url, http).list_models()
    assert caught.value.status == 502 and "'box'" in str(caught.value)
    assert sent[0] < 4 * ANSWER_CAP  # what the socket buffers held, not the endless rest


async def test_a_load_that_streams_forever_ends_at_the_cap(servers, http):
    fake = await servers(ScriptedServer([web.post("/api/generate", streaming(b'{"done": false}\n'))]))
    async with asyncio.timeout(20):
        with pytest.raises(RemoteRefused, match="load m failed: .*larger than 4 MB"):
            await engine("ollama", fake.url, http).load("m")


async def test_an_error_answer_is_read_to_64_kb_and_no_further(servers, http):
    sent = [0]
    fake = await servers(ScriptedServer([
        web.get("/v1/models", streaming(b"broken: ", status=500, content_type="text/plain", sent=sent))]))
    async with asyncio.timeout(20):
        with pytest.raises(RemoteRefused, match="HTTP 500: broken") as caught:
            await engine("openai", fake.url, http).list_models()
    assert len(str(caught.value)) < 500 and sent[0] < 4 * ANSWER_CAP
    assert ERROR_CAP == 64 * 1024


async def test_no_more_than_10000_models_are_taken_from_one_remote(servers, http, caplog):
    caplog.set_level(logging.INFO)
    many = {"data": [{"id": f"m{i}"} for i in range(MAX_MODELS + 50)]}
    fake = await servers(ScriptedServer([web.get("/v1/models", answer(many))]))
    remote = engine("openai", fake.url, http)
    for _ in range(2):
        assert len(await remote.list_models()) == MAX_MODELS == 10_000
    assert len(warnings_about(caplog, "'box'", "more than 10000 models")) == 1


async def test_an_event_line_over_its_cap_ends_the_stream_without_an_error(servers, http, caplog):
    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"model": "a"}\n\n')
        await response.write(b"data: " + b"x" * (EVENT_CAP + 10))
        await response.write(b'\n\ndata: {"model": "b"}\n\n')
        return response

    fake = await servers(ScriptedServer([web.get("/events", stream)]))
    async with asyncio.timeout(20):
        events = [e async for e in engine("openai", fake.url, http).sse("/events")]
    assert events == [{"model": "a"}]
    assert warnings_about(caplog, "'box'", "larger than 256 KB")


async def test_events_add_no_more_models_than_the_cap(servers, front_door, paths, monkeypatch):
    monkeypatch.setattr(remote_module, "MAX_MODELS", 2)
    fake = await servers(FakeSiesta([snapshot("a")]))
    settings_for(paths, "siesta", fake.url)
    manager, _, _ = await front_door()
    remote = manager.remotes.remotes["box"]
    await until(lambda: "a" in remote.views, what="box to list a")
    for name in ("b", "c", "d"):
        fake.send({"reason": "added", "model": snapshot(name)})
    fake.send({"reason": "changed", "model": snapshot("a", memory=7)})
    await until(lambda: remote.views["a"].info.memory == 7, what="the last event")
    assert sorted(remote.views) == ["a", "b"]


# ---- how long it may take -------------------------------------------------------------------------------


def test_load_timeout_is_a_setting_of_each_remote():
    remotes, errors = parse_remotes({"remotes": {
        "set": {"kind": "siesta", "url": "http://h:1", "load_timeout": "90s"},
        "unset": {"kind": "siesta", "url": "http://h:1"},
        "never": {"kind": "siesta", "url": "http://h:1", "load_timeout": "never"},
        "zero": {"kind": "siesta", "url": "http://h:1", "load_timeout": 0},
        "soonish": {"kind": "siesta", "url": "http://h:1", "load_timeout": "soonish"},
    }}, Path("settings.toml"), environ={})
    assert remotes["set"].load_timeout == 90.0 and remotes["unset"].load_timeout is None
    assert sorted(remotes) == ["set", "unset"]
    text = "\n".join(errors)
    for name in ("never", "zero", "soonish"):
        assert f"[remotes.{name}]: key load_timeout" in text


@pytest.mark.parametrize("kind, action", [("siesta", "load"), ("siesta", "unload"), ("ollama", "load"),
                                          ("ollama", "unload"), ("lemonade", "load"), ("lemonade", "unload")])
async def test_a_load_or_unload_ends_at_the_remotes_load_timeout(servers, http, kind, action):
    async def hang(request: web.Request) -> web.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    path = {"siesta": f"/api/v1/{action}", "ollama": "/api/generate", "lemonade": f"/api/v1/{action}"}[kind]
    fake = await servers(ScriptedServer([web.post(path, hang)]))
    remote = engine(kind, fake.url, http, load_timeout=0.5)
    started = time.monotonic()
    async with asyncio.timeout(20):
        with pytest.raises(RemoteRefused, match=r"no answer within 0.5 s \(the load_timeout of remote 'box'") as caught:
            await getattr(remote, action)("m")
    assert caught.value.status == 504 and time.monotonic() - started < 5
    assert "[remotes.box]" in str(caught.value)


async def test_without_its_own_load_timeout_a_remote_gets_the_global_one(servers, front_door, paths):
    fake = await servers(FakeSiesta([snapshot("tiny", state="unloaded")]))
    fake.action_gate = asyncio.Event()  # never set: the other Siesta never finishes the load
    settings_for(paths, "siesta", fake.url)
    manager, http, url = await front_door(load_timeout=1)
    await until(lambda: "tiny" in manager.remotes.remotes["box"].views, what="box to list tiny")
    started = time.monotonic()
    async with asyncio.timeout(20), http.post(url + "/api/v1/load", json={"model": "box/tiny"}) as resp:
        body = await resp.json()
    assert resp.status == 502 and "within 1 s" in body["error"]["message"]
    assert time.monotonic() - started < 5


async def test_a_routed_answer_silent_for_longer_than_load_timeout_is_cut(servers, front_door, paths):
    async def stalls(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"choices": []}\n\n')
        await asyncio.Event().wait()  # and then nothing, ever
        return response

    fake = await servers(ScriptedServer([web.get("/v1/models", answer({"data": [{"id": "m"}]})),
                                         web.post("/v1/chat/completions", stalls)]))
    settings_for(paths, "openai", fake.url, 'load_timeout = "1s"\n')
    manager, http, url = await front_door()
    await until(lambda: "m" in manager.remotes.remotes["box"].views, what="box to list m")
    started = time.monotonic()
    async with asyncio.timeout(20):
        with pytest.raises(aiohttp.ClientPayloadError):
            async with http.post(url + "/v1/chat/completions",
                                 json={"model": "box/m", "messages": [], "stream": True}) as resp:
                assert resp.status == 200
                await resp.read()
    assert time.monotonic() - started < 6
    await until(lambda: manager.remotes.remotes["box"].views["m"].in_flight == 0, what="the request to end")
