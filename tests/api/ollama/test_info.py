"""Ollama's informational routes on the front door (``/``, ``/api/version``, ``/api/tags``,
``/api/ps``, ``/api/show``) with fake command-backend models and synthetic GGUF files: the
shapes Ollama's clients read, and what Siesta fills them with."""

from __future__ import annotations

import hashlib
import math
import os
import time
from datetime import datetime

import pytest

from app.api.ollama.info import NEVER_SECONDS, OLLAMA_VERSION, rfc3339
from app.core.remotes import HOP_HEADER
from app.demo_model import write_tiny_model
from tests.fakes.remote import until
from tests.synthetic_gguf import tensor_shapes, write_synthetic_model

pytestmark = pytest.mark.timeout(60)

SHAPE = {"n_embd": 1024, "n_layers": 3, "n_ff": 2816, "n_head": 8}
DETAIL_KEYS = {"parent_model", "format", "family", "families", "parameter_size", "quantization_level"}


def _when(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def gguf_model(tmp_path):
    path = write_synthetic_model(tmp_path / "models" / "big.gguf", dtype="f16", sparse=True, context_length=8192,
                                 **SHAPE)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    return path


async def test_root_and_version(front_door):
    _, http, url = await front_door()
    for method in ("GET", "HEAD"):
        async with http.request(method, f"{url}/") as resp:
            assert resp.status == 200 and resp.content_type == "text/plain"
            assert await resp.text() == ("Ollama is running" if method == "GET" else "")
    async with http.get(f"{url}/api/version") as resp:
        assert await resp.json() == {"version": OLLAMA_VERSION}


async def test_tags_lists_gguf_and_command_models_in_ollamas_shape(front_door, write_recipe, gguf_model, paths):
    write_recipe("big", f'backend = "llamacpp"\nmodel = "{gguf_model}"\nargs = ["--ctx-size", "4096"]\n')
    write_recipe("fake")
    _, http, url = await front_door()
    async with http.get(f"{url}/api/tags") as resp:
        assert resp.status == 200
        models = (await resp.json())["models"]
    assert [m["name"] for m in models] == ["big:latest", "fake:latest"]
    big, fake = models
    assert big["model"] == "big:latest" and big["size"] == gguf_model.stat().st_size
    assert _when(big["modified_at"]) == 1_700_000_000 and big["modified_at"].endswith("Z")
    stat = gguf_model.stat()
    assert big["digest"] == hashlib.sha256(f"{gguf_model}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()
    parameters = sum(math.prod(shape) for _, shape in tensor_shapes(arch="llama", n_head_kv=8, head_dim=128,
                                                                     n_vocab=565, **SHAPE))
    assert big["details"] == {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                              "parameter_size": f"{parameters / 1e6:.2f}M", "quantization_level": "F16"}
    assert big["capabilities"] == ["completion"]
    # a command model without a GGUF file: what is known (its recipe file's time and id)
    recipe = paths.recipe_file("fake")
    assert fake["size"] == 0 and set(fake["details"]) == DETAIL_KEYS and fake["details"]["format"] == ""
    assert _when(fake["modified_at"]) == pytest.approx(recipe.stat().st_mtime, abs=1e-3)
    assert len(fake["digest"]) == 64 and fake["digest"] != big["digest"]
    # the same answer on the next poll (the digest is stable)
    async with http.get(f"{url}/api/tags") as resp:
        assert (await resp.json())["models"] == models


async def test_a_command_model_passing_a_gguf_with_m_is_described_by_it(front_door, write_recipe, gguf_model):
    write_recipe("cmd", f'backend = "command"\ncommand = ["llama-server", "--port", "{{port}}", "-m", "{gguf_model}", '
                        '"--embedding"]\n')
    _, http, url = await front_door()
    async with http.get(f"{url}/api/tags") as resp:
        (entry,) = (await resp.json())["models"]
    assert entry["details"]["family"] == "llama" and entry["size"] == gguf_model.stat().st_size
    assert entry["capabilities"] == ["embedding"]


async def test_show_gives_details_model_info_template_and_capabilities(front_door, write_recipe, tmp_path):
    tiny = write_tiny_model(tmp_path / "tiny.gguf")
    write_recipe("tiny", f'backend = "llamacpp"\nmodel = "{tiny}"\n'
                         'args = ["-t", "1", "--ctx-size", "256", "--mmproj", "p.gguf", "--api-key", "sekrit"]\n')
    _, http, url = await front_door()
    for body in ({"model": "tiny"}, {"model": "tiny:latest"}, {"name": "tiny:latest"}):
        async with http.post(f"{url}/api/show", json=body) as resp:
            assert resp.status == 200, await resp.text()
            show = await resp.json()
    assert show["details"]["family"] == "llama" and show["details"]["quantization_level"] == "F32"
    assert show["details"]["context_length"] == 512
    info = show["model_info"]
    assert info["general.architecture"] == "llama" and info["llama.context_length"] == 512
    assert info["general.parameter_count"] > 0 and info["llama.block_count"] == 2
    assert not {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
                "tokenizer.chat_template", "general.name"} & set(info)
    assert "{% for m in messages %}" in show["template"]
    assert show["capabilities"] == ["completion", "vision"]
    assert show["parameters"].splitlines() == ["-t 1", "--ctx-size 256", "--mmproj p.gguf", "--api-key '***'"]
    assert "sekrit" not in await resp.text()
    assert _when(show["modified_at"]) == pytest.approx(tiny.stat().st_mtime, abs=1e-3)


async def test_show_refuses_in_ollamas_shape(front_door, write_recipe):
    write_recipe("tiny")
    _, http, url = await front_door()
    cases = [({"model": "nope"}, 404, "model 'nope' not found"),
             ({"model": "nope:latest"}, 404, "model 'nope:latest' not found"),
             ({}, 400, "model is required"), ({"model": ""}, 400, "model is required"),
             ({"model": 5}, 400, "model is required"), ({"model": "x" * 5000}, 400, "characters long")]
    for body, status, words in cases:
        async with http.post(f"{url}/api/show", json=body) as resp:
            answer = await resp.json()
            assert resp.status == status and set(answer) == {"error"} and words in answer["error"], (body, answer)
    for raw in (b"", b"[1]", b"{", b"[" * 1000):
        async with http.post(f"{url}/api/show", data=raw, headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 400 and set(await resp.json()) == {"error"}
    async with http.post(f"{url}/api/show", data=b"{" + b" " * 70_000 + b"}") as resp:
        assert resp.status == 413 and "POST /api/show" in (await resp.json())["error"]


async def test_show_of_a_command_model_without_a_gguf(front_door, write_recipe):
    write_recipe("fake")
    _, http, url = await front_door()
    async with http.post(f"{url}/api/show", json={"model": "fake"}) as resp:
        show = await resp.json()
    assert show["capabilities"] == ["completion"] and show["model_info"] == {} and show["details"]["format"] == ""
    assert "--port '{port}'" in show["parameters"]


async def test_ps_shows_loaded_models_with_siestas_countdown_and_memory(front_door, write_recipe):
    write_recipe("short", unload_timeout="10m")
    write_recipe("kept", unload_timeout="never")
    write_recipe("idle")
    manager, http, url = await front_door()
    async with http.get(f"{url}/api/ps") as resp:
        assert await resp.json() == {"models": []}
    for name in ("short", "kept"):
        async with http.post(f"{url}/api/v1/load", json={"model": name}) as resp:
            assert resp.status == 200
    before = time.time()
    async with http.get(f"{url}/api/ps") as resp:
        models = (await resp.json())["models"]
    assert [m["name"] for m in models] == ["kept:latest", "short:latest"]  # the one unloaded last first
    kept, short = models
    assert _when(short["expires_at"]) == pytest.approx(manager.get("short").unload_at, abs=1e-3)
    assert 590 < _when(short["expires_at"]) - before <= 600
    assert datetime.fromisoformat(kept["expires_at"]).year >= 2318  # Ollama's "forever"
    assert _when(kept["expires_at"]) - before == pytest.approx(NEVER_SECONDS, abs=5)
    snapshot = manager.snapshot_of(manager.get("short"))
    measured = (snapshot["memory"] or 0) + (snapshot["vram"] or 0)
    assert short["size"] == (measured if snapshot["memory"] is not None else snapshot["memory_estimate"] or 0)
    assert short["size_vram"] == (snapshot["vram"] or 0) and short["model"] == "short:latest"
    assert set(short["details"]) == DETAIL_KEYS and len(short["digest"]) == 64


async def test_ps_of_a_busy_model_counts_from_the_end_of_its_requests(front_door, write_recipe):
    write_recipe("slow", fake=["--delay", "2"], unload_timeout="1m")
    manager, http, url = await front_door()
    import asyncio

    body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}
    request = asyncio.ensure_future(http.post(f"{url}/v1/chat/completions", json=body))
    await until(lambda: manager.get("slow").snapshot()["in_flight"] == 1, what="the request to run")
    async with http.get(f"{url}/api/ps") as resp:
        (busy,) = (await resp.json())["models"]
    assert 55 < _when(busy["expires_at"]) - time.time() <= 60
    (await request).release()


async def test_remotes_are_listed_after_local_models_except_for_a_hop(ollama_remote, front_door, write_recipe):
    write_recipe("tiny")
    ollama_remote.load_now("phi", keep_alive=600)
    manager, http, url = await front_door()
    await until(lambda: {"llama3.2:latest", "phi"} <= set(manager.remotes.remotes["ol"].views), what="the listing")
    async with http.get(f"{url}/api/tags") as resp:
        names = [m["name"] for m in (await resp.json())["models"]]
    assert names == ["tiny:latest", "ol/llama3.2:latest", "ol/phi:latest"]
    async with http.get(f"{url}/api/tags", headers={HOP_HEADER: "1"}) as resp:
        assert [m["name"] for m in (await resp.json())["models"]] == ["tiny:latest"]
    async with http.get(f"{url}/api/ps") as resp:
        (phi,) = (await resp.json())["models"]
    assert phi["name"] == "ol/phi:latest" and 590 < _when(phi["expires_at"]) - time.time() <= 600
    async with http.get(f"{url}/api/ps", headers={HOP_HEADER: "1"}) as resp:
        assert (await resp.json())["models"] == []
    async with http.post(f"{url}/api/show", json={"model": "ol/phi:latest"}) as resp:
        show = await resp.json()
    assert resp.status == 200 and show["remote_model"] == "phi" and "remote_host" not in show
    async with http.post(f"{url}/api/show", json={"model": "ol/phi"}, headers={HOP_HEADER: "1"}) as resp:
        assert resp.status == 404


def test_rfc3339_reaches_far_years_in_utc():
    assert rfc3339(0) == "1970-01-01T00:00:00.000000Z"
    assert rfc3339(time.time() + NEVER_SECONDS).startswith(("2318-", "2319-", "2320-"))
