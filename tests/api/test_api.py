"""The HTTP front door and management API over real sockets, with fake-backend processes."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from app.api.server import ApiServer, PortInUse

pytestmark = pytest.mark.timeout(60)




async def _json(resp: aiohttp.ClientResponse) -> Any:
    return json.loads(await resp.read())


async def test_chat_completion_loads_on_first_request_and_routes_by_model(front_door, write_recipe):
    write_recipe("a")
    write_recipe("b")
    manager, http, url = await front_door()
    for name in ("a", "b"):
        async with http.post(f"{url}/v1/chat/completions", json={"model": name, "messages": []}) as resp:
            assert resp.status == 200
            body = await _json(resp)
            assert body["model"] == name
            assert body["pid"] == manager.get(name).pid
    async with http.get(f"{url}/v1/models") as resp:
        ids = [m["id"] for m in (await _json(resp))["data"]]
    assert ids == ["a", "b"]


async def test_streaming_is_passed_through_chunk_by_chunk(front_door, write_recipe):
    write_recipe("a", fake=["--delay", "0.2", "--chunks", "3"])
    manager, http, url = await front_door()
    await manager.load("a")
    arrivals = []
    async with http.post(f"{url}/v1/chat/completions", json={"model": "a", "stream": True}) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        async for chunk in resp.content.iter_any():
            arrivals.append((time.monotonic(), chunk))
            assert manager.get("a").in_flight == 1 or b"[DONE]" in chunk
    data_chunks = [t for t, c in arrivals if b"tok" in c]
    assert len(data_chunks) >= 3  # not buffered into one piece
    assert data_chunks[-1] - data_chunks[0] >= 0.3
    assert manager.get("a").in_flight == 0


async def test_keep_alive_is_applied_and_removed_before_forwarding_on_every_v1_endpoint(front_door, write_recipe):
    write_recipe("a", unload_timeout="10m")
    manager, http, url = await front_door()
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank"):
        async with http.post(url + path, json={"model": "a", "keep_alive": "2h"}) as resp:
            body = await _json(resp)
            assert resp.status == 200, body
            assert body["keep_alive_seen"] is False and body["path"] == path
        model = (await _json(await http.get(f"{url}/api/v1/models/a")))
        assert model["unload_timeout"] == 7200 and model["timeout_source"] == "request"
    async with http.post(f"{url}/v1/chat/completions", json={"model": "a", "keep_alive": -1}) as resp:
        assert resp.status == 200
    model = await _json(await http.get(f"{url}/api/v1/models/a"))
    assert model["unload_timeout"] is None and model["unload_at"] is None


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_body"),
        (b'{"messages": []}', 400, "missing_model"),
        (b'{"model": 5}', 400, "missing_model"),
        (b'{"model": "nope"}', 404, "model_not_found"),
        (b'{"model": "../../etc/passwd"}', 404, "model_not_found"),
        (b'{"model": "a", "keep_alive": "soon"}', 400, "invalid_keep_alive"),
        (b'{"model": "a", "keep_alive": true}', 400, "invalid_keep_alive"),
    ],
)
async def test_bad_requests_get_openai_shaped_errors(front_door, write_recipe, body, status, code):
    write_recipe("a")
    manager, http, url = await front_door()
    async with http.post(f"{url}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == status
        error = (await _json(resp))["error"]
    assert error["code"] == code
    assert set(error) >= {"message", "type", "code"}
    assert manager.get("a").state.value == "unloaded"


async def test_failed_load_is_503_with_retry_after_and_log_tail(front_door, write_recipe):
    write_recipe("a", fake=["--exit-at-start", "4"])
    manager, http, url = await front_door()
    async with http.post(f"{url}/v1/chat/completions", json={"model": "a"}) as resp:
        assert resp.status == 503
        assert int(resp.headers["Retry-After"]) > 0
        error = (await _json(resp))["error"]
    assert "code 4" in error["message"]
    assert "exiting at start" in error["log_tail"]


async def test_backend_dying_during_request_is_502(front_door, write_recipe):
    write_recipe("a", fake=["--exit-after", "1"])
    manager, http, url = await front_door()
    async with http.post(f"{url}/v1/chat/completions", json={"model": "a"}) as resp:
        assert resp.status == 502
        assert (await _json(resp))["error"]["code"] == "backend_error"
    assert manager.get("a").in_flight == 0


async def test_client_disconnect_mid_stream_ends_the_request_and_starts_the_countdown(front_door, write_recipe):
    write_recipe("a", fake=["--delay", "0.3", "--chunks", "50"], unload_timeout="10m")
    manager, http, url = await front_door()
    model = manager.get("a")
    resp = await http.post(f"{url}/v1/chat/completions", json={"model": "a", "stream": True})
    await resp.content.readany()
    assert model.in_flight == 1
    resp.close()  # the client goes away mid-stream
    deadline = time.monotonic() + 5
    while model.in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert model.in_flight == 0
    assert model.unload_at is not None


async def test_management_load_unload_and_models(front_door, write_recipe):
    write_recipe("a")
    manager, http, url = await front_door()
    async with http.post(f"{url}/api/v1/load", json={"model": "a"}) as resp:
        body = await _json(resp)
        assert resp.status == 200 and body["state"] == "ready" and body["pid"]
        assert body["memory"] and body["memory"] > 1_000_000
    models = (await _json(await http.get(f"{url}/api/v1/models")))["models"]
    keys = {"name", "state", "stale", "in_flight", "unload_timeout", "timeout_source", "idle_since",
            "unload_at", "unloads_in", "pid", "memory", "error"}
    assert keys <= set(models[0])
    health = await _json(await http.get(f"{url}/api/v1/health"))
    assert health["status"] == "ok" and [m["name"] for m in health["models"]] == ["a"]
    assert health["settings"]["stop_timeout"]["source"] == "flag --stop-timeout"
    async with http.post(f"{url}/api/v1/unload", data=b"") as resp:
        assert resp.status == 400
    async with http.post(f"{url}/api/v1/unload", json={"all": True}) as resp:
        assert (await _json(resp))["unloaded"] == ["a"]
    assert manager.get("a").state.value == "unloaded"
    async with http.post(f"{url}/api/v1/load", json={"model": "zzz"}) as resp:
        assert resp.status == 404


async def test_patch_model_timeout_persists_keeping_comments(front_door, write_recipe):
    path = write_recipe("a", '# my model\nbackend = "command"  # inline\ncommand = ["x", "{port}"]\n# end\n')
    manager, http, url = await front_door()
    async with http.patch(f"{url}/api/v1/models/a", json={"unload_timeout": "90m"}) as resp:
        assert resp.status == 200
        assert (await _json(resp))["unload_timeout"] == 5400
    text = path.read_text()
    assert 'unload_timeout = "1h30m"' in text
    assert "# my model" in text and "# inline" in text and "# end" in text
    async with http.patch(f"{url}/api/v1/models/a", json={"unload_timeout": "default"}) as resp:
        assert (await _json(resp))["timeout_source"] == "global"
    assert "unload_timeout" not in path.read_text()
    async with http.patch(f"{url}/api/v1/models/a", json={"unload_timeout": "whenever"}) as resp:
        assert resp.status == 400 and "whenever" in (await _json(resp))["error"]["message"]


async def test_patch_refuses_a_recipe_that_does_not_parse_and_leaves_it_alone(front_door, write_recipe):
    path = write_recipe("a", "backend = [broken\n")
    before = path.read_bytes()
    manager, http, url = await front_door()
    async with http.patch(f"{url}/api/v1/models/a", json={"unload_timeout": "5m"}) as resp:
        assert resp.status == 409
    assert path.read_bytes() == before


async def test_patch_settings_persists_and_refuses_pinned_values(front_door, write_recipe, paths, monkeypatch):
    paths.settings_file.write_text("# mine\nport = 1234\n")
    manager, http, url = await front_door()
    async with http.patch(f"{url}/api/v1/settings", json={"global_unload_timeout": "7m"}) as resp:
        assert resp.status == 200
    assert 'global_unload_timeout = "7m"' in paths.settings_file.read_text()
    assert "# mine" in paths.settings_file.read_text()
    assert manager.global_timeout == 420
    async with http.patch(f"{url}/api/v1/settings", json={"stop_timeout": "1s"}) as resp:
        assert resp.status == 400  # not a run-time setting
    async with http.patch(f"{url}/api/v1/settings", json={"global_unload_timeout": "bogus"}) as resp:
        assert resp.status == 400


async def test_setting_pinned_by_env_is_refused_with_409_naming_it(front_door, monkeypatch):
    monkeypatch.setenv("SIESTA_GLOBAL_UNLOAD_TIMEOUT", "3m")
    manager, http, url = await front_door()
    async with http.patch(f"{url}/api/v1/settings", json={"global_unload_timeout": "7m"}) as resp:
        assert resp.status == 409
        assert "SIESTA_GLOBAL_UNLOAD_TIMEOUT" in (await _json(resp))["error"]["message"]


async def test_events_stream_every_state_change(front_door, write_recipe):
    write_recipe("a", unload_timeout="0.3s")
    manager, http, url = await front_door()
    reasons: list[tuple[str, str]] = []
    async with http.get(f"{url}/api/v1/events") as resp:
        assert resp.content_type == "text/event-stream"
        await http.post(f"{url}/v1/chat/completions", json={"model": "a"})
        async for line in resp.content:
            if line.startswith(b"data: "):
                event = json.loads(line[6:])
                reasons.append((event["reason"], event["model"]["state"]))
                if event["reason"] == "idle" and event["model"]["state"] == "unloaded":
                    break
    lifecycle = [r for r, _ in reasons if r != "measured"]
    assert lifecycle == ["snapshot", "loading", "loaded", "busy", "idle", "unloading", "idle"]
    assert [r for r, _ in reasons].count("measured") == 1  # the load's memory, measured off the loop


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Host": "evil.example"}, 403),
        ({"Host": "localhost:1"}, 200),
        ({"Origin": "https://evil.example"}, 403),
        ({"Origin": "http://localhost:3000"}, 403),  # another local web app (Siesta's own: test_origins.py)
        ({"Origin": "null"}, 403),
    ],
)
async def test_host_and_origin_checks(front_door, headers, status):
    manager, http, url = await front_door()
    async with http.get(f"{url}/api/v1/models", headers=headers) as resp:
        assert resp.status == status


async def test_api_key_protects_both_apis(front_door, write_recipe, monkeypatch):
    monkeypatch.setenv("SIESTA_API_KEY", "s3cret")
    write_recipe("a")
    manager, http, url = await front_door()
    for method, path in (("GET", "/api/v1/models"), ("POST", "/v1/chat/completions")):
        async with http.request(method, url + path, json={"model": "a"}) as resp:
            assert resp.status == 401
        async with http.request(method, url + path, json={"model": "a"},
                                headers={"Authorization": "Bearer s3cret"}) as resp:
            assert resp.status == 200


async def test_port_in_use_names_the_port_and_setting(manager_factory):
    manager = await manager_factory()
    first = ApiServer(manager)
    await first.start(port=0)
    try:
        with pytest.raises(PortInUse) as info:
            await ApiServer(manager).start(port=first.port)
        assert str(first.port) in str(info.value) and "port" in str(info.value)
    finally:
        await first.stop()


async def test_non_loopback_host_without_api_key_logs_a_loud_warning(manager_factory, caplog):
    manager = await manager_factory(host="0.0.0.0")
    server = ApiServer(manager)
    with caplog.at_level("WARNING"):
        await server.start(port=0)
    try:
        assert any("WITHOUT AN API KEY" in r.message for r in caplog.records)
        assert server.url.startswith("http://127.0.0.1:")  # what a local client should use
    finally:
        await server.stop()
