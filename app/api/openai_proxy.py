"""The OpenAI-compatible front door: routes each ``POST /v1/*`` by its body's ``model``.

A request for a model that is not loaded loads it first (concurrent requests share one
load). The body's ``keep_alive`` (a duration) sets the model's timeout for the idle
period that follows and is removed before forwarding. Streaming answers are passed
through chunk by chunk as the backend sends them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import web

from app.core.durations import NOT_GIVEN, DurationError, KeepAlive, parse_duration
from app.core.manager import ModelManager, UnknownModel
from app.core.model import Lease, ModelUnavailable

from .errors import error_response, unavailable_response

_FORWARD_REQUEST_HEADERS = ("Content-Type", "Accept", "Accept-Encoding", "User-Agent")
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}


class OpenAIProxy:
    """Handlers for ``/v1``; one per app, bound to the manager."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get("/v1/models", self.list_models),
            web.get("/v1/models/{name}", self.get_model),
            web.post("/v1/{tail:.+}", self.forward),
        ]

    async def list_models(self, request: web.Request) -> web.Response:
        created = int(self.manager.started_at)
        data = [
            {"id": m.name, "object": "model", "created": created, "owned_by": "siesta",
             "state": m.state.value}
            for m in self.manager.listed()
            if m.recipe is not None
        ]
        return web.json_response({"object": "list", "data": data})

    async def get_model(self, request: web.Request) -> web.Response:
        try:
            model = self.manager.get(request.match_info["name"])
        except UnknownModel as exc:
            return error_response(404, "model_not_found", str(exc))
        return web.json_response({"id": model.name, "object": "model", "created": int(self.manager.started_at),
                                  "owned_by": "siesta", "state": model.state.value})

    async def forward(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            return error_response(413, "body_too_large", f"request body too large: {exc.text}")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return error_response(400, "invalid_json", f"request body of {request.path} is not valid JSON: {exc}")
        if not isinstance(data, dict):
            return error_response(400, "invalid_body", f"request body of {request.path} must be a JSON object")
        name = data.get("model")
        if not isinstance(name, str) or not name:
            return error_response(400, "missing_model",
                                  f"request body of {request.path} must name a model: {{\"model\": \"...\"}}")
        keep_alive: KeepAlive = NOT_GIVEN
        if "keep_alive" in data:
            try:
                keep_alive = parse_duration(data.pop("keep_alive"))
            except DurationError as exc:
                return error_response(400, "invalid_keep_alive", f"field 'keep_alive': {exc}")
            body = json.dumps(data).encode()
        try:
            model = self.manager.get(name)
        except UnknownModel as exc:
            return error_response(404, "model_not_found", str(exc))
        try:
            lease = await model.acquire(keep_alive)
        except ModelUnavailable as exc:
            return unavailable_response(exc)
        try:
            return await self._relay(request, lease, body, name, data.get("stream") is True)
        finally:
            lease.release()

    async def _relay(self, request: web.Request, lease: Lease, body: bytes, name: str,
                     streaming_request: bool) -> web.StreamResponse:
        headers = {h: request.headers[h] for h in _FORWARD_REQUEST_HEADERS if h in request.headers}
        headers.setdefault("Content-Type", "application/json")
        if streaming_request:
            # llama-server answers a stream with Keep-Alive but then closes the connection;
            # reusing it from the pool gave the next request a 502 (2 in 800 under load).
            headers["Connection"] = "close"
        url = lease.base_url + request.raw_path
        response: web.StreamResponse | None = None
        try:
            async with self.manager.http.post(url, data=body, headers=headers) as upstream:
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
            lease.mark_upstream_failed()
            if response is not None and response.prepared:
                # Headers already went out: end the stream abruptly so the client sees the failure.
                if request.transport is not None:
                    request.transport.close()
                return response
            return error_response(502, "backend_error",
                                  f"model {name!r}: its server failed during the request ({type(exc).__name__}: {exc})")
        except ConnectionResetError:
            return response or web.Response(status=499)  # the client went away
