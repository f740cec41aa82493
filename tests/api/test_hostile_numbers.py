"""Hostile numbers in the APIs' bodies (issue 26, defects 1 and 9).

A PATCH must never write what the next start cannot read, and a number the parser cannot
take (a 400-digit integer, NaN, an infinity, under a millisecond) is a 400 that names the
field, never a 500 with a traceback.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.core.config.recipes import read_recipe
from app.core.config.settings import load_settings

pytestmark = pytest.mark.timeout(60)

BIG = "1" + "0" * 400  # a 401-digit integer, as JSON
# NaN and Infinity are not JSON: the body reader refuses them; tests/core/config has them.
BAD_DURATIONS = ["0.00001", "1e-300", BIG, "-" + BIG, '"1e-05s"', '"0.0005s"', '"' + "1" * 400 + 's"']


async def _send(http: Any, method: str, url: str, body: str) -> tuple[int, dict[str, Any]]:
    async with http.request(method, url, data=body.encode(), headers={"Content-Type": "application/json"}) as resp:
        return resp.status, json.loads(await resp.read())


@pytest.mark.parametrize("raw", BAD_DURATIONS, ids=lambda raw: raw[:24])
async def test_patch_settings_refuses_a_duration_it_could_not_write_back(front_door, paths, raw):
    paths.settings_file.write_text('global_unload_timeout = "5m"\n')
    manager, http, url = await front_door()
    status, body = await _send(http, "PATCH", f"{url}/api/v1/settings", f'{{"global_unload_timeout": {raw}}}')
    assert status == 400, body
    message = body["error"]["message"]
    assert "global_unload_timeout" in message and len(message) < 1000
    assert load_settings(paths.settings_file).values.global_unload_timeout == 300
    assert manager.global_timeout == 300


async def test_a_patched_duration_is_what_the_next_start_reads(front_door, paths):
    manager, http, url = await front_door()
    for raw in ("3723.001", "61.029", "0.001", '"1h0.5s"', "0"):
        status, body = await _send(http, "PATCH", f"{url}/api/v1/settings", f'{{"global_unload_timeout": {raw}}}')
        assert status == 200, body
        assert load_settings(paths.settings_file).values.global_unload_timeout == manager.global_timeout


@pytest.mark.parametrize(("field", "raw"), [
    ("max_loaded_models", BIG), ("max_loaded_models", "true"), ("max_loaded_models", str(2**63)),
    ("max_loaded_models", "1.5"), ("memory_budget", BIG), ("memory_budget", '"' + "1" * 400 + 'GB"'),
    ("memory_budget", json.dumps('{"ram": ' + "[" * 20_000)), ("free_memory_floor", '{"ram": ' + BIG + "}"),
    ("notify_crash", BIG), ("notify_crash", '{"a": {"b": {}}}'),
], ids=lambda value: value[:24])
async def test_patch_settings_refuses_other_hostile_numbers_naming_the_field(front_door, paths, field, raw):
    manager, http, url = await front_door()
    status, body = await _send(http, "PATCH", f"{url}/api/v1/settings", f'{{"{field}": {raw}}}')
    assert status == 400, body
    message = body["error"]["message"]
    assert field in message and len(message) < 1000
    assert not paths.settings_file.exists()


@pytest.mark.parametrize("raw", BAD_DURATIONS, ids=lambda raw: raw[:24])
async def test_patch_model_refuses_a_timeout_it_could_not_write_back(front_door, write_recipe, raw):
    path = write_recipe("a", unload_timeout="5m")
    before = path.read_bytes()
    manager, http, url = await front_door()
    status, body = await _send(http, "PATCH", f"{url}/api/v1/models/a", f'{{"unload_timeout": {raw}}}')
    assert status == 400, body
    message = body["error"]["message"]
    assert "unload_timeout" in message and len(message) < 1000
    assert path.read_bytes() == before


async def test_a_patched_model_timeout_is_what_its_recipe_reads(front_door, write_recipe):
    path = write_recipe("a")
    manager, http, url = await front_door()
    status, body = await _send(http, "PATCH", f"{url}/api/v1/models/a", '{"unload_timeout": 61.029}')
    assert status == 200, body
    assert read_recipe(path).unload_timeout == 61.029
    status, body = await _send(http, "PATCH", f"{url}/api/v1/models/a", '{"unload_timeout": " Default "}')
    assert status == 200, body
    assert "unload_timeout" not in path.read_text()


@pytest.mark.parametrize("raw", BAD_DURATIONS, ids=lambda raw: raw[:24])
async def test_keep_alive_refuses_what_the_parser_cannot_take(front_door, write_recipe, raw):
    write_recipe("a")
    manager, http, url = await front_door()
    status, body = await _send(http, "POST", f"{url}/v1/chat/completions", f'{{"model": "a", "keep_alive": {raw}}}')
    assert status == 400, body
    assert body["error"]["code"] == "invalid_keep_alive"
    assert "keep_alive" in body["error"]["message"] and len(body["error"]["message"]) < 1000
    assert manager.get("a").state.value == "unloaded"
