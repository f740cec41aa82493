"""Which pages may use Siesta (app/api/guard.py): Siesta's own origin and ``allowed_origins``
only, and a browser's body only as ``application/json``.

Before: the Origin check ignored the port, and ``/v1`` checked no content type, so a page
of any local dev server could load models and pin them (``keep_alive: "never"``) with a
simple request that the browser sends without asking.
"""

from __future__ import annotations

import tomllib

import pytest

from app.api import guard

pytestmark = pytest.mark.timeout(60)

PAGE = "http://localhost:5173"


async def _post(http, url: str, path: str, body: bytes, **headers: str) -> tuple[int, dict]:
    async with http.post(url + path, data=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_a_page_on_another_local_port_cannot_load_a_model(front_door, write_recipe):
    write_recipe("a")
    manager, http, url = await front_door()
    body = b'{"model": "a", "keep_alive": "never"}'
    for origin in (PAGE, "http://127.0.0.1:3000", "http://[::1]:8080", "https://localhost"):
        for kind in ("text/plain", "application/json"):
            status, answer = await _post(http, url, "/v1/chat/completions", body, Origin=origin,
                                         **{"Content-Type": kind})
            assert status == 403 and answer["error"]["code"] == "forbidden_origin", (origin, kind)
            assert origin in answer["error"]["message"] and "allowed_origins" in answer["error"]["message"]
        status, _ = await _post(http, url, "/api/v1/load", b'{"model": "a"}', Origin=origin,
                                **{"Content-Type": "application/json"})
        assert status == 403
    assert manager.get("a").state.value == "unloaded"


async def test_siestas_own_origin_is_trusted(front_door, write_recipe):
    write_recipe("a")
    manager, http, url = await front_door()
    port = url.rsplit(":", 1)[1]
    for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"http://[::1]:{port}"):
        async with http.get(f"{url}/api/v1/models", headers={"Origin": origin}) as resp:
            assert resp.status == 200, origin
    status, _ = await _post(http, url, "/v1/chat/completions", b'{"model": "a"}', Origin=f"http://localhost:{port}",
                            **{"Content-Type": "application/json"})
    assert status == 200


@pytest.mark.parametrize("kind", ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                                  "multipart/form-data; boundary=x", ""])
async def test_a_browsers_simple_body_is_refused_even_from_a_trusted_origin(front_door, write_recipe, kind):
    write_recipe("a")
    manager, http, url = await front_door(allowed_origins=PAGE)
    headers = {"Origin": PAGE, "Content-Type": kind} if kind else {"Origin": PAGE}
    async with http.post(f"{url}/v1/chat/completions", data=b'{"model": "a"}',
                         headers=headers, skip_auto_headers=["Content-Type"]) as resp:
        assert resp.status == 415
        assert (await resp.json())["error"]["code"] == "unsupported_content_type"
    # Without an Origin (curl, a script), the same body is served.
    async with http.post(f"{url}/v1/chat/completions", data=b'{"model": "a"}',
                         headers={"Content-Type": kind} if kind else {}, skip_auto_headers=["Content-Type"]) as resp:
        assert resp.status == 200
    assert manager.get("a").state.value == "ready"


async def test_allowed_origins_patterns(front_door, write_recipe):
    write_recipe("a")
    manager, http, url = await front_door(allowed_origins="http://localhost:*, app://obsidian.md, vscode-webview://*")
    for origin, status in ((PAGE, 200), ("http://localhost", 200), ("http://127.0.0.1:5173", 403),
                           ("app://obsidian.md", 200), ("app://obsidian.md.evil", 403),
                           ("vscode-webview://1abc2def", 200), ("https://localhost:5173", 403)):
        got, _ = await _post(http, url, "/v1/chat/completions", b'{"model": "a"}', Origin=origin,
                             **{"Content-Type": "application/json"})
        assert got == status, origin


def test_origin_matching():
    patterns = ["http://localhost:*", "chrome-extension://abcdef", "https://example.com", "http://x.test:8080/"]
    assert guard.origin_matches("http://localhost:5173", patterns)
    assert guard.origin_matches("HTTP://LOCALHOST:5173", patterns)
    assert guard.origin_matches("chrome-extension://abcdef", patterns)
    assert guard.origin_matches("https://example.com:443", patterns)  # the default port is no port
    assert guard.origin_matches("http://x.test:8080", patterns)
    assert not guard.origin_matches("chrome-extension://abcdeg", patterns)
    assert not guard.origin_matches("http://localhost.evil:5173", patterns)
    assert not guard.origin_matches("http://example.com", patterns)
    assert not guard.origin_matches("http://x.test:8081", patterns)
    assert not guard.origin_matches("http://*", ["http://*"])  # a wildcard is a pattern, never an origin
    assert not guard.origin_matches("null", patterns)
    assert guard.is_own_origin("http://localhost:8777", {"localhost"}, {8777})
    assert not guard.is_own_origin("http://localhost:8778", {"localhost"}, {8777})
    assert not guard.is_own_origin("https://localhost:8777", {"localhost"}, {8777})
    assert not guard.is_own_origin("http://evil.example:8777", {"localhost"}, {8777})


def test_allowed_origins_are_validated(make_settings):
    from app.core.config.endpoint import SettingsError

    assert make_settings(allowed_origins="http://localhost:*, app://obsidian.md/").values.allowed_origins == [
        "http://localhost:*", "app://obsidian.md"]
    for bad in ("*", "localhost:5173", "http://localhost:99999", "http://a/b", "http://*.example.com"):
        with pytest.raises(SettingsError, match="allowed.origins"):
            make_settings(allowed_origins=bad)


async def test_a_refused_page_is_told_once_and_can_be_allowed(front_door, write_recipe, paths):
    write_recipe("a")
    manager, http, url = await front_door()
    notices: list[dict] = []
    manager.subscribe_notices(notices.append)
    for _ in range(3):
        status, _ = await _post(http, url, "/v1/chat/completions", b'{"model": "a"}', Origin=PAGE,
                                **{"Content-Type": "application/json"})
        assert status == 403
    assert notices == [{"kind": "origin_refused", "origin": PAGE}]  # once per origin
    await manager.allow_origin(PAGE)
    assert manager.settings.allowed_origins == [PAGE]
    assert tomllib.loads(paths.settings_file.read_text())["allowed_origins"] == [PAGE]
    status, _ = await _post(http, url, "/v1/chat/completions", b'{"model": "a"}', Origin=PAGE,
                            **{"Content-Type": "application/json"})
    assert status == 200
    await manager.allow_origin(PAGE)  # twice is once
    assert manager.settings.allowed_origins == [PAGE]


async def test_the_notices_of_a_page_that_makes_up_origins_are_bounded(front_door):
    from app.core.manager import MAX_ORIGIN_NOTICES

    manager, http, url = await front_door()
    notices: list[dict] = []
    manager.subscribe_notices(notices.append)
    for i in range(MAX_ORIGIN_NOTICES + 10):
        async with http.get(f"{url}/api/v1/models", headers={"Origin": f"http://a{i}.evil.example"}) as resp:
            assert resp.status == 403
    async with http.get(f"{url}/api/v1/models", headers={"Origin": "http://x" + "y" * 5_000}) as resp:
        assert resp.status == 403
    assert len(notices) == MAX_ORIGIN_NOTICES


async def test_a_trusted_page_gets_cors_answers_and_no_other_does(front_door, write_recipe):
    """Without them a browser lets a page read nothing, so allowing it would change nothing."""
    write_recipe("a")
    manager, http, url = await front_door(allowed_origins=PAGE, api_key="k")
    preflight = {"Origin": PAGE, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os"}
    async with http.options(f"{url}/v1/chat/completions", headers=preflight) as resp:
        assert resp.status == 204  # before the API key: a browser sends none with a preflight
        assert resp.headers["Access-Control-Allow-Origin"] == PAGE
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        assert "x-stainless-os" in resp.headers["Access-Control-Allow-Headers"]
    async with http.options(f"{url}/v1/chat/completions", headers={**preflight, "Origin": "http://localhost:3000"}) as resp:
        assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers
    auth = {"Authorization": "Bearer k", "Content-Type": "application/json"}
    async with http.post(f"{url}/v1/chat/completions", data=b'{"model": "a", "stream": true}',
                         headers={**auth, "Origin": PAGE}) as resp:
        assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == PAGE  # a stream too
        assert "Origin" in resp.headers["Vary"]
        await resp.read()
    async with http.get(f"{url}/api/v1/models", headers={"Origin": PAGE}) as resp:
        assert resp.status == 401 and resp.headers["Access-Control-Allow-Origin"] == PAGE  # it may read why
    async with http.post(f"{url}/v1/chat/completions", data=b'{"model": "a"}', headers=auth) as resp:
        assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers
