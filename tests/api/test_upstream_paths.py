"""Only plain paths go upstream (app/api/names.py): an encoded ``..``, ``/`` or ``\\`` in a
``/v1`` path must never reach a remote's or a model server's other routes.

Before: ``POST /v1/%2e%2e/admin/delete`` for an ``openai`` remote (url ``.../v1``, an
api_key) arrived upstream as ``POST /admin/delete`` with the remote's key; the same reached
Ollama's ``/api/pull`` and llama-server's ``/slots``.
"""

from __future__ import annotations

import pytest
import yarl
from aiohttp import web

from app.api.names import forward_path
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)

HOSTILE_PATHS = [
    "/v1/%2e%2e/admin/delete",
    "/v1/%2E%2E/admin/delete",
    "/v1/../admin/delete",
    "/v1/chat/%2e%2e/%2e%2e/api/pull",
    "/v1/%2e/chat/completions",
    "/v1/./chat/completions",
    "/v1/...",
    "/v1/a%2F..%2F..%2Fapi%2Fcreate",
    "/v1/a%5C..%5Cslots",
    "/v1//slots",
    "/v1/chat/completions/",
    "/v1/%252e%252e/admin",
    "/v1/..;/admin",
    "/v1/caf%C3%A9",
]


class RecordingUpstream:
    """An OpenAI server that lists one model and records every request it gets."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []  # (method, raw path, Authorization)
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> RecordingUpstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.any)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    async def any(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.raw_path, request.headers.get("Authorization", "")))
        if request.path == "/v1/models":
            return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})
        return web.json_response({"path": request.raw_path})

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def upstream():
    server = await RecordingUpstream().start()
    yield server
    await server.stop()


async def _post(http, url: str, raw_path: str, body: dict) -> tuple[int, dict]:
    async with http.post(yarl.URL(url + raw_path, encoded=True), json=body) as resp:
        return resp.status, await resp.json()


async def test_no_encoded_dot_segment_reaches_a_remote_with_its_key(front_door, paths, upstream):
    paths.settings_file.write_text(f'[remotes.oa]\nkind = "openai"\nurl = "{upstream.url}/v1"\napi_key = "sekrit"\n')
    manager, http, url = await front_door()
    await until(lambda: len(manager.remotes.snapshots()) == 1)
    for raw_path in HOSTILE_PATHS:
        status, body = await _post(http, url, raw_path, {"model": "oa/m"})
        assert status == 400, raw_path
        assert body["error"]["code"] == "invalid_path", raw_path
    assert [s for s in upstream.seen if s[0] == "POST"] == []

    # A plain path still goes, rebuilt, with its query, and with the key.
    status, body = await _post(http, url, "/v1/chat/completions?api-version=2", {"model": "oa/m"})
    assert status == 200 and body["path"] == "/v1/chat/completions?api-version=2"
    assert upstream.seen[-1] == ("POST", "/v1/chat/completions?api-version=2", "Bearer sekrit")
    status, body = await _post(http, url, "/v1/%63hat/completions", {"model": "oa/m"})  # %63 is "c"
    assert status == 200 and body["path"] == "/v1/chat/completions"


async def test_no_encoded_dot_segment_reaches_a_local_models_server(front_door, write_recipe):
    write_recipe("a")
    manager, http, url = await front_door()
    for raw_path in ("/v1/%2e%2e/slots", "/v1/%2e%2e/lora-adapters", "/v1/a%2F..%2F..%2Fslots"):
        status, body = await _post(http, url, raw_path, {"model": "a"})
        assert status == 400 and body["error"]["code"] == "invalid_path", raw_path
        assert raw_path[:20] in body["error"]["message"]  # the message names the request
    assert manager.get("a").state.value == "unloaded"  # refused before any load
    status, body = await _post(http, url, "/v1/chat/completions", {"model": "a"})
    assert status == 200 and body["path"] == "/v1/chat/completions"


def test_the_forwarded_path_is_rebuilt_from_decoded_segments():
    from aiohttp.test_utils import make_mocked_request

    def path_of(raw: str) -> str:
        return forward_path(make_mocked_request("POST", raw))

    assert path_of("/v1/chat/completions") == "/v1/chat/completions"
    assert path_of("/v1/%65mbeddings?x=1") == "/v1/embeddings?x=1"
    assert path_of("/v1/audio/speech.v2~x") == "/v1/audio/speech.v2~x"


async def test_a_newline_in_a_path_gets_a_json_400_not_the_routers_plain_404(front_door, write_recipe):
    """Found by schemathesis: ``.`` in a route's pattern does not match a newline, so such a
    path fell through to aiohttp's plain-text 404."""
    write_recipe("a")
    manager, http, url = await front_door()
    status, body = await _post(http, url, "/v1/chat%0Acompletions", {"model": "a"})
    assert status == 400 and body["error"]["code"] == "invalid_path"
    async with http.get(yarl.URL(url + "/api/v1/models/a%0Ab", encoded=True)) as resp:
        assert resp.status in (400, 404) and (await resp.json())["error"]["code"] in ("name_too_long", "model_not_found")
    assert manager.get("a").state.value == "unloaded"
