"""Siesta's own API under ``/api/v1``: list, load, unload, set timeouts and settings, events.

The API can change timeouts and a few settings; it can never create a recipe or run a
command. Bodies are small JSON objects; anything else is refused with a message that
names the request and the field. Handlers raise (:class:`ApiError`, or the core's own
errors); the error middleware in :mod:`app.api.error_mapping` gives each its answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from app import __version__
from app.api.bodies import parse_object, read_body, request_name
from app.api.errors import ApiError
from app.api.events import KEEPALIVE, EventHub, StreamClosed, TooManyStreams, sse
from app.api.jsonio import json_response
from app.api.names import check_model_name
from app.core.config.durations import DurationError, ModelTimeout, parse_duration, parse_model_timeout
from app.core.config.settings import RUNTIME_SETTABLE, validate_setting
from app.core.manager import ModelManager
from app.core.models.model import ModelState
from app.core.remotes import HOP_HEADER

MAX_BODY = 64 * 1024


async def _json_body(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    """The request's body as a JSON object (:mod:`app.api.bodies`), at most :data:`MAX_BODY`
    bytes; ``{}`` for an empty body when not ``required``."""
    raw = await read_body(request, MAX_BODY)
    empty = not raw or raw.isspace()
    if empty and not required:
        return {}
    if not empty and request.content_type not in ("application/json", "application/octet-stream", ""):
        raise ApiError(415, "unsupported_content_type",
                       f"{request_name(request)}: expected Content-Type application/json, got {request.content_type}")
    return parse_object(raw, request_name(request))


class ManagementApi:
    """Handlers for ``/api/v1``."""

    def __init__(self, manager: ModelManager, *, shutdown: asyncio.Event | None = None) -> None:
        self.manager = manager
        self.shutdown = shutdown
        self.event_hub = EventHub(manager)

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get("/api/v1/health", self.health),
            web.get("/api/v1/models", self.list_models),
            # a remote model's name has a "/" (gpubox/qwen; ollama/hf.co/org/m:Q4)
            # [\s\S]: a name with a newline reaches the handler (and its 400), not the router's 404
            web.get(r"/api/v1/models/{name:[\s\S]+}", self.get_model),
            web.patch(r"/api/v1/models/{name:[\s\S]+}", self.patch_model),
            web.get("/api/v1/remotes", self.list_remotes),
            web.post("/api/v1/load", self.load),
            web.post("/api/v1/unload", self.unload),
            web.get("/api/v1/settings", self.get_settings),
            web.patch("/api/v1/settings", self.patch_settings),
            web.get("/api/v1/events", self.events),
            web.get("/api/v1/system", self.system),
        ]

    async def system(self, request: web.Request) -> web.Response:
        """RAM and each GPU: total, used, free, and the bytes Siesta's models use there."""
        return json_response(await self.manager.system_memory())

    async def health(self, request: web.Request) -> web.Response:
        server = self.manager.llama_server_path()
        return json_response({
            "status": "ok",
            "version": __version__,
            "config_dir": str(self.manager.paths.config_dir),
            "log_dir": str(self.manager.paths.log_dir),
            "llama_server": str(server) if server else None,
            "settings": self.manager.loaded_settings.describe(),
            "remotes": self.manager.remotes.describe(),  # never a key: "(set)" at most
            "models": [self.manager.snapshot_of(m) for m in self.manager.listed() if m.state is not ModelState.UNLOADED],
        })

    async def list_models(self, request: web.Request) -> web.Response:
        """Local models, then remote ones (``remote`` names their remote). Another Siesta
        that uses this one as a remote gets only the local ones (no loops)."""
        local_only = _local_only(request)
        out: dict[str, Any] = {"models": self.manager.snapshots(local_only=local_only),
                               "given_back": self.manager.metrics.given_back_summary()}
        if not local_only:
            out["remotes"] = self.manager.remotes.describe()
        return json_response(out)

    async def list_remotes(self, request: web.Request) -> web.Response:
        return json_response({"remotes": self.manager.remotes.describe()})

    async def get_model(self, request: web.Request) -> web.Response:
        return json_response(self.manager.snapshot_by_name(request.match_info["name"]))

    async def load(self, request: web.Request) -> web.Response:
        data = await _json_body(request)
        model = await self.manager.load(_model_field(request, data))
        return json_response(self.manager.describe(model))

    async def unload(self, request: web.Request) -> web.Response:
        data = await _json_body(request)
        if data.get("all") is True:
            names = await self.manager.unload_all()
            return json_response({"unloaded": names})
        model = await self.manager.unload(_model_field(request, data, hint='or {"all": true}'))
        return json_response(self.manager.describe(model))

    async def patch_model(self, request: web.Request) -> web.Response:
        data = await _json_body(request)
        if set(data) != {"unload_timeout"}:
            raise ApiError(400, "invalid_body",
                           f'{request.method} {request.path}: expected {{"unload_timeout": "10m" | "never" | "default"}}')
        value: ModelTimeout = _duration(request, "unload_timeout", data["unload_timeout"], parse_model_timeout)
        model = await self.manager.set_model_timeout(request.match_info["name"], value)
        return json_response(self.manager.describe(model))

    async def get_settings(self, request: web.Request) -> web.Response:
        return json_response(self.manager.loaded_settings.describe())

    async def patch_settings(self, request: web.Request) -> web.Response:
        data = await _json_body(request)
        if not data:
            raise ApiError(400, "invalid_body", "PATCH /api/v1/settings: no setting given")
        for field in data:
            if field not in RUNTIME_SETTABLE:
                raise ApiError(400, "invalid_setting",
                               f"PATCH /api/v1/settings: {field!r} cannot be changed at run time "
                               f"(changeable: {', '.join(RUNTIME_SETTABLE)}); edit settings.toml and restart")
        # Every value is checked before any is written, so a bad one changes nothing. A value
        # is what settings.toml would hold: memory_budget takes "80%", "20GB", "off" or an
        # object per device ({"ram": "16GB", "gpu0": "90%"}).
        for field, raw in data.items():
            try:
                validate_setting(field, raw)
            except ValueError as exc:  # a value the setting cannot take (too generic to map globally)
                raise ApiError(400, "invalid_setting", f"PATCH /api/v1/settings: {exc}") from None
        for field, raw in data.items():
            try:
                await self.manager.set_setting(field, raw)
            except ValueError as exc:
                raise ApiError(400, "invalid_setting", f"PATCH /api/v1/settings: {exc}") from None
        return json_response(self.manager.loaded_settings.describe())

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Every model's snapshot, then each event as it happens (:mod:`app.api.events`),
        with a comment line every 15 s so that idle proxies keep the stream open."""
        local_only = _local_only(request)
        transport = request.transport

        def abort() -> None:
            if transport is not None:
                transport.abort()

        try:
            stream = self.event_hub.open(local_only, abort)
        except TooManyStreams as exc:
            raise ApiError(503, "too_many_streams", f"{request_name(request)}: {exc}; close one and try again") from None
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        try:
            await response.prepare(request)
            for snapshot in self.manager.snapshots(local_only=local_only):
                await stream.send(response, sse({"reason": "snapshot", "model": snapshot,
                                                 "time": self.manager.clock.now()}))
            while True:
                data = await stream.next(15)
                await stream.send(response, KEEPALIVE if data is None else data)
        except (ConnectionResetError, StreamClosed, asyncio.CancelledError):
            pass
        finally:
            self.event_hub.close(stream)
        return response


def _local_only(request: web.Request) -> bool:
    """``?scope=local``, or a call from another Siesta (it lists only this one's own models)."""
    return request.query.get("scope") == "local" or HOP_HEADER in request.headers


def _model_field(request: web.Request, data: dict[str, Any], hint: str = "") -> str:
    name = data.get("model")
    if not isinstance(name, str) or not name:
        extra = f" {hint}" if hint else ""
        raise ApiError(400, "missing_model", f'{request.method} {request.path}: expected {{"model": "NAME"}}{extra}')
    return check_model_name(name, request_name(request))


def _duration(request: web.Request, field: str, raw: Any,
              parse: Callable[[object], Any] = parse_duration) -> Any:
    """A body's duration field, read by ``parse``; a 400 naming the request and the field when
    it cannot be read (the parser refuses NaN, infinities, huge integers and under 1 ms)."""
    try:
        return parse(raw)
    except DurationError as exc:
        raise ApiError(400, "invalid_duration", f"{request.method} {request.path}: field {field!r}: {exc}") from None
