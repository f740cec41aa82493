"""``/api/chat`` and ``/api/generate`` for remotes' models: the translated request goes
through the remote as ``/v1``'s do (its own name for the model, ``keep_alive`` only to
another Siesta, as seconds), and what comes back (an OpenAI stream with thinking and tool
call deltas and no llama-server timings, a whole answer, an error, a stream that breaks) is
Ollama's. A request from another Siesta reaches local models only."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from app.core.remotes import HOP_HEADER
from tests.fakes.remote import ScriptedServer, until
from tests.fakes.siesta import FakeSiesta, snapshot

ollama = pytest.importorskip("ollama")

pytestmark = pytest.mark.timeout(60)

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "the weather in a city",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string"}}}}}


def _chunk(delta: dict | None = None, finish: str | None = None, **extra) -> bytes:
    payload = {"object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}], **extra}
    return f"data: {json.dumps(payload)}\n\n".encode()


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    last = body["messages"][-1]["content"]
    if last == "refuse":
        return web.json_response({"error": {"code": 400, "message": "bad request, says the remote",
                                            "type": "invalid_request_error"}}, status=400)
    if not body.get("stream"):
        return web.json_response({"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "", "reasoning_content": "I should look it up",
                        "tool_calls": [{"id": "c1", "type": "function",
                                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}})
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(_chunk({"role": "assistant", "content": None}))
    await response.write(_chunk({"reasoning_content": "Hmm, "}))
    await response.write(_chunk({"reasoning_content": "Tokyo."}))
    if last == "break":
        await asyncio.sleep(0.2)  # those chunks reach Siesta first
        request.transport.close()  # the remote goes away mid-stream
        return response
    await response.write(_chunk({"content": "Let me check."}))
    await response.write(_chunk({"tool_calls": [{"index": 0, "id": "c7", "type": "function",
                                                 "function": {"name": "get_weather", "arguments": ""}}]}))
    await response.write(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}))
    await response.write(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "Tokyo"}'}}]}))
    await response.write(_chunk(finish="tool_calls"))
    await response.write(b'data: {"object": "chat.completion.chunk", "choices": [], '
                         b'"usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}}\n\n')
    await response.write(b"data: [DONE]\n\n")
    return response


async def models(request: web.Request) -> web.Response:
    return web.json_response({"data": [{"id": "m"}]})


@pytest.fixture
async def openai_remote(paths):
    server = ScriptedServer([web.get("/v1/models", models),
                             web.post("/v1/chat/completions", chat_completions)])
    await server.start()
    paths.settings_file.write_text(f'[remotes.oa]\nkind = "openai"\nurl = "{server.url}/v1"\n', encoding="utf-8")
    yield server
    await server.stop()


async def test_a_remotes_stream_comes_back_as_ollamas_with_whole_tool_calls(openai_remote, front_door):
    manager, http, url = await front_door()
    await until(lambda: len(manager.remotes.snapshots()) == 1, what="the remote's listing")
    client = ollama.AsyncClient(host=url)
    messages = [{"role": "user", "content": "weather in Tokyo?"},
                {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather",
                                                                                  "arguments": {"city": "Osaka"}}}]},
                {"role": "tool", "content": "12 C", "tool_name": "get_weather"},
                {"role": "user", "content": "and Tokyo?"}]
    parts = [p async for p in await client.chat("oa/m", messages=messages, tools=[WEATHER], think=True,
                                                  stream=True, keep_alive="5m", options={"temperature": 0})]
    sent = openai_remote.calls_to("/v1/chat/completions")[-1].body
    assert sent["model"] == "m" and "keep_alive" not in sent  # the remote's own name; an openai remote gets none
    assert sent["messages"][1]["tool_calls"] == [{"id": "call_0", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Osaka"}'}}]
    assert sent["messages"][2] == {"role": "tool", "content": "12 C", "tool_call_id": "call_0", "name": "get_weather"}
    assert sent["tools"][0]["function"]["name"] == "get_weather" and sent["temperature"] == 0
    assert sent["chat_template_kwargs"] == {"enable_thinking": True}

    *chunks, last = parts
    assert "".join(p.message.thinking or "" for p in chunks) == "Hmm, Tokyo."
    assert "".join(p.message.content or "" for p in chunks) == "Let me check."
    (with_calls,) = [p for p in chunks if p.message.tool_calls]
    (call,) = with_calls.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Tokyo"}
    assert last.done and last.done_reason == "stop" and last.model == "oa/m"
    assert (last.prompt_eval_count, last.eval_count, last.load_duration) == (30, 9, 0)  # usage: no timings there
    assert manager.remotes.remotes["oa"].views["m"].in_flight == 0


async def test_a_remotes_whole_answer_error_and_broken_stream(openai_remote, front_door):
    manager, http, url = await front_door()
    await until(lambda: len(manager.remotes.snapshots()) == 1, what="the remote's listing")
    client = ollama.AsyncClient(host=url)

    whole = await client.chat("m", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER])  # bare name
    assert whole.message.thinking == "I should look it up" and whole.message.content == ""
    assert [(c.function.name, c.function.arguments) for c in whole.message.tool_calls] == [
        ("get_weather", {"city": "Paris"})]
    assert whole.done_reason == "stop" and (whole.prompt_eval_count, whole.eval_count) == (12, 7)

    with pytest.raises(ollama.ResponseError) as info:
        await client.chat("oa/m", messages=[{"role": "user", "content": "refuse"}])
    assert info.value.status_code == 400 and info.value.error == "bad request, says the remote"

    broken = {"model": "oa/m", "messages": [{"role": "user", "content": "break"}]}
    async with http.post(f"{url}/api/chat", json=broken) as resp:
        lines = [json.loads(line) for line in (await resp.read()).splitlines()]
    assert resp.status == 200 and [line.get("done") for line in lines[:-1]] == [False, False]
    assert "its server failed during the request" in lines[-1]["error"]  # the stream's last line says so
    with pytest.raises(ollama.ResponseError):
        async for _ in await client.chat("oa/m", messages=[{"role": "user", "content": "break"}], stream=True):
            pass

    with pytest.raises(ollama.ResponseError) as info:
        await client.generate("oa/m", prompt="def f(", suffix="return 1")
    assert info.value.status_code == 400 and "local models only" in info.value.error

    async with http.post(f"{url}/api/chat", json={"model": "oa/m", "messages": [{"role": "user", "content": "x"}]},
                         headers={HOP_HEADER: "1"}) as resp:
        assert resp.status == 404 and await resp.json() == {"error": "model 'oa/m' not found"}


async def test_another_siesta_gets_keep_alive_in_seconds_and_loads_and_unloads(front_door, paths):
    fake = FakeSiesta([snapshot("tiny")])
    await fake.start()
    try:
        paths.settings_file.write_text(f'[remotes.sb]\nkind = "siesta"\nurl = "{fake.url}"\n', encoding="utf-8")
        manager, http, url = await front_door()
        await until(lambda: len(manager.remotes.snapshots()) == 1, what="the remote's listing")
        client = ollama.AsyncClient(host=url)

        answer = await client.chat("sb/tiny:latest", messages=[{"role": "user", "content": "hi"}], keep_alive="1m30s")
        assert answer.message.content == "from tiny" and answer.done_reason == "stop"
        assert answer.model == "sb/tiny:latest"
        assert fake.calls_to("/v1/chat/completions")[-1].body["keep_alive"] == 90.0
        await client.chat("sb/tiny", messages=[{"role": "user", "content": "hi"}], keep_alive=-1, stream=False)
        assert fake.calls_to("/v1/chat/completions")[-1].body["keep_alive"] == -1  # never

        assert (await client.chat("sb/tiny")).done_reason == "load"
        assert fake.calls_to("/api/v1/load")[-1].body == {"model": "tiny"}
        assert (await client.generate("sb/tiny", keep_alive=0)).done_reason == "unload"
        assert fake.calls_to("/api/v1/unload")[-1].body == {"model": "tiny"}
    finally:
        await fake.stop()
