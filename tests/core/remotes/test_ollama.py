"""An Ollama as a remote (``kind = "ollama"``), through a real ModelManager and front door,
against the fake Ollama of :mod:`tests.fakes.ollama`: its models in Siesta's lists, chats
routed to it, load and unload, Ollama's own idle clock set to Siesta's timeout, and an
Ollama that does not answer."""

from __future__ import annotations

import asyncio
import time
import tomllib
from typing import Any

import aiohttp
import pytest

from app.core.remotes.config import RemoteConfig
from app.core.remotes.engine_api import HOP_HEADER, RemoteRefused
from app.core.remotes.ollama_engine import OllamaEngine, seconds_until
from tests.fakes.ollama import FakeOllama, ollama_time
from tests.fakes.remote import chat, get_json, until

pytestmark = pytest.mark.timeout(60)

KEY = "ollama-key-for-this-remote-only"
SMALL = "llama3.2:latest"
BIG = "hf.co/bartowski/Qwen3-0.6B-GGUF:Q4_K_M"  # a name with "/" in it: ol/hf.co/... splits on the first
SIZES = {SMALL: 2_019_393_189, BIG: 484_220_000, "shared": 1_000}


@pytest.fixture
async def ollama():
    fake = FakeOllama(SIZES, api_key=KEY)
    await fake.start()
    yield fake
    await fake.stop()


def write_settings(paths, fake: FakeOllama, *, name: str = "ol", extra: str = "") -> None:
    paths.settings_file.write_text(
        "# Siesta settings written by a test: this comment stays\n"
        f"[remotes.{name}]\n"
        'kind = "ollama"\n'
        f'url = "{fake.url}"\n'
        f'api_key = "{KEY}"  # the key for this remote only\n' + extra,
        encoding="utf-8")


async def listed(manager, *models: str, name: str = "ol") -> None:
    remote = manager.remotes.remotes[name]
    await until(lambda: all(m in remote.views for m in models), what=f"{name} to list {models}")


def keep_alives(fake: FakeOllama, model: str = SMALL) -> list[Any]:
    """The keep_alive of each /api/generate for ``model`` that set one (an unload sends 0)."""
    return [c.body["keep_alive"] for c in fake.calls_to("/api/generate")
            if c.body.get("model") == model and "keep_alive" in c.body]


# ---- listing ------------------------------------------------------------------------------------


async def test_lists_installed_models_and_the_loaded_ones_with_ollamas_countdown(ollama, front_door, paths):
    ollama.load_now(BIG, keep_alive=600)
    write_settings(paths, ollama)
    manager, http, url = await front_door()
    await listed(manager, SMALL, BIG, "shared")

    models = {m["name"]: m for m in (await get_json(http, f"{url}/api/v1/models"))["models"]}
    small, big = models[f"ol/{SMALL}"], models[f"ol/{BIG}"]
    assert small["remote"] == "ol" and small["remote_kind"] == "ollama" and small["remote_model"] == SMALL
    assert small["state"] == "unloaded" and small["memory"] is None and small["unloads_in"] is None
    # Ollama's size is RAM and VRAM together: Siesta's memory is the part not on the GPU
    assert big["state"] == "ready" and big["vram"] == SIZES[BIG] // 2
    assert big["memory"] == SIZES[BIG] - SIZES[BIG] // 2
    assert 590 < big["unloads_in"] <= 600.01  # Ollama's own expires_at, not Siesta's timeout
    assert big["unload_timeout"] == 300 and big["timeout_source"] == "global" and big["can_load"] is True
    assert (await get_json(http, f"{url}/api/v1/models/ol/{BIG}"))["state"] == "ready"

    v1 = {m["id"]: m for m in (await get_json(http, f"{url}/v1/models"))["data"]}
    assert v1[f"ol/{SMALL}"]["owned_by"] == "ol" and v1[f"ol/{SMALL}"]["state"] == "unloaded"
    assert v1[f"ol/{BIG}"]["state"] == "ready"

    async with http.get(f"{url}/api/v1/remotes") as resp:
        text = await resp.text()
    assert KEY not in text
    (described,) = (await get_json(http, f"{url}/api/v1/remotes"))["remotes"]
    assert described == {**described, "name": "ol", "kind": "ollama", "url": ollama.url, "api_key": "(set)",
                         "status": "ok", "error": None, "models": 3}
    # every call carried the key, and the hop header that keeps two Siestas from looping
    assert ollama.calls and all(c.headers.get("Authorization") == f"Bearer {KEY}" for c in ollama.calls)
    assert all(c.headers.get(HOP_HEADER) == "1" for c in ollama.calls)


async def test_an_answer_in_the_wrong_shape_is_a_clear_error_not_a_crash(ollama, front_door, paths, write_recipe):
    ollama.bad_shape = True
    write_recipe("local")
    write_settings(paths, ollama)
    manager, http, url = await front_door()
    remote = manager.remotes.remotes["ol"]
    await until(lambda: remote.status == "error", what="the remote to be in error")
    (described,) = (await get_json(http, f"{url}/api/v1/remotes"))["remotes"]
    assert described["status"] == "error" and 'expected {"models"' in described["error"]
    assert [m["name"] for m in (await get_json(http, f"{url}/api/v1/models"))["models"]] == ["local"]
    ollama.bad_shape = False
    await until(lambda: remote.status == "ok", timeout=5, what="the remote to recover after its back-off")


# ---- requests -----------------------------------------------------------------------------------


async def test_chat_reaches_ollama_by_qualified_name_and_by_a_bare_name_no_recipe_has(
        ollama, front_door, paths, write_recipe):
    write_recipe("shared")  # a local model with the name of one on Ollama
    write_settings(paths, ollama)
    manager, http, url = await front_door()
    await listed(manager, SMALL, "shared")

    for name in (f"ol/{SMALL}", SMALL):
        status, body = await chat(http, url, name)
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == "hello from ollama" and body["model"] == SMALL
    sent = ollama.calls_to("/v1/chat/completions")
    assert [c.body["model"] for c in sent] == [SMALL, SMALL]  # Ollama's own name for it
    assert all(c.headers["Authorization"] == f"Bearer {KEY}" for c in sent)

    status, body = await chat(http, url, "shared")  # the local recipe wins its bare name
    assert status == 200 and body["pid"] == manager.get("shared").pid
    assert len(ollama.calls_to("/v1/chat/completions")) == 2
    status, body = await chat(http, url, "ol/shared")
    assert status == 200 and body["model"] == "shared"
    assert body["choices"][0]["message"]["content"] == "hello from ollama"

    status, body = await chat(http, url, f"ol/{SMALL}", keep_alive="2m")
    assert status == 200
    assert "keep_alive" not in ollama.calls_to("/v1/chat/completions")[-1].body  # Ollama's /v1 ignores it
    await until(lambda: 120 in keep_alives(ollama), what="keep_alive 120 on /api/generate")
    status, body = await chat(http, url, "ol/nope")
    assert status == 404 and "not found" in body["error"]["message"]


async def test_a_bare_name_two_remotes_have_is_ambiguous(ollama, front_door, paths):
    write_settings(paths, ollama, extra=f'\n[remotes.ol2]\nkind = "ollama"\nurl = "{ollama.url}"\n'
                                        f'api_key = "{KEY}"\n')
    manager, http, url = await front_door()
    await listed(manager, SMALL)
    await listed(manager, SMALL, name="ol2")
    status, body = await chat(http, url, SMALL)
    assert status == 409 and body["error"]["code"] == "ambiguous_model"
    assert body["error"]["candidates"] == [f"ol/{SMALL}", f"ol2/{SMALL}"]
    status, body = await chat(http, url, f"ol2/{SMALL}")
    assert status == 200


async def test_load_and_unload_through_the_management_api(ollama, front_door, paths):
    write_settings(paths, ollama)
    manager, http, url = await front_door()
    await listed(manager, BIG)
    ollama.load_gate = asyncio.Event()

    async def load() -> tuple[int, Any]:
        async with http.post(f"{url}/api/v1/load", json={"model": f"ol/{BIG}"}) as resp:
            return resp.status, await resp.json()

    loading = asyncio.create_task(load())
    call = await ollama.wait_for_call(lambda c: c.path == "/api/generate")
    assert call.body == {"model": BIG}  # no prompt: Ollama only loads it
    await asyncio.sleep(0.1)
    assert not loading.done()  # a load takes as long as Ollama takes
    ollama.load_gate.set()
    status, body = await loading
    assert status == 200, body
    assert body["name"] == f"ol/{BIG}" and body["state"] == "ready" and body["remote"] == "ol"
    assert ollama.loads == 1

    async with http.post(f"{url}/api/v1/unload", json={"model": f"ol/{BIG}"}) as resp:
        body = await resp.json()
    assert resp.status == 200 and body["state"] == "unloaded"
    assert ollama.calls_to("/api/generate")[-1].body == {"model": BIG, "keep_alive": 0}
    assert BIG not in ollama.loaded

    async with http.post(f"{url}/api/v1/load", json={"model": "ol/nope:7b"}) as resp:
        body = await resp.json()
    assert resp.status == 404 and body["error"]["code"] == "remote_refused" and "not found" in body["error"]["message"]


async def test_a_load_through_siesta_gets_siestas_timeout(ollama, front_door, paths):
    write_settings(paths, ollama)
    manager, http, url = await front_door(global_unload_timeout=90)
    await listed(manager, SMALL)
    async with http.post(f"{url}/api/v1/load", json={"model": f"ol/{SMALL}"}) as resp:
        assert resp.status == 200
    await until(lambda: 90 in keep_alives(ollama), timeout=2, what="keep_alive 90 after a load")


# ---- Ollama's idle clock ---------------------------------------------------------------------------


async def test_siesta_sets_ollamas_keep_alive_to_its_timeout_and_shows_ollamas_countdown(
        ollama, front_door, paths):
    write_settings(paths, ollama)
    manager, http, url = await front_door(global_unload_timeout=90)
    remote = manager.remotes.remotes["ol"]
    await listed(manager, SMALL)
    model_url = f"{url}/api/v1/models/ol/{SMALL}"

    assert (await chat(http, url, f"ol/{SMALL}"))[0] == 200
    await until(lambda: keep_alives(ollama) == [90], what="keep_alive 90 after the request")

    async def counting_down_from(seconds: float) -> dict[str, Any] | None:
        snap = await get_json(http, model_url)
        left = snap["unloads_in"]
        ok = snap["state"] == "ready" and left is not None and seconds - 10 < left <= seconds + 0.01
        return snap if ok else None

    snap = await until(lambda: counting_down_from(90), poke=remote.poke, what="Ollama's countdown from 90 s")
    assert snap["unload_timeout"] == 90 and snap["timeout_source"] == "global" and snap["in_flight"] == 0

    # The user's own timeout for it: written to settings.toml, comments kept, sent at once
    async with http.patch(model_url, json={"unload_timeout": "2m"}) as resp:
        body = await resp.json()
    assert resp.status == 200, body
    assert body["unload_timeout"] == 120 and body["timeout_source"] == "remote"
    text = paths.settings_file.read_text(encoding="utf-8")
    assert "# Siesta settings written by a test: this comment stays" in text
    assert "# the key for this remote only" in text
    assert tomllib.loads(text)["remotes"]["ol"]["timeouts"] == {SMALL: "2m"}
    await until(lambda: keep_alives(ollama)[-1:] == [120], what="keep_alive 120 once the timeout is set")
    await until(lambda: counting_down_from(120), poke=remote.poke, what="Ollama's countdown from 120 s")

    # ... and it is what the next request's keep_alive is
    before = len(keep_alives(ollama))
    assert (await chat(http, url, f"ol/{SMALL}"))[0] == 200
    await until(lambda: keep_alives(ollama)[before:] == [120], what="keep_alive 120 after the next request")

    # A request's keep_alive decides the idle period after it: never is -1 for Ollama
    assert (await chat(http, url, f"ol/{SMALL}", keep_alive="never"))[0] == 200
    await until(lambda: keep_alives(ollama)[-1:] == [-1], what="keep_alive -1")
    snap = await until(lambda: _unloads_never(http, model_url), poke=remote.poke, what="no countdown")
    assert snap["unload_timeout"] is None and snap["timeout_source"] == "request"

    # Ollama's own clock unloads it; Siesta shows it unloaded at its next listing
    assert (await chat(http, url, f"ol/{SMALL}", keep_alive="30s"))[0] == 200
    await until(lambda: keep_alives(ollama)[-1:] == [30], what="keep_alive 30")
    ollama.advance(31)
    await until(lambda: _state_is(http, model_url, "unloaded"), poke=remote.poke, what="the model to expire")


async def test_a_request_without_keep_alive_goes_back_to_siestas_timeout(ollama, front_door, paths):
    write_settings(paths, ollama)
    manager, http, url = await front_door(global_unload_timeout=90)
    await listed(manager, SMALL)
    assert (await chat(http, url, f"ol/{SMALL}", keep_alive="never"))[0] == 200
    await until(lambda: keep_alives(ollama)[-1:] == [-1], what="keep_alive -1")
    assert (await chat(http, url, f"ol/{SMALL}"))[0] == 200  # the last request to finish decides, as locally
    await until(lambda: len(keep_alives(ollama)) == 2, what="a second keep_alive")
    assert keep_alives(ollama) == [-1, 90]


async def _unloads_never(http: aiohttp.ClientSession, model_url: str) -> dict[str, Any] | None:
    snap = await get_json(http, model_url)
    return snap if snap["state"] == "ready" and snap["unloads_in"] is None else None


async def _state_is(http: aiohttp.ClientSession, model_url: str, state: str) -> bool:
    return (await get_json(http, model_url))["state"] == state


# ---- an Ollama that does not answer -------------------------------------------------------------


async def test_an_unreachable_ollama_leaves_the_list_and_answers_502_at_once(ollama, front_door, paths,
                                                                            write_recipe):
    write_recipe("local")
    write_settings(paths, ollama)
    manager, http, url = await front_door()
    remote = manager.remotes.remotes["ol"]
    await listed(manager, SMALL)
    await ollama.stop()  # nothing listens on its port now
    remote.poke()
    await until(lambda: remote.status == "unreachable", what="the remote to be unreachable")

    (described,) = (await get_json(http, f"{url}/api/v1/remotes"))["remotes"]
    assert described["status"] == "unreachable" and ollama.url in described["error"]
    assert described["models"] == 0 and described["retry_in"] is not None
    assert [m["name"] for m in (await get_json(http, f"{url}/api/v1/models"))["models"]] == ["local"]
    assert [m["id"] for m in (await get_json(http, f"{url}/v1/models"))["data"]] == ["local"]

    started = time.monotonic()
    status, body = await chat(http, url, f"ol/{SMALL}")
    assert status == 502 and body["error"]["code"] == "remote_unreachable" and body["error"]["remote"] == "ol"
    assert time.monotonic() - started < 1.5
    status, body = await chat(http, url, "local")  # local models keep working
    assert status == 200 and body["pid"] == manager.get("local").pid


async def test_a_request_to_an_unreachable_remote_leaves_no_model_behind(ollama, front_door, paths):
    write_settings(paths, ollama)
    manager, http, url = await front_door()
    remote = manager.remotes.remotes["ol"]
    await listed(manager, SMALL)
    await ollama.stop()
    remote.poke()
    await until(lambda: remote.status == "unreachable", what="the remote to be unreachable")
    assert (await chat(http, url, f"ol/{SMALL}"))[0] == 502
    assert [m["id"] for m in (await get_json(http, f"{url}/v1/models"))["data"]] == []


# ---- expires_at -------------------------------------------------------------------------------------


def test_expires_at_with_nanoseconds_and_an_offset_is_read():
    now = time.time()
    assert seconds_until(ollama_time(now + 120), now) == pytest.approx(120, abs=1e-3)
    assert seconds_until("2025-06-04T14:38:31.837531234-07:00", 1749073111.0) == pytest.approx(0.837531, abs=1e-5)
    assert seconds_until("2025-06-04T21:38:31.5Z", 1749073100.0) == pytest.approx(11.5)


def test_a_far_future_expires_at_means_never_and_bad_ones_mean_unknown():
    now = time.time()
    assert seconds_until(ollama_time(None), now) is None  # negative keep_alive: Ollama writes a year near 2318
    assert seconds_until("2318-04-11T23:47:16.854775807+02:00", now) is None
    assert seconds_until("9999-12-31T23:59:59.999999999Z", now) is None
    assert seconds_until("2020-01-01T00:00:00Z", now) == 0.0  # already past: due now
    for bad in ("0001-01-01T00:00:00Z", "", "soon", "2025-06-04T14:38:31", "10000-01-01T00:00:00Z"):
        assert seconds_until(bad, now) is None, bad


async def test_siesta_never_loads_a_model_just_to_set_its_clock(ollama):
    async with aiohttp.ClientSession() as http:
        engine = OllamaEngine(RemoteConfig("ol", "ollama", ollama.url, KEY), http)
        await engine.after_request(SMALL, 60.0)  # Ollama unloaded it meanwhile
        assert ollama.calls_to("/api/generate") == [] and ollama.loaded == {}
        ollama.load_now(SMALL)
        await engine.after_request(SMALL, 59.2)
        await engine.after_request(SMALL, None)
        assert keep_alives(ollama) == [60, -1]  # whole seconds, rounded up; -1 keeps it loaded


async def test_wrong_shapes_from_ollama_are_refused_with_a_message():
    async with aiohttp.ClientSession() as http:
        engine = OllamaEngine(RemoteConfig("ol", "ollama", "http://127.0.0.1:1"), http)

        async def answer(method: str, path: str, body: Any = None, **kw: Any) -> Any:
            return {"/api/tags": {"models": [{"name": SMALL}]}, "/api/ps": {"models": {"x": 1}},
                    "/api/generate": ["load"]}[path]

        engine.call = answer  # type: ignore[method-assign]
        with pytest.raises(RemoteRefused, match=r'expected \{"models"'):
            await engine.list_models()
        with pytest.raises(RemoteRefused, match="expected one JSON object"):
            await engine.load(SMALL)
        assert engine.openai_url("/v1/chat/completions") == "http://127.0.0.1:1/v1/chat/completions"
