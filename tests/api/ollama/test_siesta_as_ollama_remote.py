"""Siesta as its own Ollama remote: a second Siesta with ``kind = "ollama"`` pointing at the first
one's Ollama routes sees, loads, unloads and times out the first one's models, through the same
code that drives a real Ollama (:mod:`app.core.remotes.ollama_engine`)."""

from __future__ import annotations

import pytest

from app.api.server import ApiServer
from app.core.config.paths import Paths
from app.core.config.settings import load_settings
from app.core.manager import ModelManager
from app.core.models.model import ModelState
from tests.fakes.remote import get_json, until

pytestmark = pytest.mark.timeout(60)


async def test_a_second_siesta_drives_the_first_through_its_ollama_api(front_door, write_recipe, tmp_path) -> None:
    write_recipe("tiny", fake=[])
    first, http, first_url = await front_door(global_unload_timeout=300)

    paths = Paths(config_dir=tmp_path / "second" / "config", log_dir=tmp_path / "second" / "logs",
                  data_dir=tmp_path / "second" / "data")
    paths.recipes_dir.mkdir(parents=True)
    paths.settings_file.write_text(f'[remotes.first]\nkind = "ollama"\nurl = "{first_url}"\n', encoding="utf-8")
    second = ModelManager(paths, load_settings(paths.settings_file, {"stop_timeout": 3, "load_timeout": 20}),
                          watch_files=False)
    await second.start()
    server = ApiServer(second)
    await server.start(port=0)
    second_url = f"http://127.0.0.1:{server.port}"
    try:
        remote = second.remotes.remotes["first"]
        await until(lambda: "tiny:latest" in remote.views, what="the first Siesta's model in the second's list")
        listed = {m["name"]: m for m in (await get_json(http, f"{second_url}/api/v1/models"))["models"]}
        assert listed["first/tiny:latest"]["state"] == "unloaded"

        # load through the second: the first loads its model (an empty /api/generate)
        async with http.post(f"{second_url}/api/v1/load", json={"model": "first/tiny:latest"}) as resp:
            assert resp.status == 200, await resp.text()
        assert first.get("tiny").state is ModelState.READY
        # the second's timeout reaches the first as Ollama's keep_alive
        await until(lambda: first.get("tiny").effective_timeout()[0] == 300, what="the first to keep it 300 s")
        await until(lambda: remote.views["tiny:latest"].info.state == "ready", what="the second to see it loaded")

        # a chat through the second reaches the first's model
        async with http.post(f"{second_url}/v1/chat/completions",
                             json={"model": "first/tiny:latest", "messages": [{"role": "user", "content": "hi"}]}) as resp:
            assert resp.status == 200, await resp.text()

        # a timeout set on the second becomes the first model's countdown (keep_alive)
        async with http.patch(f"{second_url}/api/v1/models/first/tiny:latest", json={"unload_timeout": "90s"}) as resp:
            assert resp.status == 200, await resp.text()
        async with http.post(f"{second_url}/v1/chat/completions",
                             json={"model": "first/tiny:latest", "messages": [{"role": "user", "content": "hi"}]}) as resp:
            assert resp.status == 200
        await until(lambda: first.get("tiny").effective_timeout()[0] == 90, what="keep_alive 90 on the first")
        snapshot = first.snapshot_of(first.get("tiny"))
        assert snapshot["unload_at"] is not None and snapshot["unloads_in"] <= 90

        # unload through the second: keep_alive 0 on the first
        async with http.post(f"{second_url}/api/v1/unload", json={"model": "first/tiny:latest"}) as resp:
            answer = await resp.text()
            assert resp.status == 200, answer
        await until(lambda: first.get("tiny").state is ModelState.UNLOADED,
                    what=f"the first to unload it (the second answered {answer}; the first: "
                         f"{first.snapshot_of(first.get('tiny'))})")
    finally:
        await server.stop()
        await second.close()
