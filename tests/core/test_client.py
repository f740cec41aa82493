"""The client of a Siesta elsewhere (:mod:`app.core.client`) against a real front
door on a real socket, with fake-backend models: its list and events, actions that land in
the served Siesta's files, settings, errors as the core's exceptions, a URL where nothing
answers, the API key, and countdowns that do not depend on the other machine's clock."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from app.api.server import ApiServer
from app.core.client import ManagerClient, Unreachable
from app.core.config.clock import Clock
from app.core.config.durations import USE_GLOBAL
from app.core.config.recipes import read_recipe
from app.core.errors import PersistError, SettingFixed, UnknownModel
from app.core.models.model import ModelUnavailable

pytestmark = pytest.mark.timeout(60)

FAST_RETRY = (0.05, 0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Any]]:
    """Starts ManagerClients and always closes them (before the servers they follow stop)."""
    clients: list[ManagerClient] = []

    async def start(url: str, api_key: str | None = None, **kwargs: Any) -> ManagerClient:
        client = ManagerClient(url, api_key, retry_seconds=kwargs.pop("retry_seconds", FAST_RETRY), **kwargs)
        clients.append(client)
        await client.start()
        return client

    yield start
    for client in clients:
        await client.close()


async def connection_becomes(client: ManagerClient, state: str, timeout: float = 10.0) -> None:
    """Waits until the client's connection is in ``state``."""
    changed = asyncio.Event()
    unwatch = client.watch_connection(changed.set)
    try:
        async with asyncio.timeout(timeout):
            while client.connection.state != state:
                changed.clear()
                await changed.wait()
    finally:
        unwatch()


def names(client: ManagerClient) -> list[str]:
    return [s["name"] for s in client.snapshots()]


# ---- the list and the events ------------------------------------------------------------------

async def test_start_lists_the_served_models_with_their_state(front_door, write_recipe, connect) -> None:
    write_recipe("tiny", fake=[], unload_timeout="5m")
    write_recipe("spare", fake=[])
    manager, _http, url = await front_door()
    await manager.load("tiny")

    client = await connect(url)

    assert client.connection.ok and client.connection.state == "connected"
    assert names(client) == ["spare", "tiny"]
    tiny = client.listed_snapshot("tiny")
    assert tiny is not None and tiny["state"] == "ready" and tiny["timeout_source"] == "recipe"
    assert tiny["unload_timeout"] == 300.0 and tiny["pid"] == manager.get("tiny").pid
    assert tiny["log_file"] is None  # a path on the other machine means nothing here
    assert 299 <= tiny["unload_at"] - client.clock.now() <= 300.5
    assert client.listed_snapshot("nope") is None
    assert client.recipe_of("tiny") is None and client.paths is None
    assert client.loaded_settings.values.global_unload_timeout == 300.0


async def test_changes_on_the_served_siesta_arrive_as_events(front_door, write_recipe, connect,
                                                             event_log, paths) -> None:
    write_recipe("tiny", fake=[])
    manager, _http, url = await front_door()
    client = await connect(url)
    seen = event_log(client)

    await manager.load("tiny")
    await seen.wait_for("tiny", "loaded", past=True)
    assert client.listed_snapshot("tiny")["state"] == "ready"
    assert seen.reasons("tiny")[:2] == ["loading", "loaded"]

    write_recipe("late", fake=[])
    manager.reload_recipes()
    event = await seen.wait_for("late", "added", past=True)
    assert event["model"]["state"] == "unloaded" and "late" in names(client)

    paths.recipe_file("late").unlink()
    manager.reload_recipes()
    await seen.wait_for("late", "removed", past=True)
    assert "late" not in names(client)


async def test_countdowns_are_on_this_clock_whatever_the_servers_clock_says(front_door, write_recipe,
                                                                             connect) -> None:
    write_recipe("tiny", fake=[], unload_timeout="5m")
    ahead = 3600.0  # the served machine's clock is an hour ahead of this one
    manager, _http, url = await front_door(clock=Clock(wall=lambda: time.time() + ahead, max_slice=0.2))
    client = await connect(url)
    seen_loaded = asyncio.Event()
    client.subscribe(lambda e: e["reason"] == "loaded" and seen_loaded.set())

    await manager.load("tiny")
    await asyncio.wait_for(seen_loaded.wait(), 10)
    tiny = client.listed_snapshot("tiny")
    now = time.time()
    assert manager.get("tiny").unload_at - now > ahead  # the server's own deadline, on its clock
    assert 295 <= tiny["unload_at"] - now <= 300.5
    assert abs(tiny["idle_since"] - now) < 5


# ---- actions land in the served Siesta and its files -------------------------------------------

async def test_load_unload_and_timeouts_through_the_client(front_door, write_recipe, connect, event_log) -> None:
    recipe = write_recipe("tiny", fake=[], unload_timeout="5m")
    write_recipe("other", fake=[])
    manager, _http, url = await front_door()
    client = await connect(url)
    seen = event_log(client)

    loaded = await client.load("tiny")
    assert loaded["state"] == "ready" and manager.get("tiny").state.value == "ready"

    await client.set_model_timeout("tiny", 900.0)
    assert 'unload_timeout = "15m"' in recipe.read_text()
    assert recipe.read_text().startswith("# recipe tiny written by a test")
    await seen.wait_for("tiny", "timeout_changed", past=True)
    assert client.listed_snapshot("tiny")["unload_timeout"] == 900.0

    await client.set_model_timeout("tiny", None)
    assert read_recipe(recipe).unload_timeout is None and 'unload_timeout = "never"' in recipe.read_text()
    await client.set_model_timeout("tiny", USE_GLOBAL)
    assert "unload_timeout" not in recipe.read_text()
    assert manager.get("tiny").effective_timeout()[1] == "global"

    unloaded = await client.unload("tiny")
    assert unloaded["state"] == "unloaded" and manager.get("tiny").state.value == "unloaded"

    await asyncio.gather(client.load("tiny"), client.load("other"))
    assert sorted(await client.unload_all()) == ["other", "tiny"]
    await seen.wait_for("other", "manual", past=True)
    assert all(s["state"] == "unloaded" for s in client.snapshots())


async def test_a_settings_change_lands_in_settings_toml(front_door, write_recipe, connect, paths) -> None:
    manager, _http, url = await front_door(max_loaded_models=2)
    client = await connect(url)

    assert await client.set_setting("global_unload_timeout", "10m") == 600.0
    assert 'global_unload_timeout = "10m"' in paths.settings_file.read_text()
    assert manager.settings.global_unload_timeout == 600.0
    assert client.loaded_settings.values.global_unload_timeout == 600.0
    assert client.loaded_settings.sources["global_unload_timeout"] == "file settings.toml"

    await client.set_setting("memory_budget", "80%")
    assert client.loaded_settings.values.memory_budget.to_setting() == "80%"

    # what a flag pins there, what is not set from here, and a value the setting cannot take
    assert client.loaded_settings.fixed_by("max_loaded_models") == "--max-loaded-models"
    with pytest.raises(SettingFixed, match="--max-loaded-models"):
        await client.set_setting("max_loaded_models", 1)
    with pytest.raises(ValueError, match="not from here"):
        await client.set_setting("port", 9999)
    with pytest.raises(ValueError, match="notify_crash"):
        await client.set_setting("notify_crash", "sometimes")
    assert "notify_crash" not in paths.settings_file.read_text()


async def test_the_servers_errors_are_the_cores_exceptions(front_door, write_recipe, connect) -> None:
    write_recipe("dies", fake=["--exit-at-start", "3"])
    write_recipe("broken", "this is = [not toml\n")
    _manager, _http, url = await front_door()
    client = await connect(url)

    with pytest.raises(UnknownModel, match="'nope' not found"):
        await client.load("nope")
    with pytest.raises(UnknownModel):
        await client.set_model_timeout("nope", 60.0)
    with pytest.raises(ModelUnavailable) as unavailable:
        await client.load("dies")
    assert unavailable.value.code == "model_unavailable" and "exit" in str(unavailable.value)
    with pytest.raises(PersistError) as persist:
        await client.set_model_timeout("broken", 60.0)
    assert persist.value.kind == "invalid"


# ---- the connection ---------------------------------------------------------------------------

async def test_an_unreachable_url_is_reported_retried_and_joined_when_it_answers(manager_factory, write_recipe,
                                                                                 connect, event_log) -> None:
    write_recipe("tiny", fake=[])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    client = await connect(url)

    assert client.connection.state == "unreachable"
    assert url in client.connection.reason and "refused" in client.connection.reason
    assert client.snapshots() == []
    with pytest.raises(Unreachable, match=url):
        await client.load("tiny")

    manager = await manager_factory()
    server = ApiServer(manager)
    await server.start(port=port)
    try:
        await connection_becomes(client, "connected")
        assert names(client) == ["tiny"]
        seen = event_log(client)
        await client.load("tiny")
        await seen.wait_for("tiny", "loaded", past=True)
    finally:
        await server.stop()
    # The server is gone: its models are forgotten, and the client says so and keeps trying.
    await connection_becomes(client, "unreachable")
    assert client.snapshots() == [] and "tiny" in [e["model"]["name"] for e in seen.events if e["reason"] == "removed"]


async def test_the_api_key_is_sent_and_never_shown(front_door, write_recipe, connect, caplog) -> None:
    write_recipe("tiny", fake=[])
    key = "sekret-key-4242"
    _manager, _http, url = await front_door(api_key=key)
    caplog.set_level(logging.DEBUG)

    without = await connect(url)
    assert without.connection.state == "refused"
    assert "401" in without.connection.reason and "API key" in without.connection.reason
    assert without.snapshots() == []

    wrong = await connect(url, "not-the-key")
    assert wrong.connection.state == "refused"

    client = await connect(url, key)
    assert client.connection.ok and names(client) == ["tiny"]
    await client.load("tiny")
    assert client.loaded_settings.values.api_key == key  # what this client sends (Try it uses it)
    assert client.loaded_settings.describe()["api_key"]["value"] == "(set)"
    assert key not in repr(client) and key not in caplog.text
