"""The memory settings (memory_budget, free_memory_floor, notify_memory_pressure) through
every way in: defaults, flag > environment (text or a JSON table) > settings.toml (a string or
a table) > default, the CLI flags, ModelManager.set_setting writing settings.toml (a table as
a table, comments kept), PATCH /api/v1/settings, 409 when pinned, and a hand edit of
settings.toml applied while Siesta runs."""

from __future__ import annotations

import asyncio
import json
import time
import tomllib
from pathlib import Path

import pytest

from app.cli.parser import build_parser, flags
from app.core.config.memory_limits import parse_memory_limit
from app.core.config.settings import RUNTIME_SETTABLE, SettingsError, load_settings, validate_setting

GB = 1024 ** 3
TABLE = {"ram": "16GB", "gpu0": "90%"}


async def _json(resp) -> dict:
    return json.loads(await resp.text())


# ---- loading: defaults, sources, precedence ----------------------------------------------------

def test_defaults_and_their_json_form(tmp_path: Path):
    loaded = load_settings(tmp_path / "none.toml")
    values = loaded.values
    assert values.memory_budget == parse_memory_limit("90%")
    assert values.free_memory_floor == parse_memory_limit("5%")
    assert values.notify_memory_pressure is True
    described = json.loads(json.dumps(loaded.describe()))  # JSON as it is, for /api/v1/health and /settings
    assert described["memory_budget"] == {"value": "90%", "source": "default"}
    assert described["free_memory_floor"] == {"value": "5%", "source": "default"}
    assert described["notify_memory_pressure"] == {"value": True, "source": "default"}
    assert {"memory_budget", "free_memory_floor", "notify_memory_pressure"} <= set(RUNTIME_SETTABLE)


def test_flag_beats_env_beats_file(tmp_path: Path, monkeypatch):
    file = tmp_path / "settings.toml"
    file.write_text('notify_memory_pressure = false\nfree_memory_floor = "1GB"\n\n'
                    '[memory_budget]\nram = "16GB"\ngpu0 = "90%"\n')
    loaded = load_settings(file)
    assert loaded.values.memory_budget == parse_memory_limit(TABLE)
    assert loaded.values.free_memory_floor.for_device("gpu0", None) == GB
    assert loaded.values.notify_memory_pressure is False
    assert loaded.sources["memory_budget"] == loaded.sources["free_memory_floor"] == "file settings.toml"
    assert loaded.describe()["memory_budget"]["value"] == TABLE

    monkeypatch.setenv("SIESTA_MEMORY_BUDGET", "80%")
    monkeypatch.setenv("SIESTA_FREE_MEMORY_FLOOR", "off")
    monkeypatch.setenv("SIESTA_NOTIFY_MEMORY_PRESSURE", "true")
    loaded = load_settings(file, {"free_memory_floor": "2GB"})
    assert loaded.values.memory_budget == parse_memory_limit("80%")
    assert loaded.sources["memory_budget"] == "env SIESTA_MEMORY_BUDGET"
    assert loaded.fixed_by("memory_budget") == "SIESTA_MEMORY_BUDGET"
    assert loaded.values.free_memory_floor == parse_memory_limit("2GB")
    assert loaded.sources["free_memory_floor"] == "flag --free-memory-floor"
    assert loaded.fixed_by("free_memory_floor") == "--free-memory-floor"
    assert loaded.values.notify_memory_pressure is True
    assert loaded.sources["notify_memory_pressure"] == "env SIESTA_NOTIFY_MEMORY_PRESSURE"


@pytest.mark.parametrize(("env", "expected"), [
    ('{"ram": "16GB", "gpu0": "90%"}', TABLE),
    ('{"gpu1": "20GB", "default": "off"}', {"gpu1": "20GB"}),
    ('{"default": "75%"}', "75%"),
    ("ram: 16GB, gpu0: 90%", TABLE),
    (" 85% ", "85%"),
    ("20 GiB", "20GB"),
    ("OFF", "off"),
])
def test_environment_takes_text_or_a_json_table(tmp_path, monkeypatch, env, expected):
    monkeypatch.setenv("SIESTA_MEMORY_BUDGET", env)
    loaded = load_settings(tmp_path / "none.toml")
    assert loaded.values.memory_budget.to_setting() == expected
    assert loaded.describe()["memory_budget"] == {"value": expected, "source": "env SIESTA_MEMORY_BUDGET"}


@pytest.mark.parametrize(("variable", "value", "needle"), [
    ("SIESTA_MEMORY_BUDGET", "90", "a bare number is ambiguous"),
    ("SIESTA_MEMORY_BUDGET", '{"vram": "1GB"}', "unknown device 'vram'"),
    ("SIESTA_MEMORY_BUDGET", '{"ram": "1GB"', "not a valid JSON table"),
    ("SIESTA_FREE_MEMORY_FLOOR", "120%", "between 0% and 100%"),
])
def test_a_bad_environment_value_names_the_variable_and_the_value(tmp_path, monkeypatch, variable, value, needle):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        load_settings(tmp_path / "none.toml")
    message = str(info.value)
    assert f"environment variable {variable}" in message and repr(value) in message and needle in message


@pytest.mark.parametrize(("text", "needle"), [
    ('memory_budget = 90\n', "a bare number is ambiguous"),
    ('free_memory_floor = "lots"\n', "'lots' is not a size"),
    ('[memory_budget]\nvram = "1GB"\n', "unknown device 'vram'"),
    ('[memory_budget]\n', "an empty table"),
])
def test_a_bad_settings_file_value_names_the_file_and_the_key(tmp_path, text, needle):
    file = tmp_path / "settings.toml"
    file.write_text(text)
    with pytest.raises(SettingsError) as info:
        load_settings(file)
    message = str(info.value)
    assert f"{file}, key " in message and needle in message


@pytest.mark.parametrize("before_command", [True, False])
def test_cli_flags_on_serve_and_the_tray_app(tmp_path, before_command):
    options = ["--memory-budget", "ram: 16GB, gpu0: 90%", "--free-memory-floor", "512MB"]
    argv = options + ["serve"] if before_command else ["serve"] + options
    for args in (build_parser().parse_args(argv), build_parser().parse_args(options)):  # serve; bare form
        given = flags(args)
        assert given == {"memory_budget": "ram: 16GB, gpu0: 90%", "free_memory_floor": "512MB"}
        loaded = load_settings(tmp_path / "none.toml", given)
        assert loaded.values.memory_budget == parse_memory_limit(TABLE)
        assert loaded.values.free_memory_floor.for_device("ram", None) == 512 * 1024 ** 2
        assert loaded.sources["memory_budget"] == "flag --memory-budget"


def test_validate_setting_names_the_field():
    assert validate_setting("memory_budget", TABLE) == parse_memory_limit(TABLE)
    with pytest.raises(ValueError, match=r"^free_memory_floor: invalid memory limit '5'"):
        validate_setting("free_memory_floor", "5")


# ---- ModelManager.set_setting: persisted to settings.toml, applied at once ------------------------

async def test_set_setting_writes_the_canonical_form_keeping_comments(manager_factory, paths):
    paths.settings_file.write_text("# my settings\nmax_loaded_models = 2  # two\n\n[extra]\nkept = 1\n")
    manager = await manager_factory()
    woken = manager._changed  # what a load waiting for room waits on

    await manager.set_setting("memory_budget", {"GPU0": "90.0%", "ram": "16 GiB"})
    assert woken.is_set() and not manager._changed.is_set()  # a fresh event for the next wait
    assert manager.settings.memory_budget == parse_memory_limit(TABLE)
    assert manager.loaded_settings.sources["memory_budget"] == "file settings.toml"
    text = paths.settings_file.read_text()
    assert text.startswith("# my settings\nmax_loaded_models = 2  # two\n")
    assert tomllib.loads(text)["memory_budget"] == TABLE  # a table, not a string
    assert '[memory_budget]\nram = "16GB"\ngpu0 = "90%"\n' in text
    assert tomllib.loads(text)["extra"] == {"kept": 1}

    await manager.set_setting("free_memory_floor", "2048 MB")
    await manager.set_setting("notify_memory_pressure", False)
    text = paths.settings_file.read_text()
    data = tomllib.loads(text)
    assert data["free_memory_floor"] == "2GB" and data["notify_memory_pressure"] is False
    assert text.index("free_memory_floor") < text.index("[memory_budget]")  # top-level keys before tables
    assert manager.settings.free_memory_floor.for_device("ram", None) == 2 * GB
    assert manager.settings.notify_memory_pressure is False

    # A hand-written table keeps its comments where its entries stay.
    paths.settings_file.write_text('# mine\n[memory_budget]  # per device\nram = "16GB"  # my RAM\ngpu0 = "90%"\n')
    await manager.set_setting("memory_budget", "ram: 16GB, gpu1: 50%")
    assert paths.settings_file.read_text() == \
        '# mine\n[memory_budget]  # per device\nram = "16GB"  # my RAM\ngpu1 = "50%"\n'

    await manager.set_setting("memory_budget", "80%")  # a table back to one value
    text = paths.settings_file.read_text()
    assert text == '# mine\nmemory_budget = "80%"\n'
    assert manager.settings.memory_budget == parse_memory_limit("80%")

    with pytest.raises(ValueError, match="memory_budget: invalid memory limit '80'"):
        await manager.set_setting("memory_budget", "80")
    assert paths.settings_file.read_text() == text


async def test_an_unchanged_memory_setting_does_not_wake_waiting_loads(manager_factory):
    manager = await manager_factory()
    waiting = manager._changed
    await manager.set_setting("memory_budget", "90%")  # the value in force already
    assert not waiting.is_set()


# ---- the HTTP API -------------------------------------------------------------------------------

async def test_patch_settings_with_a_string_and_with_a_table(front_door, paths):
    paths.settings_file.write_text("# mine\nport = 1234\n")
    manager, http, url = await front_door()
    async with http.patch(f"{url}/api/v1/settings", json={"memory_budget": "80%"}) as resp:
        assert resp.status == 200
        body = await _json(resp)
    assert body["memory_budget"] == {"value": "80%", "source": "file settings.toml"}
    assert manager.settings.memory_budget == parse_memory_limit("80%")

    patch = {"free_memory_floor": {"ram": "2GB", "gpu0": "10%"}, "notify_memory_pressure": False}
    async with http.patch(f"{url}/api/v1/settings", json=patch) as resp:
        assert resp.status == 200
        body = await _json(resp)
    assert body["free_memory_floor"]["value"] == {"ram": "2GB", "gpu0": "10%"}
    assert body["notify_memory_pressure"]["value"] is False
    text = paths.settings_file.read_text()
    assert text.startswith("# mine\nport = 1234\n")
    assert tomllib.loads(text) == {"port": 1234, "memory_budget": "80%", "notify_memory_pressure": False,
                                   "free_memory_floor": {"ram": "2GB", "gpu0": "10%"}}

    for path in ("/api/v1/settings", "/api/v1/health"):
        async with http.get(f"{url}{path}") as resp:
            assert resp.status == 200
            body = await _json(resp)
        settings = body if path.endswith("settings") else body["settings"]
        assert settings["memory_budget"]["value"] == "80%"
        assert settings["free_memory_floor"]["value"] == {"ram": "2GB", "gpu0": "10%"}
        assert settings["notify_memory_pressure"]["value"] is False


@pytest.mark.parametrize("body", [
    {"memory_budget": "90"},
    {"memory_budget": {"vram": "1GB"}},
    {"memory_budget": ["1GB"]},
    {"memory_budget": "70%", "free_memory_floor": "200%"},  # one bad value: nothing is written
])
async def test_patch_settings_refuses_a_bad_value_and_writes_nothing(front_door, paths, body):
    manager, http, url = await front_door()
    async with http.patch(f"{url}/api/v1/settings", json=body) as resp:
        assert resp.status == 400
        error = (await _json(resp))["error"]
    assert error["code"] == "invalid_setting"
    assert "PATCH /api/v1/settings: " in error["message"] and "invalid memory limit" in error["message"]
    assert not paths.settings_file.exists()
    assert manager.settings.memory_budget == parse_memory_limit("90%")


async def test_patch_settings_is_409_when_the_environment_pins_it(front_door, paths, monkeypatch):
    monkeypatch.setenv("SIESTA_MEMORY_BUDGET", '{"ram": "16GB"}')
    manager, http, url = await front_door(free_memory_floor="1GB")
    for field, value in (("memory_budget", "80%"), ("free_memory_floor", {"ram": "1GB"})):
        async with http.patch(f"{url}/api/v1/settings", json={field: value}) as resp:
            assert resp.status == 409
            error = (await _json(resp))["error"]
        assert error["code"] == "setting_fixed"
        assert ("SIESTA_MEMORY_BUDGET" if field == "memory_budget" else "--free-memory-floor") in error["message"]
    assert not paths.settings_file.exists()
    assert manager.settings.memory_budget == parse_memory_limit({"ram": "16GB"})
    async with http.get(f"{url}/api/v1/health") as resp:
        settings = (await _json(resp))["settings"]
    assert settings["memory_budget"] == {"value": {"ram": "16GB"}, "source": "env SIESTA_MEMORY_BUDGET"}


# ---- a hand edit of settings.toml while Siesta runs ---------------------------------------------

async def _edit_until(path: Path, text: str, done, timeout: float = 10.0) -> None:
    """Writes ``text`` until ``done()``: the watcher starts a moment after the manager, and an
    edit made before then is never reported."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"the hand edit {text!r} was not applied")
        path.write_text(text)
        for _ in range(10):
            await asyncio.sleep(0.05)
            if done():
                return


async def test_a_hand_edit_of_settings_toml_applies_at_run_time(manager_factory, paths, monkeypatch, caplog):
    monkeypatch.setenv("SIESTA_NOTIFY_MEMORY_PRESSURE", "true")  # pinned: a hand edit leaves it alone
    manager = await manager_factory(watch_files=True)
    file = paths.settings_file
    await _edit_until(file, '# by hand\nmemory_budget = "70%"\nnotify_memory_pressure = false\n',
                      lambda: manager.settings.memory_budget == parse_memory_limit("70%"))
    assert manager.loaded_settings.sources["memory_budget"] == "file settings.toml"
    assert manager.settings.notify_memory_pressure is True

    waiting = manager._changed
    await _edit_until(file, '# by hand\n[memory_budget]\nram = "16GB"\ngpu0 = "90%"\n\n'
                            '[free_memory_floor]\ndefault = "1GB"\n',
                      lambda: manager.settings.memory_budget == parse_memory_limit(TABLE)
                      and manager.settings.free_memory_floor == parse_memory_limit("1GB"))
    assert waiting.is_set()  # a load waiting for room looks again

    await _edit_until(file, '# by hand\nmemory_budget = "lots"\nfree_memory_floor = "off"\n',
                      lambda: manager.settings.free_memory_floor.is_off)
    assert manager.settings.memory_budget == parse_memory_limit(TABLE)  # the bad value is not applied
    assert "memory_budget: invalid memory limit 'lots'" in caplog.text
