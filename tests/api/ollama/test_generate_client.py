"""``/api/generate`` with Ollama's official Python client against a real Siesta serving the
tiny model with the real llama-server: streamed and whole answers, ``raw``, loading by an
empty generate and unloading by ``keep_alive`` 0, what is refused (``template``, a
``suffix`` this model cannot fill), and a model that cannot load keeping Siesta's 503."""

from __future__ import annotations

import json

import pytest

from app.core.models.model import ModelState
from tests.waiting import until

ollama = pytest.importorskip("ollama")

pytestmark = [pytest.mark.llama, pytest.mark.timeout(120)]


@pytest.fixture
def tiny(write_recipe, tmp_path):
    from app.demo_model import write_tiny_model

    model = write_tiny_model(tmp_path / "models" / "tiny.gguf")
    write_recipe("tiny", f'backend = "llamacpp"\nmodel = "{model}"\nargs = ["-t", "1", "--ctx-size", "256"]\n')
    return model


async def test_generate_whole_streamed_and_raw(front_door, tiny):
    manager, http, url = await front_door()
    client = ollama.AsyncClient(host=url)

    whole = await client.generate("tiny", prompt="why is the sky blue?", system="be brief",
                                  options={"num_predict": 5, "temperature": 0.5, "top_k": 20, "stop": ["\n\n"]})
    assert whole.done is True and whole.done_reason in ("stop", "length") and isinstance(whole.response, str)
    assert 0 < whole.prompt_eval_count and 0 <= whole.eval_count <= 5
    assert whole.total_duration >= whole.load_duration > 0  # cold: it waited for the load

    parts = [part async for part in await client.generate("tiny", prompt="hi", stream=True, options={"num_predict": 4})]
    *chunks, last = parts
    assert chunks and all(not part.done and part.response for part in chunks)
    assert last.done is True and last.response == "" and last.load_duration == 0 and last.eval_count <= 4

    raw = await client.generate("tiny", prompt="user: hi\nassistant:", raw=True, options={"num_predict": 3})
    assert raw.done and raw.eval_count <= 3 and raw.prompt_eval_count > 0

    async with http.post(f"{url}/api/generate", json={"model": "tiny", "prompt": "hi", "raw": True,
                                                      "options": {"num_predict": 3}}) as resp:
        assert resp.status == 200 and resp.content_type == "application/x-ndjson"
        lines = [json.loads(line) for line in (await resp.read()).splitlines()]
    assert lines[-1]["done"] is True and all("response" in line and "created_at" in line for line in lines)


async def test_an_empty_generate_loads_and_keep_alive_0_unloads(front_door, tiny):
    manager, http, url = await front_door()
    client = ollama.AsyncClient(host=url)
    model = manager.get("tiny")

    loaded = await client.generate("tiny", keep_alive=-1)
    assert (loaded.done, loaded.done_reason, loaded.response) == (True, "load", "")
    assert model.state is ModelState.READY and model.effective_timeout() == (None, "request")
    assert model.unload_at is None

    async with http.post(f"{url}/api/generate", json={"model": "tiny", "keep_alive": 0}) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"  # one object, not a stream
        body = await resp.json()
    assert body == {"model": "tiny", "created_at": body["created_at"], "response": "", "done": True,
                    "done_reason": "unload"}
    assert model.state is ModelState.UNLOADED

    await client.generate("tiny", prompt="hi", keep_alive="1m", options={"num_predict": 1})
    assert model.effective_timeout() == (60.0, "request")
    await until(lambda: model.unload_at is not None, what="the countdown")
    assert model.unload_at == pytest.approx(model.idle_since + 60)


async def test_what_generate_cannot_do_is_the_clients_400(front_door, tiny):
    manager, http, url = await front_door()
    client = ollama.AsyncClient(host=url)
    with pytest.raises(ollama.ResponseError) as info:
        await client.generate("tiny", prompt="hi", template="{{ .Prompt }}")
    assert info.value.status_code == 400 and "template is not supported" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        await client.generate("tiny", prompt="hi", context=[1, 2])
    assert info.value.status_code == 400 and "context is not supported" in info.value.error
    assert manager.get("tiny").state is ModelState.UNLOADED  # refused before any load

    # llama-server's /infill needs a model with fill-in-the-middle tokens; it says so, as a 400
    with pytest.raises(ollama.ResponseError) as info:
        await client.generate("tiny", prompt="def f(", suffix="    return x", options={"num_predict": 4})
    assert info.value.status_code == 400 and "Infill is not supported" in info.value.error


async def test_a_model_that_cannot_load_keeps_siestas_503(front_door, write_recipe):
    write_recipe("broken", fake=["--exit-at-start", "1"])
    manager, http, url = await front_door()
    async with http.post(f"{url}/api/generate", json={"model": "broken", "prompt": "hi"}) as resp:
        assert resp.status == 503 and resp.headers["Retry-After"]
        body = await resp.json()
    assert list(body) == ["error"] and "broken" in body["error"] and "failed to load" in body["error"]
    with pytest.raises(ollama.ResponseError) as info:
        await ollama.AsyncClient(host=url).chat("broken")  # a load
    assert info.value.status_code == 503
