"""Ollama's official Python client (PyPI ``ollama``) against a real Siesta serving the tiny
model with the real llama-server: ``list``, ``show`` and ``ps`` parse Siesta's answers, and
an unknown model is the client's ``ResponseError`` 404."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from tests.fakes.remote import until

ollama = pytest.importorskip("ollama")

pytestmark = [pytest.mark.llama, pytest.mark.timeout(90)]


@pytest.fixture
def tiny_recipe(write_recipe, tmp_path):
    from app.demo_model import write_tiny_model

    tiny = write_tiny_model(tmp_path / "models" / "tiny.gguf")
    write_recipe("tiny", f'backend = "llamacpp"\nmodel = "{tiny}"\nargs = ["-t", "1", "--ctx-size", "256"]\n'
                         'unload_timeout = "10m"\n')
    return tiny


async def test_the_official_client_lists_shows_and_sees_siestas_countdown(front_door, tiny_recipe):
    manager, http, url = await front_door()
    client = ollama.Client(host=url)  # a blocking client: it runs in a thread, off Siesta's loop

    (listed,) = (await asyncio.to_thread(client.list)).models
    assert listed.model == "tiny:latest" and listed.size == tiny_recipe.stat().st_size
    assert listed.details.family == "llama" and listed.details.format == "gguf"
    assert listed.details.quantization_level == "F32" and listed.details.parameter_size.endswith("K")
    assert listed.modified_at == datetime.fromtimestamp(tiny_recipe.stat().st_mtime, timezone.utc)
    assert len(listed.digest) == 64

    show = await asyncio.to_thread(client.show, "tiny")
    assert show.modelinfo["general.architecture"] == "llama" and show.modelinfo["llama.context_length"] == 512
    assert "completion" in show.capabilities and "messages" in show.template
    assert show.details.family == "llama" and "--ctx-size 256" in show.parameters
    assert manager.get("tiny").state.value == "unloaded"  # show reads the header: it loads nothing

    assert (await asyncio.to_thread(client.ps)).models == []
    async with http.post(f"{url}/api/v1/load", json={"model": "tiny:latest"}) as resp:
        assert resp.status == 404  # the management API takes Siesta's names only
    async with http.post(f"{url}/v1/completions", json={"model": "tiny:latest", "prompt": "hi", "max_tokens": 2}) as resp:
        assert resp.status == 200, await resp.text()
    model = manager.get("tiny")
    await until(lambda: model.unload_at is not None, what="the countdown to start")
    await manager.memory.measured("tiny")  # measured just after the load, off the loop
    (loaded,) = (await asyncio.to_thread(client.ps)).models
    assert loaded.model == "tiny:latest" and loaded.context_length == 256
    assert abs(loaded.expires_at.timestamp() - model.unload_at) < 1e-3  # Siesta's countdown
    snapshot = manager.snapshot_of(model)
    assert loaded.size == (snapshot["memory"] or 0) + (snapshot["vram"] or 0) > 0
    assert loaded.size_vram == (snapshot["vram"] or 0)

    with pytest.raises(ollama.ResponseError) as info:
        await asyncio.to_thread(client.show, "nope")
    assert info.value.status_code == 404 and info.value.error == "model 'nope' not found"
