"""The Host and Origin checks: only real loopback addresses, localhost, ``host`` and ``allowed_hosts``.

DNS rebinding needs a name the attacker controls that resolves to 127.0.0.1, so a name
that merely starts with "127." must never pass; only values that parse as loopback IP
addresses do.
"""

from __future__ import annotations

import pytest

from app.api import guard

LOOPBACK_ONLY = {"localhost"}


@pytest.mark.parametrize("host", [
    "127.0.0.1", "127.0.0.1:8777", "127.1.2.3", "127.255.255.254:1", "localhost", "LOCALHOST:8777",
    "[::1]", "[::1]:8777", "::1", "[::ffff:127.0.0.1]:80",
])
def test_loopback_addresses_are_accepted(host):
    assert guard.host_is_allowed(host, LOOPBACK_ONLY)


@pytest.mark.parametrize("host", [
    "127.attacker.example", "127.attacker.example:8777", "127.0.0.1.attacker.example", "127.0.0.1.nip.io:80",
    "127.", "127", "0x7f.0.0.1", "localhost.attacker.example", "evil.example", "[::1].evil.example",
    "[127.0.0.1]", "10.0.0.1", "::2", "[::ffff:10.0.0.1]", "", ":8777",
])
def test_names_that_only_look_like_loopback_are_refused(host):
    assert not guard.host_is_allowed(host, LOOPBACK_ONLY)


async def test_host_header_starting_with_127_is_refused(front_door):
    manager, http, url = await front_door()
    for host in ("127.attacker.example", "127.attacker.example:8777", "127.0.0.1.attacker.example"):
        async with http.get(f"{url}/api/v1/models", headers={"Host": host}) as resp:
            assert resp.status == 403, host
            assert (await resp.json())["error"]["code"] == "forbidden_host"
    for host in ("127.0.0.2:1", "localhost", "[::1]:8777"):
        async with http.get(f"{url}/api/v1/models", headers={"Host": host}) as resp:
            assert resp.status == 200, host


async def test_origin_starting_with_127_is_refused(front_door):
    manager, http, url = await front_door()
    for origin in ("http://127.attacker.example", "http://127.attacker.example:8777", "https://127.0.0.1.evil.example"):
        async with http.get(f"{url}/api/v1/models", headers={"Origin": origin}) as resp:
            assert resp.status == 403, origin
            assert (await resp.json())["error"]["code"] == "forbidden_origin"
    port = url.rsplit(":", 1)[1]  # an Origin is trusted on Siesta's own port only (tests/api/test_origins.py)
    for origin in (f"http://127.0.0.1:{port}", f"http://[::1]:{port}", f"http://localhost:{port}"):
        async with http.get(f"{url}/api/v1/models", headers={"Origin": origin}) as resp:
            assert resp.status == 200, origin


async def test_allowed_hosts_are_accepted_as_host_and_origin(front_door, monkeypatch):
    monkeypatch.setenv("SIESTA_ALLOWED_HOSTS", "Box.Local, lan-name:8777")
    manager, http, url = await front_door()
    assert manager.settings.allowed_hosts == ["Box.Local", "lan-name:8777"]
    port = url.rsplit(":", 1)[1]
    for headers in ({"Host": "box.local"}, {"Host": "box.local:8777"}, {"Host": "LAN-NAME:9"},
                    {"Origin": f"http://box.local:{port}"}, {"Origin": f"http://lan-name:{port}"}):
        async with http.get(f"{url}/api/v1/models", headers=headers) as resp:
            assert resp.status == 200, headers
    for headers in ({"Host": "other.local"}, {"Host": "box.local.evil.example"}, {"Host": "127.box.local"},
                    {"Origin": "http://other.local"}, {"Origin": "http://box.local.evil.example"}):
        async with http.get(f"{url}/api/v1/models", headers=headers) as resp:
            assert resp.status == 403, headers


async def test_configured_host_is_accepted(manager_factory):
    """A configured ``host`` (here a name that resolves to loopback) is accepted as Host and Origin."""
    import aiohttp

    from app.api.server import ApiServer

    manager = await manager_factory(host="localhost")
    server = ApiServer(manager)
    await server.start(port=0)
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{server.port}"
            for headers in ({"Host": f"localhost:{server.port}"}, {"Origin": f"http://localhost:{server.port}"}):
                async with http.get(f"{url}/api/v1/models", headers=headers) as resp:
                    assert resp.status == 200
            async with http.get(f"{url}/api/v1/models", headers={"Host": "127.x"}) as resp:
                assert resp.status == 403
    finally:
        await server.stop()


def test_configured_host_name_and_allowed_hosts_in_the_accepted_set(make_settings):
    class FakeManager:
        settings = make_settings(host="siesta.lan", allowed_hosts="a.example,[fd00::1]:8777").values

    names = guard.allowed_host_names(FakeManager())  # type: ignore[arg-type]
    assert {"siesta.lan", "a.example", "fd00::1"} <= names
    assert guard.host_is_allowed("siesta.lan:8777", names)
    assert guard.host_is_allowed("[fd00::1]:8777", names)
    assert not guard.host_is_allowed("127.siesta.lan", names)
