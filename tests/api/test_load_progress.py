"""Load progress for a streaming /v1 request that waits for its model (app/api/load_progress.py):
SSE comments, or reasoning_content chunks with loading_feedback, and errors after the stream began."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp
import pytest

from app.api import load_progress

pytestmark = pytest.mark.timeout(60)

CHAT = {"model": "a", "messages": [{"role": "user", "content": "hi"}], "stream": True}


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Progress after 0.1 s, every 0.1 s."""
    monkeypatch.setattr(load_progress, "PROGRESS_AFTER", 0.1)
    monkeypatch.setattr(load_progress, "PROGRESS_EVERY", 0.1)


def _dying_command(after: float) -> list[str]:
    """A server that prints a line and exits 4 after ``after`` seconds, never healthy."""
    code = f"import sys, time; print('dying on purpose', flush=True); time.sleep({after}); sys.exit(4)"
    return [sys.executable, "-c", code, "{port}"]


async def _lines(resp: aiohttp.ClientResponse) -> list[str]:
    return (await resp.read()).decode().splitlines()


def _events(lines: list[str]) -> list[Any]:
    return [json.loads(line[6:]) if line != "data: [DONE]" else "[DONE]" for line in lines if line.startswith("data: ")]


async def test_a_stream_waiting_for_a_slow_load_gets_comments_before_its_first_token(quick, front_door, write_recipe):
    write_recipe("big", fake=["--startup-delay", "0.8", "--chunks", "2"])
    manager, http, url = await front_door()
    async with http.post(f"{url}/v1/chat/completions", json={**CHAT, "model": "big"}) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        lines = await _lines(resp)
    comments = [line for line in lines if line.startswith(":")]
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data: "))
    assert len(comments) >= 3, lines
    assert all(lines.index(c) < first_data for c in comments)
    assert comments[0].startswith(": loading big, ") and comments[-1].endswith(" s")
    assert [int(c.split(", ")[1][:-2]) for c in comments] == sorted(int(c.split(", ")[1][:-2]) for c in comments)
    events = _events(lines)
    assert [e["choices"][0]["delta"]["content"] for e in events[:-1]] == ["tok0 ", "tok1 "]
    assert events[-1] == "[DONE]"
    assert manager.get("big").in_flight == 0 and manager.get("big").state.value == "ready"


async def test_a_load_that_fails_after_the_first_comment_ends_the_stream_with_an_error_event(
        quick, front_door, write_recipe):
    write_recipe("a", backend="command", command=_dying_command(0.6))
    manager, http, url = await front_door()
    async with http.post(f"{url}/v1/completions", json={"model": "a", "prompt": "hi", "stream": True}) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        lines = await _lines(resp)
    assert lines[0].startswith(": loading a, ")
    events = _events(lines)
    assert len(events) == 1, lines  # the error is the stream's end: no [DONE] after it
    error = events[0]["error"]
    assert set(error) == {"message", "type", "code", "log_tail"}
    assert error["type"] == "server_error" and error["code"] == "model_unavailable"
    assert "code 4" in error["message"] and "dying on purpose" in error["log_tail"]
    assert manager.get("a").in_flight == 0


async def test_a_load_that_fails_before_the_progress_begins_keeps_its_503(front_door, write_recipe):
    write_recipe("a", fake=["--exit-at-start", "4"])
    _, http, url = await front_door()
    async with http.post(f"{url}/v1/chat/completions", json=CHAT) as resp:
        assert resp.status == 503
        assert int(resp.headers["Retry-After"]) > 0
        error = (await resp.json())["error"]
    assert error["code"] == "model_unavailable" and "exiting at start" in error["log_tail"]


async def test_loading_feedback_sends_reasoning_chunks_the_openai_sdk_parses(quick, front_door, write_recipe):
    import openai

    write_recipe("big", fake=["--startup-delay", "0.8", "--chunks", "2"], loading_feedback=True)
    _, _, url = await front_door()
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=20)
    try:
        stream = await client.chat.completions.create(model="big", messages=[{"role": "user", "content": "hi"}],
                                                      stream=True)
        thinking, content = [], []
        async for chunk in stream:
            delta = chunk.choices[0].delta
            reasoning = (delta.model_extra or {}).get("reasoning_content")
            if reasoning is not None:
                assert not content  # all of it before the model's first chunk
                assert chunk.object == "chat.completion.chunk" and chunk.model == "big"
                thinking.append(reasoning)
            if delta.content:
                content.append(delta.content)
    finally:
        await client.close()
    assert len(thinking) >= 3 and thinking[0].startswith("loading big\u2026 ") and thinking[0].endswith(" s\n")
    assert content == ["tok0 ", "tok1 "]


async def test_the_setting_turns_feedback_on_and_a_recipe_turns_it_off(quick, front_door, write_recipe):
    write_recipe("a", fake=["--startup-delay", "0.5", "--chunks", "1"])
    write_recipe("b", fake=["--startup-delay", "0.5", "--chunks", "1"], loading_feedback=False)
    manager, http, url = await front_door(loading_feedback=True)
    async with http.post(f"{url}/v1/chat/completions", json=CHAT) as resp:
        lines = await _lines(resp)
    assert not [line for line in lines if line.startswith(":")]
    assert "reasoning_content" in _events(lines)[0]["choices"][0]["delta"]
    async with http.post(f"{url}/v1/chat/completions", json={**CHAT, "model": "b"}) as resp:
        lines = await _lines(resp)
    assert lines[0].startswith(": loading b, ")
    assert not any("reasoning_content" in line for line in lines)
    # Not a chat: comments even with the feedback on.
    await manager.unload("a")
    async with http.post(f"{url}/v1/completions", json={"model": "a", "prompt": "hi", "stream": True}) as resp:
        lines = await _lines(resp)
    assert lines[0].startswith(": loading a, ")


async def test_a_warm_model_s_stream_has_no_progress(quick, monkeypatch, front_door, write_recipe):
    monkeypatch.setattr(load_progress, "PROGRESS_AFTER", 0.0)  # would show at once were the model cold
    write_recipe("a", fake=["--delay", "0.2", "--chunks", "2"], loading_feedback=True)
    manager, http, url = await front_door()
    await manager.load("a")
    async with http.post(f"{url}/v1/chat/completions", json=CHAT) as resp:
        lines = await _lines(resp)
    assert not [line for line in lines if line.startswith(":")]
    assert not any("reasoning_content" in line for line in lines)
    assert _events(lines)[-1] == "[DONE]"


async def test_no_progress_for_a_request_that_does_not_stream_nor_for_ollama(quick, front_door, write_recipe):
    write_recipe("a", fake=["--startup-delay", "0.5", "--chunks", "2"])
    manager, http, url = await front_door()
    async with http.post(f"{url}/v1/chat/completions", json={**CHAT, "stream": False}) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        assert (await resp.json())["choices"][0]["message"]["content"] == "hello"
    await manager.unload("a")
    async with http.post(f"{url}/api/chat", json={**CHAT, "stream": True}) as resp:
        assert resp.status == 200
        lines = [line for line in (await _lines(resp)) if line]
    assert lines and all(isinstance(json.loads(line), dict) for line in lines)  # NDJSON only


async def test_a_client_that_leaves_during_the_progress_cancels_its_wait(quick, front_door, write_recipe):
    write_recipe("a", fake=["--never-healthy"])
    manager, http, url = await front_door()
    model = manager.get("a")
    async with http.post(f"{url}/v1/chat/completions", json=CHAT) as resp:
        assert (await resp.content.readline()).startswith(b": loading a, ")
        resp.close()
    for _ in range(100):  # the only waiter left: its load is cancelled
        if model.state.value != "loading":
            break
        await asyncio.sleep(0.05)
    assert model.state.value != "loading" and model.in_flight == 0


def test_the_recipe_key_and_the_setting_are_checked(tmp_path):
    from app.core.config.recipes import RecipeError, parse_recipe
    from app.core.config.settings import Settings, validate_setting

    base = {"backend": "command", "command": ["server", "{port}"]}
    assert parse_recipe("a", tmp_path / "a.toml", base).loading_feedback is None  # the setting decides
    assert parse_recipe("a", tmp_path / "a.toml", {**base, "loading_feedback": True}).loading_feedback is True
    with pytest.raises(RecipeError, match="loading_feedback"):
        parse_recipe("a", tmp_path / "a.toml", {**base, "loading_feedback": "yes"})
    assert "loading_feedback" not in parse_recipe("a", tmp_path / "a.toml", {**base, "loading_feedback": False}
                                                  ).unknown_keys
    assert Settings().loading_feedback is False and validate_setting("loading_feedback", True) is True
