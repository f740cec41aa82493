"""``POST /api/chat`` and ``POST /api/generate``: Ollama's generation routes, carried by the
model's OpenAI-compatible server.

A request is read as ``/v1`` reads one (:mod:`app.api.bodies`: its size, pace and depth;
:mod:`app.api.names`: the name's length), its model resolved as Ollama's clients name it
(``NAME:latest``) and its ``keep_alive`` read as Ollama reads it
(:func:`~app.core.config.go_duration.ollama_keep_alive`). It is translated
(:mod:`.translate`) and sent the way ``/v1`` sends requests,
:meth:`~app.api.openai_proxy.OpenAIProxy.route`: a local model through a lease taken with
that ``keep_alive`` (loading it first), a remote's model through its remote; a request from
another Siesta (its hop header) reaches local models only. The answer comes back as Ollama's:
a stream of JSON objects, one a line (``application/x-ndjson``; ``stream`` is true unless it
is false), or one object; the last one has ``done_reason`` and the durations, among them
``load_duration``, the load this request waited for (:attr:`~app.core.models.lease.Lease.load_wait`).

No prompt (``/api/generate``) or no messages (``/api/chat``) loads the model and answers one
object with ``done_reason`` ``load``, streamed or not; with ``keep_alive`` 0 it unloads the
model instead (``unload``), as Ollama's clients (``ollama run``, ``ollama stop``) expect.

Errors are Ollama's ``{"error": "..."}`` with their status: 400 for what cannot be carried,
404 ``model 'NAME' not found``, 503 (with ``Retry-After``) when the model cannot load, the
model's server's own status for its refusals (a 501, "not supported", as 400), 502 when its
server fails; an error after a stream has begun is its last line.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from app.api.bodies import MAX_V1_BODY, parse_object, read_body, request_name
from app.api.error_mapping import remote_answer
from app.api.errors import ApiError, unavailable_response
from app.api.jsonio import dumps, json_response, loads
from app.api.ollama.common import model_not_found, ollama_error, resolve
from app.api.ollama.translate import (
    Answer,
    Piece,
    TranslationError,
    Upstream,
    chat_request,
    created_at,
    error_message,
    generate_request,
    read_piece,
    sse_event,
)
from app.api.openai_proxy import OpenAIProxy
from app.core.config.durations import NOT_GIVEN, DurationError, KeepAlive
from app.core.config.go_duration import ollama_keep_alive
from app.core.errors import UnknownModel
from app.core.manager import ModelManager
from app.core.models.backend import BackendProcess
from app.core.models.model import Lease, ModelUnavailable
from app.core.remotes import HOP_HEADER, AmbiguousModel, RemoteLease, RemoteUnsupported

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"
MAX_ERROR_BODY = 64 * 1024  # the most of an upstream error answer read (its message is in the first bytes)
MAX_ANSWER = 64 * 1024 * 1024  # the most of an upstream answer that is not streamed
MAX_LINE = 16 * 1024 * 1024  # the longest line of an upstream event stream
_PROPS_TIMEOUT = aiohttp.ClientTimeout(total=5)


class Refused(Exception):
    """A request answered before it goes anywhere: :attr:`response` (Ollama's shape)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


class UpstreamUnreadable(Exception):
    """An upstream answer that cannot be read: past :data:`MAX_ANSWER` (a line of a stream past
    :data:`MAX_LINE`), or not JSON."""


@dataclass
class OllamaRequest:
    """One request to an Ollama route, read and its model resolved."""

    data: dict[str, Any]
    requested: str  # the model's name as the client sent it (the answers name it so)
    name: str  # the name Siesta knows the model by
    keep_alive: KeepAlive
    local: bool  # a local recipe's model (else a remote's)
    started: float  # time.monotonic() when it arrived

    def elapsed(self) -> float:
        return time.monotonic() - self.started


async def read_request(manager: ModelManager, request: web.Request) -> OllamaRequest:
    """The request's body, model and ``keep_alive``; :class:`Refused` with Ollama's answer
    for a body that cannot be read, a missing or unknown model, a bad ``keep_alive``."""
    started = time.monotonic()
    what = request_name(request)
    hop = HOP_HEADER in request.headers
    try:
        data = parse_object(await read_body(request, MAX_V1_BODY), what)
        requested = data.get("model")
        if not isinstance(requested, str) or not requested:
            raise Refused(ollama_error(400, "model is required"))
        name = resolve(manager, requested, hop=hop, what=what)
    except ApiError as exc:
        raise Refused(ollama_error(exc.status, exc.message)) from None
    try:
        keep_alive = ollama_keep_alive(data.get("keep_alive"))
    except DurationError as exc:
        raise Refused(ollama_error(400, str(exc))) from None
    local = manager.is_local(name)
    if not local:
        if hop:
            raise Refused(model_not_found(requested))
        try:
            manager.find_remote(name)
        except UnknownModel:
            raise Refused(model_not_found(requested)) from None
        except AmbiguousModel as exc:
            raise Refused(ollama_error(409, str(exc))) from None
    return OllamaRequest(data, requested, name, keep_alive, local, started)


def ollama_shaped(response: web.StreamResponse) -> web.StreamResponse:
    """An error answer in OpenAI's shape (``/v1``'s: an unknown model, a load that failed, a
    remote) as Ollama's ``{"error": message}``, its status and ``Retry-After`` kept; any other
    answer as it is."""
    if not isinstance(response, web.Response) or response.status < 400 or not isinstance(response.body, bytes):
        return response
    try:
        message = error_message(loads(response.body))
    except ValueError:
        return response
    if message is None:
        return response
    answer = ollama_error(response.status, message)
    if "Retry-After" in response.headers:
        answer.headers["Retry-After"] = response.headers["Retry-After"]
    return answer


async def read_limited(upstream: aiohttp.ClientResponse, limit: int, *, cut: bool = False) -> bytes:
    """The upstream answer's body; UpstreamUnreadable past ``limit`` bytes (``cut``: its first
    ``limit`` bytes instead, for an error answer, whose message comes first)."""
    parts: list[bytes] = []
    size = 0
    async for part in upstream.content.iter_any():
        size += len(part)
        if size > limit:
            if cut:
                parts.append(part[: len(part) - (size - limit)])
                break
            raise UpstreamUnreadable(f"its answer is larger than {limit} bytes")
        parts.append(part)
    return b"".join(parts)


def upstream_error(status: int, raw: bytes, hint: str = "") -> web.Response:
    """The model's server's error answer as Ollama's: its message, its status (a 501, a
    feature the server does not offer, as Ollama's 400), and ``hint`` after the message."""
    try:
        message = error_message(loads(raw))
    except (ValueError, UnicodeDecodeError):
        message = None
    if message is None:
        message = raw.decode("utf-8", errors="replace").strip()[:2000] or f"the model's server answered {status}"
    return ollama_error(400 if status == 501 else status, message.strip() + hint)


def upstream_failed(requested: str, exc: Exception) -> str:
    return f"model '{requested[:200]}': its server failed during the request ({type(exc).__name__}: {exc})"


async def pieces(upstream: aiohttp.ClientResponse, kind: str) -> AsyncIterator[Piece]:
    """What the upstream answer says, piece by piece: each event of an event stream, or the
    whole of a JSON answer as one piece."""
    if upstream.content_type != "text/event-stream":
        raw = await read_limited(upstream, MAX_ANSWER)
        try:
            payload = loads(raw)
        except ValueError:
            raise UpstreamUnreadable(f"it answered something that is not JSON: {raw[:200]!r}") from None
        yield read_piece(kind, payload, whole=True)
        return
    buffer = b""
    async for part in upstream.content.iter_any():
        buffer += part
        if b"\n" not in part:
            if len(buffer) > MAX_LINE:
                raise UpstreamUnreadable(f"a line of its event stream is longer than {MAX_LINE} bytes")
            continue
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            event = sse_event(line)
            if event is not None:
                yield read_piece(kind, event)
    event = sse_event(buffer)
    if event is not None:
        yield read_piece(kind, event)


def _line(payload: dict[str, Any]) -> bytes:
    return (dumps(payload) + "\n").encode()


async def load_model(manager: ModelManager, req: OllamaRequest, *, unload: bool = False) -> web.Response | None:
    """Loads the request's model as a request would, taking and ending a lease (so its
    ``keep_alive`` sets the timeout), or, with ``unload``, unloads it as a manual unload does
    (requests in flight get ``stop_timeout`` to end), and waits until that is done; None
    then, else the error answer (Ollama's shape)."""
    try:
        if unload:
            await manager.unload(req.name)
        elif req.local:
            (await manager.get(req.name).acquire(req.keep_alive)).release()
        else:
            remote, model = manager.find_remote(req.name)
            lease = remote.acquire(model, req.keep_alive)
            try:
                await remote.load(model)
            except RemoteUnsupported:
                pass  # a kind that has no loads (an OpenAI-compatible server) loads on demand
            finally:
                lease.release()
    except ModelUnavailable as exc:
        return ollama_shaped(unavailable_response(exc))  # type: ignore[return-value]
    except UnknownModel:
        return model_not_found(req.requested)
    except Exception as exc:
        answer = remote_answer(exc)
        if answer is None:
            raise
        return ollama_shaped(answer)  # type: ignore[return-value]
    return None


class _Reply:
    """Answers one translated request from its upstream answer, as Ollama's objects (an
    :data:`~app.api.openai_proxy.Relay`)."""

    def __init__(self, owner: OllamaGenerate, req: OllamaRequest, route: str, upstream: Upstream,
                 stream: bool) -> None:
        self.owner = owner
        self.req = req
        self.route = route
        self.upstream = upstream
        self.stream = stream

    async def __call__(self, request: web.Request, opening: Any, name: str,
                       lease: Lease | RemoteLease) -> web.StreamResponse:
        local = lease if isinstance(lease, Lease) else None
        load = local.load_wait if local is not None else 0.0
        if local is not None and self.upstream.num_ctx is not None:
            await self.owner.check_context(name, local, self.upstream.num_ctx)
        answer = Answer(self.route, self.req.requested)
        response: web.StreamResponse | None = None
        try:
            async with opening as upstream:
                if upstream.status >= 400:
                    return upstream_error(upstream.status, await read_limited(upstream, MAX_ERROR_BODY, cut=True))
                if not self.stream:
                    async with aclosing(pieces(upstream, self.upstream.kind)) as said:
                        async for piece in said:
                            if piece.error is not None:
                                return ollama_error(500, piece.error)
                            answer.add(piece)
                    return json_response(answer.final(whole=True, total=self.req.elapsed(), load=load))
                response = web.StreamResponse(headers={"Content-Type": NDJSON})
                response.enable_chunked_encoding()
                await response.prepare(request)
                async with aclosing(pieces(upstream, self.upstream.kind)) as said:
                    async for piece in said:
                        if piece.error is not None:  # the server's own error event: the stream's last line
                            await response.write(_line({"error": piece.error}))
                            await response.write_eof()
                            return response
                        shown = answer.add(piece)
                        if shown is not None:
                            await response.write(_line(shown))
                calls = answer.calls_object()
                if calls is not None:
                    await response.write(_line(calls))
                await response.write(_line(answer.final(whole=False, total=self.req.elapsed(), load=load)))
                await response.write_eof()
                return response
        except (aiohttp.ClientError, asyncio.TimeoutError, UpstreamUnreadable) as exc:
            if local is not None and not isinstance(exc, UpstreamUnreadable):  # a broken connection
                local.mark_upstream_failed()
            message = upstream_failed(self.req.requested, exc)
            if response is None or not response.prepared:
                return ollama_error(502, message)
            try:  # the stream has begun: its last line says what happened
                await response.write(_line({"error": message}))
                await response.write_eof()
            except (ConnectionResetError, RuntimeError):
                if request.transport is not None:
                    request.transport.close()
            return response
        except ConnectionResetError:
            return response or web.Response(status=499)  # the client went away


class OllamaGenerate:
    """Handlers for ``/api/chat`` and ``/api/generate``; one per app, bound to the manager."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager
        self.proxy = OpenAIProxy(manager)
        # each server process's context (llama-server's /props), and the num_ctx already warned about
        self._contexts: weakref.WeakKeyDictionary[BackendProcess, tuple[int, set[int]]] = weakref.WeakKeyDictionary()

    def routes(self) -> list[web.AbstractRouteDef]:
        return [web.post("/api/chat", self.chat), web.post("/api/generate", self.generate)]

    async def chat(self, request: web.Request) -> web.StreamResponse:
        try:
            req = await read_request(self.manager, request)
            messages = req.data.get("messages")
            if messages is None or messages == []:
                return await self.load_or_unload(req, {"message": {"role": "assistant", "content": ""}})
            upstream = chat_request(req.data, req.name)
        except Refused as exc:
            return exc.response
        except TranslationError as exc:
            return ollama_error(400, str(exc))
        return await self._send(request, req, "chat", upstream)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        try:
            req = await read_request(self.manager, request)
            prompt = req.data.get("prompt")
            if prompt is None or prompt == "":
                return await self.load_or_unload(req, {"response": ""})
            upstream = generate_request(req.data, req.name)
        except Refused as exc:
            return exc.response
        except TranslationError as exc:
            return ollama_error(400, str(exc))
        if upstream.kind == "infill" and not req.local:
            return ollama_error(400, f"suffix goes to llama-server's /infill, which Siesta reaches for its local "
                                     f"models only; model '{req.requested[:200]}' is a remote's")
        return await self._send(request, req, "generate", upstream)

    async def _send(self, request: web.Request, req: OllamaRequest, route: str,
                    upstream: Upstream) -> web.StreamResponse:
        body = upstream.body
        stream = body["stream"] is True  # as the request asked (translate.wants_stream)
        if req.keep_alive is not NOT_GIVEN:  # for another Siesta; route() keeps it from llama-server
            body["keep_alive"] = -1 if req.keep_alive is None else req.keep_alive
        reply = _Reply(self, req, route, upstream, stream)
        return ollama_shaped(await self.proxy.route(request, req.name, upstream.path, body, req.keep_alive,
                                                    relay=reply))

    async def load_or_unload(self, req: OllamaRequest, empty: dict[str, Any]) -> web.Response:
        """A request with nothing to generate: loads the model, or unloads it when
        ``keep_alive`` is 0 (:func:`load_model`); one object, ``done_reason`` ``load`` or
        ``unload``, once that is done."""
        unload = req.keep_alive == 0
        refused = await load_model(self.manager, req, unload=unload)
        if refused is not None:
            return refused
        return json_response({"model": req.requested, "created_at": created_at(), **empty, "done": True,
                              "done_reason": "unload" if unload else "load"})

    async def check_context(self, name: str, lease: Lease, num_ctx: int) -> None:
        """Logs one warning per server process and value when a request's ``num_ctx`` is not the
        context the model was loaded with (the request runs with the loaded one)."""
        known = self._contexts.get(lease.process)
        if known is None:
            loaded = await self._loaded_context(lease)
            if loaded is None:
                return
            known = self._contexts[lease.process] = (loaded, set())
        loaded, warned = known
        if num_ctx != loaded and num_ctx not in warned:
            warned.add(num_ctx)
            log.warning("model %s: a request asks for num_ctx %d, but the model was loaded with a context of %d "
                        "tokens, which the request gets; to change it, set --ctx-size in the args of its recipe",
                        name, num_ctx, loaded)

    async def _loaded_context(self, lease: Lease) -> int | None:
        try:
            async with self.manager.http.get(lease.base_url + "/props", timeout=_PROPS_TIMEOUT) as answer:
                props = await answer.json(loads=loads)
            loaded = props["default_generation_settings"]["n_ctx"]
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError, TypeError) as exc:
            log.debug("model server at %s: no context size from /props (%s)", lease.base_url, exc)
            return None
        return loaded if isinstance(loaded, int) and not isinstance(loaded, bool) else None

