"""Model names are capped wherever one comes in (app/api/names.py): a local name at the
recipe rules' length, a remote's (REMOTE/MODEL) at 256 characters; anything longer is 400
``name_too_long`` and never reaches the manager, its events or its logs.

Before: a request with a 4 MB name was taken as a name, copied into the events, and (with
200 event streams that did not read) took Siesta from 111 MB to 2.6 GB.
"""

from __future__ import annotations

import pytest

from app.api.names import LOCAL_NAME_MAX, REMOTE_NAME_MAX

pytestmark = pytest.mark.timeout(60)


def test_the_caps():
    assert LOCAL_NAME_MAX == 250  # a file name of 255 bytes, less ".toml"
    assert REMOTE_NAME_MAX == 256


async def test_long_names_are_refused_everywhere_a_name_comes_in(front_door):
    manager, http, url = await front_door()
    events: list[dict] = []
    manager.subscribe(events.append)
    huge = "m" * (4 * 1024 * 1024)
    for name in ("m" * (LOCAL_NAME_MAX + 1), "r/" + "m" * (REMOTE_NAME_MAX - 1), huge):
        requests = [("POST", "/v1/chat/completions", {"model": name}),
                    ("POST", "/v1/embeddings", {"model": name, "keep_alive": "5m"}),
                    ("POST", "/api/v1/load", {"model": name}),
                    ("POST", "/api/v1/unload", {"model": name})]
        if len(name) < 8000:  # a path longer than aiohttp's line limit never gets this far
            requests += [("GET", f"/api/v1/models/{name}", None), ("PATCH", f"/api/v1/models/{name}",
                                                                    {"unload_timeout": "5m"})]
            if "/" not in name:
                requests.append(("GET", f"/v1/models/{name}", None))
        for method, path, body in requests:
            async with http.request(method, url + path, json=body) as resp:
                answer = await resp.json()
            what = f"{method} {path[:40]} ({len(name)} characters)"
            if path.startswith("/api/v1/") and len(name) > 64 * 1024:
                assert resp.status == 413, what  # the management body's own cap comes first
                continue
            assert resp.status == 400, what
            assert answer["error"]["code"] == "name_too_long", what
            message = answer["error"]["message"]
            assert str(len(name)) in message and name not in message, what
    assert events == []


async def test_names_at_the_caps_are_still_names(front_door):
    manager, http, url = await front_door()
    for name in ("m" * LOCAL_NAME_MAX, "r/" + "m" * (REMOTE_NAME_MAX - 2)):
        async with http.post(f"{url}/v1/chat/completions", json={"model": name}) as resp:
            assert resp.status == 404, name[:10]  # looked up, and not found
        async with http.post(f"{url}/api/v1/load", json={"model": name}) as resp:
            assert resp.status == 404, name[:10]
