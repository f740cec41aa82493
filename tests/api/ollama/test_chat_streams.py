"""``/api/chat`` streams on a fake local server (tests/fakes/backend.py, which streams
slowly on request): each chunk goes out as an NDJSON line as it comes, and a client that
leaves mid-stream ends the request, so the model's lease ends and its countdown starts."""

from __future__ import annotations

import json

import pytest

from tests.waiting import until

pytestmark = pytest.mark.timeout(60)

HELLO = [{"role": "user", "content": "hello"}]


async def test_chunks_go_out_as_they_come_and_a_client_that_leaves_ends_the_request(front_door, write_recipe):
    write_recipe("slow", fake=["--delay", "0.2", "--chunks", "50"])
    manager, http, url = await front_door()
    resp = await http.post(f"{url}/api/chat", json={"model": "slow:latest", "messages": HELLO})
    assert resp.status == 200 and resp.content_type == "application/x-ndjson"
    first = json.loads(await resp.content.readline())
    assert first["message"] == {"role": "assistant", "content": "tok0 "} and first["done"] is False
    assert first["model"] == "slow:latest"
    model = manager.get("slow")
    assert model.in_flight == 1
    resp.close()  # the client goes away after one line of fifty
    await until(lambda: model.in_flight == 0, what="the request's lease to end")
    await until(lambda: model.unload_at is not None, what="the countdown")


async def test_a_stream_without_timings_or_usage_still_ends_with_done(front_door, write_recipe):
    write_recipe("fake", fake=["--chunks", "3"])
    manager, http, url = await front_door()
    async with http.post(f"{url}/api/generate", json={"model": "fake", "prompt": "hi"}) as resp:
        lines = [json.loads(line) for line in (await resp.read()).splitlines()]
    assert [line["response"] for line in lines] == ["tok0 ", "tok1 ", "tok2 ", ""]
    last = lines[-1]
    assert last["done"] is True and last["done_reason"] == "stop" and last["load_duration"] > 0
    assert (last["prompt_eval_count"], last["eval_count"], last["eval_duration"]) == (0, 0, 0)  # nothing said them
    async with http.post(f"{url}/api/generate", json={"model": "fake", "prompt": "hi", "stream": False}) as resp:
        whole = await resp.json()
    assert whole["response"] == "hello" and whole["done"] is True and whole["load_duration"] == 0
