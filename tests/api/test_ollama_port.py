"""The second listener on Ollama's port (setting ``ollama_port``; a free port here, not
11434): every route answers there, its pages are Siesta's own origin, and a port that is
taken (Ollama itself running) is one log line and a note for the Settings dialog, never a
failed start."""

from __future__ import annotations

import logging
import socket

import pytest

pytestmark = pytest.mark.timeout(30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_siesta_answers_on_ollamas_port_too(front_door):
    port = free_port()
    manager, http, url = await front_door(ollama_port=port)
    other = f"http://127.0.0.1:{port}"
    async with http.get(f"{other}/") as resp:
        assert resp.status == 200 and await resp.text() == "Ollama is running"
    async with http.get(f"{other}/v1/models") as resp:
        assert resp.status == 200  # every route, /v1 included
    async with http.get(f"{other}/api/tags", headers={"Origin": other}) as resp:
        assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == other  # its own origin
    async with http.get(f"{url}/api/version", headers={"Origin": other}) as resp:
        assert resp.status == 200  # a page served on either port may call the other
    assert "ollama_port" not in manager.loaded_settings.problems


async def test_a_taken_ollama_port_is_logged_and_siesta_goes_on(front_door, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger="app.api.server"):
            manager, http, url = await front_door(ollama_port=port)
        async with http.get(f"{url}/") as resp:
            assert resp.status == 200 and await resp.text() == "Ollama is running"
        problem = manager.loaded_settings.problems["ollama_port"]
        assert f"Ollama's port {port}" in problem and "already in use" in problem and "ollama_port" in problem
        lines = [r.getMessage() for r in caplog.records if r.name == "app.api.server"]
        assert lines == [problem]
        async with http.get(f"{url}/api/tags", headers={"Origin": f"http://127.0.0.1:{port}"}) as resp:
            assert resp.status == 403  # not Siesta's port: whatever answers there is not its own origin


def test_ollama_port_setting_zero_or_unset_is_off() -> None:
    from app.core.config.settings import validate_setting

    assert validate_setting("ollama_port", 0) is None and validate_setting("ollama_port", None) is None
    assert validate_setting("ollama_port", "11434") == 11434
    with pytest.raises(ValueError):
        validate_setting("ollama_port", 70000)
