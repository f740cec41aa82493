"""Load progress for a streaming ``/v1`` request that waits for its model's load.

A request with ``"stream": true`` whose model is not ready when it arrives (checked first:
a ready model's request takes the plain path, with no task and no timer) waits for the
load as usual; once it has waited :data:`PROGRESS_AFTER` seconds without a byte of the
model's answer, the answer begins (200, ``text/event-stream``) with an SSE comment every
:data:`PROGRESS_EVERY` seconds, ``: loading NAME, 12 s`` (the seconds this request has
waited, on the clock :attr:`~app.core.models.lease.Lease.load_wait` is measured by), until
the first byte of the model's answer, which then follows in the same stream. Clients
ignore comments; proxies and client timeouts see bytes.

With ``loading_feedback`` (the setting, or the recipe's key of that name, which wins), a
chat stream (``/v1/chat/completions``) gets the progress as chunks of its own kind instead,
``{"object": "chat.completion.chunk", "choices": [{"delta": {"reasoning_content":
"loading NAME… 12 s\\n"}}]}``, which chat apps show as the model's "thinking".

Once the answer has begun its status is sent, so a load (or the model's server) that fails
afterwards ends the stream with one ``data: {"error": {...}}`` event, the body the error's
own answer would have had (message, type, code, and ``log_tail`` for a 503), and no
``data: [DONE]``: OpenAI's API ends a failed stream with the error alone, its clients stop
on it, and a client that looks only for ``[DONE]`` should not take a failure for an empty
answer. A failure before the answer began keeps its status (503 with ``Retry-After``...).

Only ``/v1``'s own pass-through uses this (:meth:`~app.api.openai_proxy.OpenAIProxy.forward`);
Ollama's routes, non-streaming requests and remote models get nothing extra.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from app.api.errors import error_response

PROGRESS_AFTER = 2.0
"""Seconds a streaming request waits for its model before the progress begins."""
PROGRESS_EVERY = 1.0
"""Seconds between two progress lines."""

CHAT_PATH = "/v1/chat/completions"
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}

T = TypeVar("T")


class LoadProgress:
    """One waiting request's progress: :meth:`wait` for the lease, :meth:`relay` for the
    answer, :meth:`fail` for an error; ``response`` is the stream once it has begun."""

    def __init__(self, request: web.Request, name: str, now: Callable[[], float], *, chat: bool) -> None:
        self.request = request
        self.name = name
        self.chat = chat
        self._now = now
        self.started = now()  # the moment acquire() starts measuring Lease.load_wait from
        self._loop = asyncio.get_running_loop()
        self._next = self._loop.time() + PROGRESS_AFTER
        self._id = "chatcmpl-load-" + secrets.token_hex(8)
        self.response: web.StreamResponse | None = None

    @property
    def begun(self) -> bool:
        return self.response is not None

    async def wait(self, awaitable: Awaitable[T], *, orphan: Callable[[T], Any] | None = None) -> T:
        """Awaits ``awaitable``, sending progress while it takes long. Its result, should this
        wait be cancelled just as it came, goes to ``orphan`` (a lease must be released)."""
        task = asyncio.ensure_future(awaitable)
        taken = False
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=max(0.0, self._next - self._loop.time()))
                if done:
                    taken = True
                    return task.result()
                await self._tick()
                self._next = self._loop.time() + PROGRESS_EVERY
        finally:
            if not task.done():
                task.cancel()
            elif not taken and orphan is not None and not task.cancelled() and task.exception() is None:
                orphan(task.result())

    async def _tick(self) -> None:
        if self.response is None:
            self.response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream",
                                                                   "Cache-Control": "no-cache"})
            self.response.enable_chunked_encoding()
            await self.response.prepare(self.request)
        seconds = max(0, round(self._now() - self.started))
        if self.chat:
            chunk = {"id": self._id, "object": "chat.completion.chunk", "created": int(self._now()),
                     "model": self.name, "choices": [{"index": 0, "finish_reason": None, "delta": {
                         "reasoning_content": f"loading {self.name}\u2026 {seconds} s\n"}}]}
            line = f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
        else:
            line = f": loading {self.name}, {seconds} s\n\n"
        await self.response.write(line.encode())

    async def fail(self, answer: web.Response) -> web.StreamResponse:
        """``answer`` (an error answer) as it is before the stream began; after, its body as
        the stream's last event."""
        if self.response is None:
            return answer
        body = answer.body if isinstance(answer.body, bytes) else b"{}"
        try:
            await self.response.write(b"data: " + body + b"\n\n")
            await self.response.write_eof()
        except (ConnectionResetError, aiohttp.ClientError):
            pass  # the client has gone
        return self.response

    async def relay(self, opening: Any, name: str, on_failure: Callable[[], None]) -> web.StreamResponse:
        """Passes on the model server's answer to ``opening`` (its request, being sent), with
        progress until its first byte: as :meth:`OpenAIProxy._relay` does before the stream
        began; after, into the stream (an answer that is not a stream as an error event)."""
        upstream: aiohttp.ClientResponse | None = None
        written = False
        try:
            upstream = await self.wait(opening, orphan=lambda r: r.close())
            streaming = upstream.content_type == "text/event-stream" or upstream.content_length is None
            if not streaming:
                payload = await upstream.read()
                if self.response is None:
                    return web.Response(body=payload, status=upstream.status, headers=_headers(upstream))
                return await self.fail(_as_event(upstream.status, payload, name))
            first = await self.wait(upstream.content.readany())
            if self.response is None:
                self.response = web.StreamResponse(status=upstream.status, headers=_headers(upstream))
                self.response.enable_chunked_encoding()
                await self.response.prepare(self.request)
            response = self.response
            if first:
                await response.write(first)
                written = True
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            transport = self.request.transport
            if transport is None or transport.is_closing():
                return self.response or web.Response(status=499)  # the client went away, not the server
            on_failure()
            failure = error_response(502, "backend_error", f"model {name!r}: its server failed during the request "
                                                           f"({type(exc).__name__}: {exc})")
            if self.response is None or not written:
                return await self.fail(failure)
            if self.request.transport is not None:  # mid-event: end the stream abruptly, as _relay does
                self.request.transport.close()
            return self.response
        except ConnectionResetError:
            return self.response or web.Response(status=499)  # the client went away
        finally:
            if upstream is not None:
                upstream.close()


def _headers(upstream: aiohttp.ClientResponse) -> dict[str, str]:
    return {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}


def _as_event(status: int, payload: bytes, name: str) -> web.Response:
    """An answer that is not a stream, given after the stream began, for :meth:`LoadProgress.fail`:
    its own JSON in one line (an error body, or a success, which is followed by ``[DONE]``),
    else a 502 ``backend_error`` that quotes it."""
    try:
        data = json.loads(payload)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return web.Response(body=json.dumps({"error": data["error"]}).encode(), status=status)
    if isinstance(data, dict) and status < 300:
        return web.Response(body=json.dumps(data).encode() + b"\n\ndata: [DONE]", status=status)
    text = payload[:200].decode("utf-8", "replace")
    return error_response(502, "backend_error", f"model {name!r}: its server answered {status} instead of a "
                                                f"stream: {text}")
