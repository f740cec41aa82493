"""Ollama's model names on the front door: ``NAME:latest`` for a name without a tag, and back
to the name Siesta knows, for Ollama's routes and for ``/v1`` alike."""

from __future__ import annotations

import json

import pytest

from app.api.errors import ApiError
from app.api.ollama.common import model_not_found, ollama_error, ollama_name, resolve
from app.core.remotes import HOP_HEADER
from tests.fakes.remote import until

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(("name", "listed"), [
    ("tiny", "tiny:latest"), ("tiny:latest", "tiny:latest"), ("llama3:8b", "llama3:8b"),
    ("box/qwen", "box/qwen:latest"), ("ol/llama3.2:latest", "ol/llama3.2:latest"),
    ("ol/hf.co/org/repo:Q4_K_M", "ol/hf.co/org/repo:Q4_K_M"), ("ol/a:b/c", "ol/a:b/c:latest"),
    ("qwen2.5-7b", "qwen2.5-7b:latest"),
])
def test_a_name_without_a_tag_is_listed_as_latest(name, listed):
    assert ollama_name(name) == listed


def test_errors_are_in_ollamas_shape():
    response = ollama_error(400, "bad")
    assert response.status == 400 and json.loads(response.body) == {"error": "bad"}
    response = model_not_found("x:latest")
    assert response.status == 404 and json.loads(response.body) == {"error": "model 'x:latest' not found"}


async def test_resolve_exact_first_then_without_latest(manager_factory, write_recipe):
    write_recipe("tiny")
    write_recipe("qwen")
    manager = await manager_factory()
    assert resolve(manager, "tiny", hop=False) == "tiny"
    assert resolve(manager, "tiny:latest", hop=False) == "tiny"
    assert resolve(manager, "qwen:latest", hop=True) == "qwen"
    # names nothing: unchanged, so the caller's lookup says "not found" with the name asked for
    assert resolve(manager, "nothing:latest", hop=False) == "nothing:latest"
    assert resolve(manager, "tiny:8b", hop=False) == "tiny:8b"
    assert resolve(manager, ":latest", hop=False) == ":latest"
    assert manager.canonical_name("tiny:latest") == "tiny"


async def test_resolve_refuses_a_name_over_the_caps(manager_factory):
    manager = await manager_factory()
    with pytest.raises(ApiError) as info:
        resolve(manager, "x" * 5000 + ":latest", hop=False, what="POST /api/show")
    assert info.value.status == 400 and info.value.code == "name_too_long"
    assert "POST /api/show" in info.value.message and "x" * 100 not in info.value.message


async def test_a_remotes_models_resolve_with_and_without_latest_but_not_for_a_hop(ollama_remote, manager_factory,
                                                                                  write_recipe):
    write_recipe("tiny")
    manager = await manager_factory()
    remote = manager.remotes.remotes["ol"]
    await until(lambda: {"llama3.2:latest", "phi"} <= set(remote.views), what="the remote's listing")
    assert resolve(manager, "ol/llama3.2:latest", hop=False) == "ol/llama3.2:latest"  # Ollama's own name
    assert resolve(manager, "ol/phi:latest", hop=False) == "ol/phi"
    assert resolve(manager, "phi:latest", hop=False) == "phi"  # a bare name one remote lists
    assert resolve(manager, "phi:latest", hop=True) == "phi:latest"  # another Siesta sees local models only
    assert resolve(manager, "tiny:latest", hop=True) == "tiny"


async def test_v1_takes_a_name_with_latest(front_door, write_recipe):
    write_recipe("tiny")
    manager, http, url = await front_door()
    body = {"model": "tiny:latest", "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(f"{url}/v1/chat/completions", json=body) as resp:
        assert resp.status == 200, await resp.text()
    assert manager.get("tiny").state.value == "ready"
    async with http.post(f"{url}/v1/chat/completions", json={**body, "model": "nope:latest"}) as resp:
        assert resp.status == 404 and "nope:latest" in (await resp.json())["error"]["message"]
    async with http.post(f"{url}/v1/chat/completions", json=body, headers={HOP_HEADER: "1"}) as resp:
        assert resp.status == 200
