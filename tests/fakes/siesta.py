"""A fake Siesta for tests of ``siesta`` remotes that a real one cannot be made to fail:
answers a test writes itself, byte for byte.

* ``GET /api/v1/health``;
* ``GET /api/v1/models?scope=local``: ``{"models": [...]}`` built from :attr:`FakeSiesta.models`,
  each entry a dict (sent as JSON) or a str (sent as it is: ``1e999``, which Python's own
  JSON writer cannot write); :attr:`FakeSiesta.raw` replaces the whole answer;
* ``GET /api/v1/events?scope=local``: a stream that stays open and sends each line a test
  puts with :meth:`FakeSiesta.send` (``data: ...``);
* ``POST /api/v1/load`` and ``/api/v1/unload``: ``{}`` once ``action_gate`` is set (at once
  when there is none);
* ``POST /v1/chat/completions``: a fixed answer, the body recorded.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from tests.fakes.remote import Call, FakeServer, gate

__all__ = ["Call", "FakeSiesta", "snapshot"]


def snapshot(name: str, **fields: Any) -> dict[str, Any]:
    """A model as a Siesta lists it (the fields ``siesta ps`` reads), with ``fields`` changed."""
    return {"name": name, "state": "ready", "stale": False, "in_flight": 0, "waiting": 0,
            "unload_timeout": 300.0, "timeout_source": "global", "idle_since": 1.7e9, "unload_at": 1.7e9 + 300,
            "unloads_in": 120.0, "loading_since": None, "last_load_seconds": 1.5, "last_unload_reason": None,
            "pid": 4242, "error": None, "exit_code": None, "crash_loop": False, "backend": "llamacpp",
            "group": None, "preload": False, "memory": 1_000_000, "vram": None, "memory_by_device": {"ram": 1_000_000},
            "memory_estimate": 2_000_000, "memory_estimate_source": "gguf", "log_file": "/there/tiny.log", **fields}


class FakeSiesta(FakeServer):
    def __init__(self, models: list[dict[str, Any] | str], *, api_key: str | None = None) -> None:
        super().__init__(api_key=api_key)
        self.models = list(models)
        self.raw: bytes | None = None
        self.action_gate: asyncio.Event | None = None
        self._events: asyncio.Queue[bytes] = asyncio.Queue()

    def send(self, event: dict[str, Any] | str) -> None:
        """One event on the stream: a dict as JSON, a str as it is."""
        self._events.put_nowait(event if isinstance(event, str) else json.dumps(event))  # type: ignore[arg-type]

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/health", self.health),
            web.get("/api/v1/models", self.list),
            web.get("/api/v1/events", self.events),
            web.post("/api/v1/load", self.action),
            web.post("/api/v1/unload", self.action),
            web.post("/v1/chat/completions", self.chat),
        ]

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def list(self, request: web.Request) -> web.Response:
        if self.raw is not None:
            return web.Response(body=self.raw, content_type="application/json")
        entries = [m if isinstance(m, str) else json.dumps(m) for m in self.models]
        return web.Response(text='{"models": [' + ", ".join(entries) + "]}", content_type="application/json")

    async def events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b": connected\n\n")
        while True:
            line = await self._events.get()
            await response.write(f"data: {line}\n\n".encode())

    async def action(self, request: web.Request) -> web.Response:
        await gate(self.action_gate)
        return web.json_response({})

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"choices": [{"message": {"role": "assistant", "content": f"from {body['model']}"}}]})
