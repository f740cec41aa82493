"""A fake Ollama for tests of ``ollama`` remotes: the shapes of Ollama's own API.

* ``GET /`` ("Ollama is running"), ``GET /api/version``;
* ``GET /api/tags``: the installed models; ``GET /api/ps``: the loaded ones, with
  ``expires_at`` written as Ollama writes it (RFC 3339, nine digits of a second, a local
  offset; a year near 2318 for "never");
* ``POST /api/generate`` with no prompt: loads (``done_reason: load``), or with
  ``keep_alive: 0`` unloads (``done_reason: unload``); ``keep_alive`` a number of seconds
  or a Go duration, negative for never, 5 minutes when not given;
* ``POST /v1/chat/completions``: loads the model if needed, answers a fixed completion
  and records the body; it IGNORES ``keep_alive``, as Ollama does on its ``/v1`` routes.

Models expire on the fake's own clock (``clock``, and :meth:`FakeOllama.advance`), checked
at every call. A load waits for ``load_gate`` when the test sets one.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from tests.fakes.remote import Call, FakeServer, gate

__all__ = ["Call", "FakeOllama", "go_duration", "ollama_time"]

DEFAULT_KEEP_ALIVE = 300.0
_OFFSET = timezone(timedelta(hours=2))  # Ollama writes local time with its offset
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|h|m|s)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def ollama_time(when: float | None) -> str:
    """``when`` (Unix time) as Ollama writes ``expires_at``; None: the far future Go's
    ``time.Now().Add(math.MaxInt64)`` gives for a negative keep_alive."""
    moment = (datetime.now(_OFFSET) + timedelta(days=106751) if when is None
              else datetime.fromtimestamp(when, _OFFSET))
    nanos = moment.microsecond * 1000 + 789  # Go's nanoseconds: nine digits
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}" + moment.strftime("%z")[:3] + ":" \
        + moment.strftime("%z")[3:]


def go_duration(value: Any) -> float | None:
    """A ``keep_alive`` as Ollama reads it: seconds (None for never); ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"invalid keep_alive {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        sign = -1.0 if text.startswith("-") else 1.0
        text = text.lstrip("+-")
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = sign * float(text)
        elif text and re.fullmatch(f"(?:{_GO_PART.pattern})+", text):
            seconds = sign * sum(float(n) * _GO_UNITS[u] for n, u in _GO_PART.findall(text))
        else:
            raise ValueError(f"time: invalid duration {value!r}")
    else:
        raise ValueError(f"invalid keep_alive {value!r}")
    return None if seconds < 0 else seconds


class FakeOllama(FakeServer):
    """``models``: the installed models and their sizes in bytes."""

    def __init__(self, models: dict[str, int], *, api_key: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(api_key=api_key)
        self.installed = dict(models)
        self.clock = clock
        self.offset = 0.0
        self.loaded: dict[str, float | None] = {}  # model -> expires at (fake's clock), None: never
        self.load_gate: asyncio.Event | None = None
        self.loads = 0
        self.bad_shape = False  # /api/tags answers something that is not Ollama's shape

    def now(self) -> float:
        return self.clock() + self.offset

    def advance(self, seconds: float) -> None:
        """Moves the fake's clock on: models whose time is up expire at the next call."""
        self.offset += seconds

    def load_now(self, model: str, keep_alive: float | None = DEFAULT_KEEP_ALIVE) -> None:
        """A model another client loaded, directly on Ollama."""
        self.loaded[model] = None if keep_alive is None else self.now() + keep_alive

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.root),
            web.get("/api/version", self.version),
            web.get("/api/tags", self.tags),
            web.get("/api/ps", self.ps),
            web.post("/api/generate", self.generate),
            web.post("/v1/chat/completions", self.chat),
        ]

    def _expire(self) -> None:
        now = self.now()
        for model, expires in list(self.loaded.items()):
            if expires is not None and expires <= now:
                del self.loaded[model]

    async def root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "0.12.6"})

    async def tags(self, request: web.Request) -> web.Response:
        if self.bad_shape:
            return web.json_response({"models": "llama3.2:latest"})
        return web.json_response({"models": [
            {"name": name, "model": name, "modified_at": "2025-05-01T10:00:00.123456789+02:00", "size": size,
             "digest": f"{abs(hash(name)):064x}"[:64],
             "details": {"format": "gguf", "family": "llama", "parameter_size": "3.2B",
                         "quantization_level": "Q4_K_M"}}
            for name, size in self.installed.items()]})

    async def ps(self, request: web.Request) -> web.Response:
        self._expire()
        return web.json_response({"models": [
            {"name": name, "model": name, "size": self.installed.get(name, 0),
             "digest": f"{abs(hash(name)):064x}"[:64], "details": {"format": "gguf"},
             "expires_at": ollama_time(expires if expires is None else expires - self.offset),
             "size_vram": self.installed.get(name, 0) // 2, "context_length": 4096}
            for name, expires in self.loaded.items()]})

    async def _load(self, model: str, keep_alive: float | None) -> None:
        if model not in self.loaded:
            await gate(self.load_gate)
            self.loads += 1
        self.loaded[model] = None if keep_alive is None else self.now() + keep_alive

    def _missing(self, model: Any) -> web.Response | None:
        if model in self.installed:
            return None
        return web.json_response({"error": f"model '{model}' not found"}, status=404)

    async def generate(self, request: web.Request) -> web.Response:
        self._expire()
        data = await request.json()
        model = data.get("model")
        if (missing := self._missing(model)) is not None:
            return missing
        try:
            keep_alive = go_duration(data["keep_alive"]) if "keep_alive" in data else DEFAULT_KEEP_ALIVE
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        answer = {"model": model, "created_at": ollama_time(self.now()), "response": "", "done": True}
        if data.get("prompt"):
            return web.json_response({"error": "the fake only loads and unloads"}, status=400)
        if keep_alive == 0:
            self.loaded.pop(model, None)
            return web.json_response({**answer, "done_reason": "unload"})
        await self._load(model, keep_alive)
        return web.json_response({**answer, "done_reason": "load"})

    async def chat(self, request: web.Request) -> web.Response:
        self._expire()
        data = await request.json()
        model = data.get("model")
        if model not in self.installed:
            return web.json_response({"error": {"message": f"model '{model}' not found", "type": "api_error"}},
                                     status=404)
        await self._load(model, DEFAULT_KEEP_ALIVE)  # keep_alive in the body is ignored here
        return web.json_response({
            "id": "chatcmpl-1", "object": "chat.completion", "created": int(self.now()), "model": model,
            "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello from ollama"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}})


async def _serve(port: int, models: dict[str, int], loaded: dict[str, float]) -> None:
    fake = FakeOllama(models)
    for model, keep_alive in loaded.items():
        fake.load_now(model, keep_alive=keep_alive)
    await fake.start(port)
    print(f"fake Ollama serving on {fake.url}", flush=True)
    await asyncio.Event().wait()  # until the process is stopped


def main(argv: list[str] | None = None) -> None:
    """Runs the fake on its own, for the screenshots (``python -m tests.fakes.ollama``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.fakes.ollama", description=main.__doc__)
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--model", action="append", default=[], metavar="NAME=BYTES",
                        help="an installed model and its size in bytes (repeat it)")
    parser.add_argument("--loaded", action="append", default=[], metavar="NAME=SECONDS",
                        help="a model loaded from the start, unloaded after SECONDS by Ollama's own clock")
    args = parser.parse_args(argv)
    models = {name: int(size) for name, _, size in (m.rpartition("=") for m in args.model)}
    loaded = {name: float(seconds) for name, _, seconds in (m.rpartition("=") for m in args.loaded)}
    try:
        asyncio.run(_serve(args.port, models, loaded))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
