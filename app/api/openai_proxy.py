"""The OpenAI-compatible front door: routes each ``POST /v1/*`` by its body's ``model``.

A request for a model that is not loaded loads it first (concurrent requests share one
load). The body's ``keep_alive`` (a duration) sets the model's timeout for the idle
period that follows and is removed before forwarding. Streaming answers are passed
through chunk by chunk as the backend sends them.

A name that is not a local recipe may be a remote's model (:mod:`app.core.remotes`):
``REMOTE/MODEL``, or a bare name exactly one remote has. The request goes to that remote
with the model part as its name, counted in flight like a local one; ``keep_alive``
goes along only to another Siesta. A remote that refuses the connection, or accepts
nothing within 2 s, or answers neither the request nor a liveness probe within 3 s, is
answered 502 ``remote_unreachable``; one that is alive may take as long as a load takes.
A request that comes from another Siesta (:data:`HOP_HEADER`) only reaches local models.

Upstream, a request goes by its path rebuilt from plain segments (:func:`~app.api.names.forward_path`:
``/v1/%2e%2e/slots`` is 400, never llama-server's ``/slots``), and its body as it came unless
``keep_alive`` or the model's name had to change.

A streaming request (``"stream": true``) that waits for its model's load gets progress
while it waits (:mod:`app.api.load_progress`).

Ollama's ``/api/chat``, ``/api/generate`` and ``/api/embed`` (:mod:`app.api.ollama`) send their
translated requests the same way, through :meth:`OpenAIProxy.route` with an answer of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from app.api.bodies import MAX_V1_BODY, parse_object, read_body, request_name
from app.api.error_mapping import remote_answer
from app.api.errors import ApiError, error_response, unavailable_response
from app.api.jsonio import dumps, json_response
from app.api.load_progress import CHAT_PATH, LoadProgress
from app.api.metrics.routes import MODEL_KEY, model_label
from app.api.names import check_model_name, forward_path
from app.core.config.durations import NOT_GIVEN, DurationError, KeepAlive, parse_duration
from app.core.errors import UnknownModel
from app.core.manager import ModelManager
from app.core.models.model import Lease, ManagedModel, ModelState, ModelUnavailable
from app.core.remotes import HOP_HEADER, AmbiguousModel, RemoteLease, RemoteUnreachable
from app.core.remotes.engine_api import CONNECT_TIMEOUT, PROBE_AFTER, connection_failure_reason

Relay = Callable[[web.Request, Any, str, "Lease | RemoteLease"], Awaitable[web.StreamResponse]]
"""What answers a routed request (:meth:`OpenAIProxy.route`): from the client's request, the
upstream request (sent or being sent: ``async with`` it for the answer), the model's name as
shown, and the request's lease (a local model's :class:`Lease`, or a :class:`RemoteLease`)."""

_FORWARD_REQUEST_HEADERS = ("Content-Type", "Accept", "Accept-Encoding", "User-Agent")
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}


def _remote_timeout(lease: RemoteLease) -> aiohttp.ClientTimeout:
    """A routed request's limits: the connection's, as for every call to a remote; none on
    the whole (an answer may stream for long); and no more than the remote's
    ``load_timeout`` without a byte (the longest a remote may be silent: while it loads)."""
    return aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, connect=CONNECT_TIMEOUT,
                                 sock_read=lease.remote.engine.load_timeout)


class OpenAIProxy:
    """Handlers for ``/v1``; one per app, bound to the manager."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get("/v1/models", self.list_models),
            web.get("/v1/models/{name}", self.get_model),
            web.post(r"/v1/{tail:[\s\S]+}", self.forward),  # a newline too: forward() answers 400
        ]

    async def list_models(self, request: web.Request) -> web.Response:
        """Local models, then ``REMOTE/MODEL`` entries (none for a call from another Siesta)."""
        created = int(self.manager.started_at)
        data = [
            {"id": m.name, "object": "model", "created": created, "owned_by": "siesta",
             "state": m.state.value}
            for m in self.manager.listed()
            if m.recipe is not None
        ]
        if HOP_HEADER not in request.headers:
            data += [{"id": s["name"], "object": "model", "created": created, "owned_by": s["remote"],
                      "state": s["state"]} for s in self.manager.remotes.snapshots()]
        return json_response({"object": "list", "data": data})

    async def get_model(self, request: web.Request) -> web.Response:
        try:
            snapshot = self.manager.snapshot_by_name(request.match_info["name"])
        except UnknownModel as exc:
            return error_response(404, "model_not_found", str(exc))
        except AmbiguousModel as exc:
            return remote_answer(exc)  # type: ignore[return-value]
        return json_response({"id": snapshot["name"], "object": "model", "created": int(self.manager.started_at),
                              "owned_by": snapshot.get("remote") or "siesta", "state": snapshot["state"]})

    async def forward(self, request: web.Request) -> web.StreamResponse:
        what = request_name(request)
        try:
            path = forward_path(request)  # before the body: a path that may not go upstream is refused at once
            body = await read_body(request, MAX_V1_BODY)
            data = parse_object(body, what)
            name = data.get("model")
            if not isinstance(name, str) or not name:
                raise ApiError(400, "missing_model", f'{what}: the body must name a model: {{"model": "..."}}')
            check_model_name(name, what)
        except ApiError as exc:
            return exc.response()
        name = self.manager.canonical_name(name, local_only=HOP_HEADER in request.headers)  # "tiny:latest" is tiny
        keep_alive: KeepAlive = NOT_GIVEN
        if "keep_alive" in data:
            try:
                keep_alive = parse_duration(data["keep_alive"])
            except DurationError as exc:
                return error_response(400, "invalid_keep_alive", f"field 'keep_alive': {exc}")
        return await self.route(request, name, path, data, keep_alive, body=body, progress=data.get("stream") is True)

    async def route(self, request: web.Request, name: str, path: str, data: dict[str, Any], keep_alive: KeepAlive,
                    *, body: bytes | None = None, relay: Relay | None = None,
                    progress: bool = False) -> web.StreamResponse:
        """Sends ``data`` (``body``: its bytes as they came, when it need not change) by ``path``
        to model ``name``: a remote's through its remote (not for a request from another
        Siesta), a local one's server under a lease taken with ``keep_alive``; ``relay``
        answers from the upstream answer (default: passed on as it comes). What fails before
        an upstream answer (unknown model, a load, a remote) is answered in OpenAI's shape.
        ``progress``: a stream of the default relay's, which shows a load it waits for."""
        progress = progress and relay is None
        relay = relay or self._pass_on
        request[MODEL_KEY] = model_label(self.manager, name, local_only=HOP_HEADER in request.headers)  # /metrics
        if not self.manager.is_local(name) and HOP_HEADER not in request.headers:
            try:
                remote, remote_model = self.manager.find_remote(name)
            except UnknownModel:
                pass
            except AmbiguousModel as exc:
                return remote_answer(exc)  # type: ignore[return-value]
            else:
                return await self._forward_remote(request, path, data, remote.acquire(remote_model, keep_alive), relay)
        if body is None or "keep_alive" in data:
            data.pop("keep_alive", None)  # llama-server does not know it
            body = dumps(data).encode()
        try:
            model = self.manager.get(name)
        except UnknownModel as exc:
            return error_response(404, "model_not_found", str(exc))
        if progress and model.state is not ModelState.READY:  # a ready model's request takes no detour
            return await self._route_loading(request, model, path, body, data, keep_alive)
        try:
            lease = await model.acquire(keep_alive)
        except ModelUnavailable as exc:
            return unavailable_response(exc)
        try:
            url = lease.base_url + path
            return await relay(request, self.manager.http.post(url, data=body, headers=self._headers(request, data)),
                               name, lease)
        finally:
            lease.release()

    async def _route_loading(self, request: web.Request, model: ManagedModel, path: str, body: bytes,
                             data: dict[str, Any], keep_alive: KeepAlive) -> web.StreamResponse:
        """:meth:`route`'s end for a stream whose model is not ready: the same, with progress."""
        recipe = model.recipe
        feedback = recipe.loading_feedback if recipe is not None and recipe.loading_feedback is not None \
            else self.manager.settings.loading_feedback
        chat = feedback and path.split("?", 1)[0] == CHAT_PATH
        progress = LoadProgress(request, model.name, self.manager.clock.now, chat=chat)
        try:
            lease = await progress.wait(model.acquire(keep_alive), orphan=Lease.release)
        except ModelUnavailable as exc:
            return await progress.fail(unavailable_response(exc))
        except ConnectionResetError:
            return progress.response or web.Response(status=499)  # the client went away
        try:
            opening = self.manager.http.post(lease.base_url + path, data=body, headers=self._headers(request, data))
            return await progress.relay(opening, model.name, lease.mark_upstream_failed)
        finally:
            lease.release()

    async def _pass_on(self, request: web.Request, opening: Any, name: str,
                       lease: Lease | RemoteLease) -> web.StreamResponse:
        return await self._relay(request, opening, name,
                                 on_failure=lease.mark_upstream_failed if isinstance(lease, Lease) else None)

    async def _forward_remote(self, request: web.Request, path: str, data: dict[str, Any],
                              lease: RemoteLease, relay: Relay) -> web.StreamResponse:
        try:
            data["model"] = lease.model  # the remote's own name for it
            if not lease.remote.engine.passes_keep_alive:
                data.pop("keep_alive", None)
            headers = {**self._headers(request, data), **lease.headers()}
            opening = self.manager.http.post(lease.url(path), data=dumps(data).encode(),
                                             headers=headers, timeout=_remote_timeout(lease))
            try:
                upstream = await self._open_remote(opening, lease)
            except RemoteUnreachable as exc:
                return remote_answer(exc)  # type: ignore[return-value]
            return await relay(request, upstream, lease.remote.qualified(lease.model), lease)
        finally:
            lease.release()

    async def _open_remote(self, opening: Any, lease: RemoteLease) -> Any:
        """Sends the request; an answer that has not begun after :data:`PROBE_AFTER` is
        given as long as it takes only if the remote still answers a probe (a load there is
        legitimate; a server that accepted and hangs is not). Refused: RemoteUnreachable."""
        remote = lease.remote
        task = asyncio.ensure_future(opening)
        try:
            done, _ = await asyncio.wait({task}, timeout=PROBE_AFTER)
            if not done and not await remote.engine.probe(timeout=1.0):
                raise RemoteUnreachable(remote.name, remote.config.url, "it accepted the request but answers nothing")
            return await task
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise RemoteUnreachable(remote.name, remote.config.url, connection_failure_reason(exc)) from None
        except aiohttp.ServerTimeoutError:  # alive, but nothing within its load_timeout
            raise RemoteUnreachable(remote.name, remote.config.url,
                                    "it answered nothing within its load_timeout") from None
        finally:
            if not task.done():
                task.cancel()

    @staticmethod
    def _headers(request: web.Request, data: dict[str, Any]) -> dict[str, str]:
        headers = {h: request.headers[h] for h in _FORWARD_REQUEST_HEADERS if h in request.headers}
        headers.setdefault("Content-Type", "application/json")
        if data.get("stream") is True:
            # llama-server answers a stream with Keep-Alive but then closes the connection;
            # reusing it from the pool gave the next request a 502 (2 in 800 under load).
            headers["Connection"] = "close"
        return headers

    async def _relay(self, request: web.Request, opening: Any, name: str, *,
                     on_failure: Any = None) -> web.StreamResponse:
        """Passes the upstream answer (``opening``: the request, sent or being sent) to the
        client, streaming it as it comes."""
        response: web.StreamResponse | None = None
        try:
            async with opening as upstream:
                out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
                streaming = upstream.content_type == "text/event-stream" or upstream.content_length is None
                if not streaming:
                    payload = await upstream.read()
                    return web.Response(body=payload, status=upstream.status, headers=out_headers)
                response = web.StreamResponse(status=upstream.status, headers=out_headers)
                response.enable_chunked_encoding()
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            if on_failure is not None:
                on_failure()
            if response is not None and response.prepared:
                # Headers already went out: end the stream abruptly so the client sees the failure.
                if request.transport is not None:
                    request.transport.close()
                return response
            return error_response(502, "backend_error",
                                  f"model {name!r}: its server failed during the request ({type(exc).__name__}: {exc})")
        except ConnectionResetError:
            return response or web.Response(status=499)  # the client went away
