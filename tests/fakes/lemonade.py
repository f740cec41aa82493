"""A fake Lemonade server for tests of ``lemonade`` remotes: the shapes of Lemonade's API.

* ``GET /api/v1/health``: ``status``, ``version``, ``model_loaded`` and
  ``all_models_loaded`` (``model_name``, ``checkpoint``, ``recipe``, ``is_busy``, ``pinned``,
  ``last_use`` in steady-clock milliseconds, ...), ``max_models``;
* ``GET /api/v1/models``: the downloaded models, OpenAI's shape (``{"data": [{"id"}]}``);
* ``POST /api/v1/load`` / ``/api/v1/unload`` with ``model_name`` (an empty unload body
  unloads every model); a load answers once the model is loaded;
* ``POST /api/v1/chat/completions``: loads the model if needed, answers a fixed completion
  and records the body. The model is busy while the request runs.

There is no idle clock: models stay loaded until unloaded. A load waits for
``load_gate``, and a chat for ``chat_gate``, when the test sets them.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from tests.fakes.remote import Call, FakeServer, gate

__all__ = ["Call", "FakeLemonade"]


class FakeLemonade(FakeServer):
    """``models``: the downloaded models' names."""

    def __init__(self, models: list[str], *, api_key: str | None = None) -> None:
        super().__init__(api_key=api_key)
        self.downloaded = list(models)
        self.loaded: dict[str, dict[str, Any]] = {}
        self.load_gate: asyncio.Event | None = None
        self.chat_gate: asyncio.Event | None = None
        self.bad_shape = False  # /api/v1/health answers a list instead of an object

    def load_now(self, model: str, *, busy: bool = False) -> None:
        """A model another client loaded, directly on Lemonade."""
        self.loaded[model] = self._entry(model)
        self.loaded[model]["is_busy"] = busy

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/health", self.health),
            web.get("/api/v1/models", self.models),
            web.post("/api/v1/load", self.load),
            web.post("/api/v1/unload", self.unload),
            web.post("/api/v1/chat/completions", self.chat),
        ]

    def _entry(self, model: str) -> dict[str, Any]:
        return {"model_name": model, "checkpoint": f"unsloth/{model}:Q4_K_M", "type": "llm", "device": "gpu",
                "backend_url": "http://127.0.0.1:8001/v1", "pid": 4242, "recipe": "llamacpp",
                "recipe_options": {"ctx_size": 4096}, "is_busy": False, "pinned": False,
                "last_use": int(time.monotonic() * 1000)}

    async def _load(self, model: str) -> None:
        if model not in self.loaded:
            await gate(self.load_gate)
            self.loaded[model] = self._entry(model)

    def _missing(self, model: Any) -> web.Response | None:
        if model in self.downloaded:
            return None
        return web.json_response({"error": {"message": f"Model {model} has not been found", "type": "not_found"}},
                                 status=404)

    async def health(self, request: web.Request) -> web.Response:
        if self.bad_shape:
            return web.json_response(["ok"])
        last = list(self.loaded)[-1] if self.loaded else None
        return web.json_response({
            "status": "ok", "version": "10.1.0", "model_loaded": last,
            "checkpoint_loaded": self.loaded[last]["checkpoint"] if last else None,
            "all_models_loaded": list(self.loaded.values()),
            "max_models": {"llm": 3, "embedding": 1, "reranking": 1, "audio": 1, "image": 1}})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": name, "created": 1744173590, "object": "model", "owned_by": "lemonade",
             "checkpoint": f"unsloth/{name}:Q4_K_M", "recipe": "llamacpp", "size": 0.38, "downloaded": True,
             "suggested": True, "labels": []}
            for name in self.downloaded]})

    async def load(self, request: web.Request) -> web.Response:
        data = await request.json()
        model = data.get("model_name")
        if (missing := self._missing(model)) is not None:
            return missing
        await self._load(model)
        return web.json_response({"status": "success", "message": f"Loaded model: {model}"})

    async def unload(self, request: web.Request) -> web.Response:
        raw = await request.read()
        data = json.loads(raw) if raw.strip() else None
        model = data.get("model_name") if isinstance(data, dict) else None
        if model is None:
            self.loaded.clear()
            return web.json_response({"status": "success", "message": "Unloaded all models"})
        if self.loaded.pop(model, None) is None:
            return web.json_response({"status": "error", "message": f"Model not loaded: {model}"}, status=404)
        return web.json_response({"status": "success", "message": f"Unloaded model: {model}"})

    async def chat(self, request: web.Request) -> web.Response:
        data = await request.json()
        model = data.get("model")
        if (missing := self._missing(model)) is not None:
            return missing
        await self._load(model)
        self.loaded[model]["is_busy"] = True
        try:
            await gate(self.chat_gate)
        finally:
            if model in self.loaded:
                self.loaded[model]["is_busy"] = False
                self.loaded[model]["last_use"] = int(time.monotonic() * 1000)
        return web.json_response({
            "id": "0", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello from lemonade"},
                         "finish_reason": "stop"}]})
