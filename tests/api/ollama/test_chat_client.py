"""``/api/chat`` with Ollama's official Python client (PyPI ``ollama``) against a real Siesta
serving the tiny model with the real llama-server: streamed and whole answers with Ollama's
counts and durations, ``keep_alive`` as Ollama reads it setting the model's timeout, loading
and unloading as Ollama's clients do, an unknown model's 404, and ``num_ctx``'s one warning.
The tiny model writes junk: shapes and counts are checked, never the text."""

from __future__ import annotations

import json
import logging
from datetime import datetime

import pytest

from app.core.models.model import ModelState
from tests.waiting import until

ollama = pytest.importorskip("ollama")

pytestmark = [pytest.mark.llama, pytest.mark.timeout(120)]

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def tiny(write_recipe, tmp_path):
    from app.demo_model import write_tiny_model

    model = write_tiny_model(tmp_path / "models" / "tiny.gguf")
    write_recipe("tiny", f'backend = "llamacpp"\nmodel = "{model}"\nargs = ["-t", "1", "--ctx-size", "256"]\n')
    return model


def _rfc3339(text: str) -> datetime:
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert stamp.utcoffset() is not None
    return stamp


def _check_counts(last, *, limit: int) -> None:
    assert last.done is True and last.done_reason in ("stop", "length")
    assert 0 < last.prompt_eval_count and 0 <= last.eval_count <= limit
    assert last.total_duration >= last.load_duration >= 0
    assert last.total_duration >= last.prompt_eval_duration + last.eval_duration > 0


async def test_chat_whole_then_streamed_with_counts_and_the_load_it_waited_for(front_door, tiny):
    manager, http, url = await front_door()
    client = ollama.AsyncClient(host=url)

    whole = await client.chat("tiny", messages=HELLO, options={"num_predict": 4, "seed": 1})  # cold: it loads
    model = manager.get("tiny")
    assert model.state is ModelState.READY
    assert whole.model == "tiny" and whole.message.role == "assistant" and isinstance(whole.message.content, str)
    _check_counts(whole, limit=4)
    _rfc3339(whole.created_at)
    # load_duration is the load this request waited for: at least the load itself
    assert whole.load_duration >= round(model.last_load_seconds * 1e9) - 1000 > 0

    parts = [part async for part in await client.chat("tiny:latest", messages=HELLO, stream=True,
                                                        options={"num_predict": 4})]
    *chunks, last = parts
    assert chunks and all(not part.done and part.message.role == "assistant" for part in chunks)
    assert all(part.model == "tiny:latest" for part in parts)  # the name as the client sent it
    assert last.message.content == "" and last.load_duration == 0  # warm: no load waited for
    _check_counts(last, limit=4)
    for part in parts:
        _rfc3339(part.created_at)

    async with http.post(f"{url}/api/chat", json={"model": "tiny", "messages": HELLO,  # stream: true by default
                                                  "options": {"num_predict": 3}}) as resp:
        assert resp.status == 200 and resp.content_type == "application/x-ndjson"
        lines = [json.loads(line) for line in (await resp.read()).splitlines()]
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    assert all("created_at" in line for line in lines)
    assert set(lines[-1]) >= {"done_reason", "total_duration", "load_duration", "prompt_eval_count",
                              "prompt_eval_duration", "eval_count", "eval_duration"}
    assert model.in_flight == 0 and model.unload_at is not None  # every lease ended


async def test_keep_alive_as_ollama_reads_it_sets_the_models_timeout(front_door, tiny):
    manager, http, url = await front_door()
    client = ollama.AsyncClient(host=url)
    for keep_alive, timeout in ((-1, None), ("1m30s", 90.0), (600, 600.0), ("-5m", None), ("2h0m0s", 7200.0)):
        await client.chat("tiny", messages=HELLO, keep_alive=keep_alive, options={"num_predict": 1})
        model = manager.get("tiny")
        assert model.effective_timeout() == (timeout, "request"), keep_alive
        if timeout is None:
            assert model.unload_at is None
        else:
            await until(lambda m=model: m.unload_at is not None, what="the countdown")
            assert model.unload_at == pytest.approx(model.idle_since + timeout)
    await client.chat("tiny", messages=HELLO, options={"num_predict": 1})  # none: the global timeout again
    assert manager.get("tiny").effective_timeout()[1] == "global"

    await client.chat("tiny", messages=HELLO, keep_alive=0, options={"num_predict": 1})
    await until(lambda: manager.get("tiny").state is ModelState.UNLOADED, what="the unload after keep_alive 0")

    with pytest.raises(ollama.ResponseError) as info:
        await client.chat("tiny", messages=HELLO, keep_alive="5 minutes")
    assert info.value.status_code == 400 and "keep_alive" in info.value.error


async def test_no_messages_loads_and_keep_alive_0_unloads_as_ollamas_clients_do(front_door, tiny):
    manager, http, url = await front_door()
    client = ollama.AsyncClient(host=url)
    model = manager.get("tiny")

    loaded = await client.chat("tiny", keep_alive="2m")  # `ollama run` first sends no messages
    assert (loaded.done, loaded.done_reason, loaded.message.content) == (True, "load", "")
    assert model.state is ModelState.READY and model.effective_timeout() == (120.0, "request")

    stopped = await client.chat("tiny", messages=[], keep_alive=0)  # `ollama stop`
    assert (stopped.done, stopped.done_reason) == (True, "unload")
    assert model.state is ModelState.UNLOADED  # the answer comes once it is unloaded

    # stream is true by default, yet a load answers one JSON object
    async with http.post(f"{url}/api/chat", json={"model": "tiny:latest", "messages": []}) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        body = await resp.json()
    assert body["done_reason"] == "load" and body["model"] == "tiny:latest" and model.state is ModelState.READY
    _rfc3339(body["created_at"])


async def test_an_unknown_model_is_the_clients_404(front_door, tiny):
    manager, http, url = await front_door()
    client = ollama.AsyncClient(host=url)
    for call in (lambda: client.chat("nope", messages=HELLO), lambda: client.chat("nope:latest"),
                 lambda: client.generate("nope", prompt="hi"), lambda: client.embed("nope", input="hi")):
        with pytest.raises(ollama.ResponseError) as info:
            await call()
        assert info.value.status_code == 404 and info.value.error.startswith("model 'nope")
        assert info.value.error.endswith("' not found")
    assert manager.get("tiny").state is ModelState.UNLOADED


async def test_a_num_ctx_unlike_the_loaded_context_warns_once(front_door, tiny, caplog):
    manager, http, url = await front_door()
    client = ollama.AsyncClient(host=url)
    with caplog.at_level(logging.WARNING, logger="app.api.ollama.generate"):
        for num_ctx in (1024, 1024, 256, 1024):
            answer = await client.chat("tiny", messages=HELLO, options={"num_predict": 1, "num_ctx": num_ctx})
            assert answer.done  # a warning, not an error
    warnings = [r.getMessage() for r in caplog.records if "num_ctx" in r.getMessage()]
    assert len(warnings) == 1 and "num_ctx 1024" in warnings[0] and "context of 256" in warnings[0]
