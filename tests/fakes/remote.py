"""What the fake remote engines (:mod:`tests.fakes.ollama`, :mod:`tests.fakes.lemonade`,
:mod:`tests.fakes.siesta`) share: an aiohttp server on 127.0.0.1 with a free port, on the
test's own loop, that records every call (method, path, JSON body, headers) and lets a test
await the one it expects. With ``api_key`` set, a call without ``Authorization: Bearer
<api_key>`` is answered 401. :class:`ScriptedServer` serves the routes a test writes, and
:func:`endless` an answer that never ends."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web


@dataclass
class Call:
    method: str
    path: str
    body: Any
    headers: dict[str, str]


class FakeServer:
    """The recording server; subclasses add their routes in :meth:`routes`."""

    def __init__(self, *, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.calls: list[Call] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._waiters: list[tuple[Callable[[Call], bool], asyncio.Future[Call]]] = []

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    async def start(self, port: int = 0) -> str:
        app = web.Application(middlewares=[self._record])
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{bound}"
        return self.url

    async def stop(self) -> None:
        """Stops listening: afterwards nothing answers on its port."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    # ---- what the tests read ------------------------------------------------------------

    def calls_to(self, path: str, method: str = "POST") -> list[Call]:
        return [c for c in self.calls if c.path == path and c.method == method]

    async def wait_for_call(self, pred: Callable[[Call], bool], timeout: float = 10.0, *,
                            past: bool = True) -> Call:
        """The first recorded call that matches (one already made too, unless ``past=False``)."""
        if past:
            for call in self.calls:
                if pred(call):
                    return call
        fut: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
        self._waiters.append((pred, fut))
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiters.remove((pred, fut))

    # ---- recording ----------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = raw
        call = Call(request.method, request.path, body, dict(request.headers))
        self.calls.append(call)
        for pred, fut in list(self._waiters):
            if not fut.done() and pred(call):
                fut.set_result(call)
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": "unauthorized: a valid API key is needed"}, status=401)
        return await handler(request)


async def gate(event: asyncio.Event | None) -> None:
    """Waits for the event the test controls; None: at once."""
    if event is not None:
        await event.wait()


async def until(condition: Callable[[], Any], timeout: float = 10.0, *, poke: Callable[[], None] | None = None,
                what: str = "the condition") -> Any:
    """Waits until ``condition()`` (or what it returns, awaited) is truthy and returns it, checking every 20 ms (calling
    ``poke`` before each check, to make a remote list again now); fails after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if poke is not None:
            poke()
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    """GET ``url`` through Siesta's front door, asserting a 200 answer; its JSON."""
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def chat(http: aiohttp.ClientSession, url: str, model: str, **extra: Any) -> tuple[int, Any]:
    """A chat completion through Siesta's front door at ``url``: its status and JSON."""
    async with http.post(f"{url}/v1/chat/completions",
                         json={"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}) as resp:
        return resp.status, await resp.json()


class ScriptedServer(FakeServer):
    """A recording server with the routes a test writes itself (an answer no real engine
    gives: endless, huge, malformed)."""

    def __init__(self, routes: list[web.RouteDef], *, api_key: str | None = None) -> None:
        super().__init__(api_key=api_key)
        self._routes = routes

    def routes(self) -> list[web.RouteDef]:
        return self._routes


async def endless(request: web.Request, head: bytes = b"", *, status: int = 200,
                  content_type: str = "application/json", sent: list[int] | None = None) -> web.StreamResponse:
    """An answer that never ends: ``head``, then filler as fast as the client reads it
    (``sent`` counts the bytes written, for a test that checks how much was read)."""
    response = web.StreamResponse(status=status, headers={"Content-Type": content_type})
    await response.prepare(request)
    await response.write(head)
    filler = b'{"id": "m"}, ' * 5000
    while True:
        await response.write(filler)
        if sent is not None:
            sent[0] += len(filler)
