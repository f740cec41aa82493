"""Ollama's ``/api/pull`` and ``/api/delete`` with the official ``ollama`` client against a
Siesta and a fake Hugging Face Hub (tests/fakes/hub.py, never the network): Siesta's pull
with Ollama's progress, the recipe moved aside, names that cannot be pulled, the routes
answered 501, and who may pull or delete (:mod:`app.api.ollama.manage`)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from unittest import mock

import huggingface_hub.constants
import pytest
from aiohttp.test_utils import make_mocked_request

from app.api.ollama.manage import may_change_models, pull_refusal
from app.api.ollama.pull import OllamaPull
from app.core.config.recipes import read_recipe
from app.core.hub import download as hub_download
from app.demo_model import write_tiny_model
from tests.fakes.hub import FakeHub
from tests.fakes.remote import until

ollama = pytest.importorskip("ollama")

pytestmark = pytest.mark.timeout(60)

TINY = "acme/Tiny-GGUF"


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    folder = tmp_path_factory.mktemp("models")
    return (write_tiny_model(folder / "a.gguf", seed=0).read_bytes(),
            write_tiny_model(folder / "b.gguf", seed=1).read_bytes())


@pytest.fixture
def hub(model_bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The fake Hub, with every HF_* place in the test's folder and no stored token."""
    home = tmp_path / "hf-home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_TOKEN_PATH", "HF_HUB_ENABLE_HF_TRANSFER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(hub_download, "RETRY_DELAYS", (0.0, 0.0, 0.0))
    monkeypatch.setattr(hub_download, "PROGRESS_EVERY", 0.0)
    a, b = model_bytes
    fake = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)  # HubClient() reads it: Siesta's pull asks the fake
    fake.add(TINY, {"tiny-Q4_K_M.gguf": a, "tiny-Q8_0.gguf": b, "README.md": b"# Tiny\n"})
    fake.add("acme/Gated-GGUF", {"gated-Q4_K_M.gguf": a}, gated=True, tokens=("hf_good",))
    yield fake
    fake.stop()


def client(url: str) -> ollama.Client:
    return ollama.Client(host=url)


async def test_pull_streams_ollamas_progress_writes_the_recipe_and_lists_the_model(front_door, hub, paths,
                                                                                   model_bytes, tmp_path):
    manager, http, url = await front_door()
    c = client(url)
    updates = await asyncio.to_thread(lambda: list(c.pull(f"hf.co/{TINY}:Q4_K_M", stream=True)))
    statuses = [u.status for u in updates]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    sha = hashlib.sha256(model_bytes[0]).hexdigest()
    pulling = updates[1:-3]
    assert pulling and all(u.status == f"pulling {sha[:12]}" and u.digest == f"sha256:{sha}" for u in pulling)
    assert all(u.total == len(model_bytes[0]) for u in pulling)
    completed = [u.completed for u in pulling]
    assert completed == sorted(completed) and completed[-1] == len(model_bytes[0])
    assert len(pulling) > 2  # bytes as they arrive (the fake sends 64 KiB pieces), not only the start and end

    recipe = read_recipe(paths.recipe_file("tiny-q4_k_m"))
    assert Path(recipe.model).read_bytes() == model_bytes[0]
    assert "tiny-q4_k_m:latest" in [m.model for m in (await asyncio.to_thread(c.list)).models]

    # again, not streamed: the file is in the cache, the recipe is there, one answer
    fetched = len(hub.body_requests())
    again = await asyncio.to_thread(c.pull, f"hf.co/{TINY}:Q4_K_M")
    assert again.status == "success" and len(hub.body_requests()) == fetched

    # delete by the name it was pulled as: the recipe is moved aside, the file stays
    assert (await asyncio.to_thread(c.delete, f"hf.co/{TINY}:Q4_K_M")).status == "success"
    assert not paths.recipe_file("tiny-q4_k_m").exists()
    assert (paths.recipes_dir / ".deleted" / "tiny-q4_k_m.toml").is_file()
    assert Path(recipe.model).read_bytes() == model_bytes[0]
    assert "tiny-q4_k_m:latest" not in [m.model for m in (await asyncio.to_thread(c.list)).models]
    with pytest.raises(ollama.ResponseError) as info:
        await asyncio.to_thread(c.delete, "tiny-q4_k_m")
    assert info.value.status_code == 404


async def test_pull_without_a_quant_takes_the_default_and_latest_means_none(front_door, hub, paths):
    manager, http, url = await front_door()
    done = await asyncio.to_thread(client(url).pull, f"hf.co/{TINY}:latest")
    assert done.status == "success"
    assert paths.recipe_file("tiny-q4_k_m").is_file()  # Q4_K_M, as llama-server -hf picks


async def test_pull_failures_answer_ollamas_error(front_door, hub):
    manager, http, url = await front_door()
    c = client(url)
    for name in ("llama3.2", "llama3.2:1b", "acme/Tiny-GGUF:Q4_K_M", "registry.ollama.ai/library/qwen3"):
        with pytest.raises(ollama.ResponseError) as info:
            await asyncio.to_thread(c.pull, name)
        assert info.value.status_code == 400, name
        assert "only Hugging Face GGUF repos can be pulled" in info.value.error
        assert "hf.co/ORG/REPO:QUANT" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        await asyncio.to_thread(c.pull, "hf.co/acme/Nope-GGUF:Q4_K_M")
    assert info.value.status_code == 404 and "acme/Nope-GGUF" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        await asyncio.to_thread(c.pull, f"hf.co/{TINY}:Q2_K")
    assert info.value.status_code == 404 and "Q2_K" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        await asyncio.to_thread(c.pull, "hf.co/acme/Gated-GGUF:Q4_K_M")
    assert info.value.status_code == 403 and "gated" in info.value.error
    # streamed: the error is the stream's last line, after "pulling manifest"
    async with http.post(f"{url}/api/pull", json={"model": "hf.co/acme/Nope-GGUF"}) as resp:
        assert resp.status == 200 and resp.content_type == "application/x-ndjson"
        lines = [json.loads(line) for line in (await resp.text()).splitlines()]
    assert lines[0] == {"status": "pulling manifest"} and len(lines) == 2 and "acme/Nope-GGUF" in lines[1]["error"]
    assert all("Gated-GGUF" in r.path for r in hub.body_requests())  # refused: nothing fetched


async def test_create_copy_push_and_blobs_answer_501_with_what_to_do(front_door, paths):
    manager, http, url = await front_door()
    c = client(url)
    for call in (lambda: c.create("mine", from_="tiny"), lambda: c.copy("tiny", "tiny2"), lambda: c.push("tiny")):
        with pytest.raises(ollama.ResponseError) as info:
            await asyncio.to_thread(call)
        assert info.value.status_code == 501 and "not served by Siesta" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        await asyncio.to_thread(lambda: c.create("mine", from_="tiny"))
    assert str(paths.recipes_dir) in info.value.error and "siesta pull" in info.value.error
    digest = "sha256:" + "0" * 64
    async with http.head(f"{url}/api/blobs/{digest}") as resp:
        assert resp.status == 501
    async with http.post(f"{url}/api/blobs/{digest}", data=b"x", headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 501 and "siesta pull" in (await resp.json())["error"]


async def test_delete_unloads_first_and_never_overwrites_an_earlier_deletion(front_door, write_recipe, paths,
                                                                           event_log):
    manager, http, url = await front_door()
    (paths.recipes_dir / ".deleted").mkdir()
    (paths.recipes_dir / ".deleted" / "m.toml").write_text("# deleted before\n")
    write_recipe("m", fake=[])
    manager.reload_recipes()
    log = event_log(manager)
    await manager.load("m")
    backend = manager.get("m")._process
    assert backend is not None and backend.returncode is None
    async with http.delete(f"{url}/api/delete", json={"model": "m:latest"}) as resp:
        assert resp.status == 200, await resp.text()
    assert backend.returncode is not None  # its server stopped before the answer
    assert (paths.recipes_dir / ".deleted" / "m.toml").read_text() == "# deleted before\n"
    assert (paths.recipes_dir / ".deleted" / "m.2.toml").read_text().startswith("# recipe m")
    await until(lambda: "removed" in log.reasons("m"), what="the model to be forgotten")
    assert log.reasons("m").index("removed") > 0
    async with http.delete(f"{url}/api/delete", json={"model": "m"}) as resp:
        assert resp.status == 404 and (await resp.json()) == {"error": "model 'm' not found"}
    async with http.delete(f"{url}/api/delete", json={}) as resp:
        assert resp.status == 400


def _request(method: str, path: str, remote: str):
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda key, default=None: (remote, 50000) if key == "peername" else default
    return make_mocked_request(method, path, headers={"Host": "siesta.lan:8777"}, transport=transport)


def test_the_rule_loopback_or_the_api_key() -> None:
    assert may_change_models("127.0.0.1", None) and may_change_models("::1", None)
    assert may_change_models("127.8.9.10", None) and may_change_models("::ffff:127.0.0.1", None)
    assert not may_change_models("192.168.1.20", None) and not may_change_models("::ffff:10.0.0.2", None)
    assert not may_change_models(None, None) and not may_change_models("localhost", None)
    assert may_change_models("192.168.1.20", "secret")  # the guard has checked the key by then
    allow = mock.Mock(allow_pull_over_http=True, api_key=None)
    assert pull_refusal("127.0.0.1", allow) is None
    assert "SIESTA_API_KEY" in pull_refusal("192.168.1.20", allow)
    off = mock.Mock(allow_pull_over_http=False, api_key="secret")
    assert "allow_pull_over_http" in pull_refusal("127.0.0.1", off)


async def test_pull_and_delete_from_another_machine_without_a_key_are_refused(manager_factory, front_door):
    from app.api.ollama.manage import OllamaManage

    manager = await manager_factory()
    for handler, path in ((OllamaPull(manager).pull, "/api/pull"), (OllamaManage(manager).delete, "/api/delete")):
        response = await handler(_request("POST" if path == "/api/pull" else "DELETE", path, "192.168.1.20"))
        assert response.status == 403 and b"API key" in response.body
    # the setting turns pulling over HTTP off, for this machine's clients too
    manager, http, url = await front_door(allow_pull_over_http=False)
    async with http.post(f"{url}/api/pull", json={"model": f"hf.co/{TINY}:Q4_K_M"}) as resp:
        assert resp.status == 403 and "allow_pull_over_http" in (await resp.json())["error"]
