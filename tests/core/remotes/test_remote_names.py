"""Names sent to a remote by clients, and settings written for a remote: a model the remote
has not listed leaves nothing behind in Siesta (no entry once its request ends, no timeout
written), a remote model name over 256 characters is refused before anything is kept or
sent, and a remote URL with a user name or password in it is refused without showing it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from app.core.errors import UnknownModel
from app.core.remotes import ModelNameTooLong, RemoteModelNotListed, parse_remotes
from tests.fakes.ollama import FakeOllama
from tests.fakes.remote import chat, get_json
from tests.fakes.siesta import FakeSiesta, snapshot
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def siesta():
    fake = FakeSiesta([snapshot("tiny")])
    await fake.start()
    yield fake
    await fake.stop()


async def start_with(front_door, paths, kind: str, url: str):
    paths.settings_file.write_text(f'# my settings\n[remotes.box]\nkind = "{kind}"\nurl = "{url}"\n')
    manager, http, base = await front_door()
    remote = manager.remotes.remotes["box"]
    await until(lambda: remote.status == "ok" and remote.views, what="box to list its models")
    return manager, remote, http, base


# ---- made-up names ---------------------------------------------------------------------------------------


async def test_requests_for_names_the_remote_never_listed_leave_no_model_behind(siesta, front_door, paths):
    manager, remote, http, url = await start_with(front_door, paths, "siesta", siesta.url)
    for i in range(20):
        status, body = await chat(http, url, f"box/made-up-{i}-" + "x" * 200)
        assert status == 200 and body["choices"][0]["message"]["content"].startswith("from made-up-")
    assert sorted(remote.views) == ["tiny"]
    assert [m["name"] for m in (await get_json(http, f"{url}/api/v1/models"))["models"]] == ["box/tiny"]


async def test_a_remote_model_name_over_256_characters_is_refused_before_it_is_sent(siesta, front_door, paths):
    manager, remote, http, url = await start_with(front_door, paths, "siesta", siesta.url)
    longest, too_long = "m" * 256, "m" * 257
    assert manager.find_remote(f"box/{longest}") == (remote, longest)  # 256 characters: the remote decides
    with pytest.raises(ModelNameTooLong, match="257 characters: at most 256"):
        manager.find_remote(f"box/{too_long}")
    assert isinstance(ModelNameTooLong("box", 257), UnknownModel)  # an API that knows it not answers 404
    status, body = await chat(http, url, f"box/{too_long + 'x' * 1_000_000}")
    assert status in (400, 404), body
    assert all(len(c.body["model"]) <= 256 for c in siesta.calls_to("/v1/chat/completions"))
    for method, path, payload in [("POST", "/api/v1/load", {"model": f"box/{too_long}"}),
                                  ("PATCH", f"/api/v1/models/box/{too_long}", {"unload_timeout": "1m"})]:
        async with http.request(method, url + path, json=payload) as resp:
            assert resp.status in (400, 404), (method, path)
    assert not siesta.calls_to("/api/v1/load") and not siesta.calls_to(f"/api/v1/models/{too_long}", "PATCH")
    assert sorted(remote.views) == ["tiny"]


# ---- timeouts only for models the remote lists --------------------------------------------------------


async def test_a_timeout_for_a_model_the_remote_does_not_list_writes_nothing(front_door, paths):
    ollama = FakeOllama({"llama3.2:latest": 1000})
    await ollama.start()
    try:
        manager, remote, http, url = await start_with(front_door, paths, "ollama", ollama.url)
        before = paths.settings_file.read_text()
        async with http.patch(f"{url}/api/v1/models/box/not-there", json={"unload_timeout": "10m"}) as resp:
            body = await resp.json()
        assert resp.status == 404 and "does not list model 'not-there'" in body["error"]["message"]
        assert paths.settings_file.read_text() == before
        with pytest.raises(RemoteModelNotListed):
            await manager.remotes.set_timeout(remote, "not-there", 60.0)
        assert "not-there" not in remote.views and paths.settings_file.read_text() == before

        async with http.patch(f"{url}/api/v1/models/box/llama3.2:latest", json={"unload_timeout": "10m"}) as resp:
            assert resp.status == 200  # a listed one is written as before
        assert '"llama3.2:latest" = "10m"' in paths.settings_file.read_text()
    finally:
        await ollama.stop()


async def test_a_timeout_for_another_siestas_unlisted_model_is_not_asked_for(siesta, front_door, paths):
    manager, remote, http, url = await start_with(front_door, paths, "siesta", siesta.url)
    async with http.patch(f"{url}/api/v1/models/box/not-there", json={"unload_timeout": "10m"}) as resp:
        assert resp.status == 404
    assert not [c for c in siesta.calls if c.method == "PATCH"]


# ---- credentials in a remote's URL ------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://me:hunter2@gpubox:8777", "https://hunter2@gpubox", "http://me:hunter2@[::1]:1",
                                 "http:/me:hunter2@gpubox"])
def test_a_user_name_or_password_in_a_remote_url_is_refused_and_never_shown(url, caplog):
    remotes, errors = parse_remotes({"remotes": {"box": {"kind": "siesta", "url": url}}}, Path("settings.toml"),
                                    environ={})
    assert remotes == {}
    (error,) = errors
    assert "[remotes.box]: key url" in error and "api_key" in error and "SIESTA_REMOTE_BOX_API_KEY" in error
    assert "hunter2" not in error and "hunter2" not in caplog.text


def test_a_url_without_credentials_is_still_taken(caplog):
    caplog.set_level(logging.DEBUG)
    remotes, errors = parse_remotes({"remotes": {"box": {"kind": "siesta", "url": "http://gpubox:8777/"}}},
                                    Path("settings.toml"), environ={})
    assert not errors and remotes["box"].url == "http://gpubox:8777"
