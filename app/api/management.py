"""Siesta's own API under ``/api/v1``: list, load, unload, set timeouts and settings, events.

The API can change timeouts and a few settings; it can never create a recipe or run a
command. Bodies are small JSON objects; anything else is refused with a message that
names the request and the field. Handlers raise (:class:`ApiError`, or the core's own
errors); the error middleware in :mod:`app.api.error_mapping` gives each its answer.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from app import __version__
from app.api.errors import ApiError
from app.core.config.durations import USE_GLOBAL, DurationError, ModelTimeout, parse_duration
from app.core.config.settings import RUNTIME_SETTABLE, validate_setting
from app.core.manager import ModelManager
from app.core.models.model import ModelState
from app.core.remotes import HOP_HEADER

MAX_BODY = 64 * 1024


async def _json_body(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    what = f"{request.method} {request.path}"
    too_large = ApiError(413, "body_too_large", f"{what}: body larger than {MAX_BODY} bytes")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise too_large
    # content.read(n) returns what has arrived so far: read until the end of the body
    # (chunked bodies declare no length), and stop as soon as it is too large.
    parts: list[bytes] = []
    size = 0
    while part := await request.content.read(MAX_BODY + 1 - size):
        parts.append(part)
        size += len(part)
        if size > MAX_BODY:
            raise too_large
    raw = b"".join(parts)
    if not raw.strip():
        if required:
            raise ApiError(400, "empty_body", f"{what}: expected a JSON object body")
        return {}
    if request.content_type not in ("application/json", "application/octet-stream", ""):
        raise ApiError(415, "unsupported_content_type",
                       f"{what}: expected Content-Type application/json, got {request.content_type}")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"{what}: body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", f"{what}: body must be a JSON object")
    return data


class ManagementApi:
    """Handlers for ``/api/v1``."""

    def __init__(self, manager: ModelManager, *, shutdown: asyncio.Event | None = None) -> None:
        self.manager = manager
        self.shutdown = shutdown

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get("/api/v1/health", self.health),
            web.get("/api/v1/models", self.list_models),
            # a remote model's name has a "/" (gpubox/qwen; ollama/hf.co/org/m:Q4)
            web.get("/api/v1/models/{name:.+}", self.get_model),
            web.patch("/api/v1/models/{name:.+}", self.patch_model),
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
        return web.json_response(await self.manager.system_memory())

    async def health(self, request: web.Request) -> web.Response:
        server = self.manager.llama_server_path()
        return web.json_response({
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
        out: dict[str, Any] = {"models": self.manager.snapshots(local_only=local_only)}
        if not local_only:
            out["remotes"] = self.manager.remotes.describe()
        return web.json_response(out)

    async def list_remotes(self, request: web.Request) -> web.Response:
        return web.json_response({"remotes": self.manager.remotes.describe()})

    async def get_model(self, request: web.Request) -> web.Response:
        return web.json_response(self.manager.snapshot_by_name(request.match_info["name"]))

    async def load(self, request: web.Request) -> web.Response:
        data = await _json_body(request)
        model = await self.manager.load(_model_field(request, data))
        return web.json_response(self.manager.describe(model))

    async def unload(self, request: web.Request) -> web.Response:
        data = await _json_body(request)
        if data.get("all") is True:
            names = await self.manager.unload_all()
            return web.json_response({"unloaded": names})
        model = await self.manager.unload(_model_field(request, data, hint='or {"all": true}'))
        return web.json_response(self.manager.describe(model))

    async def patch_model(self, request: web.Request) -> web.Response:
        data = await _json_body(request)
        if set(data) != {"unload_timeout"}:
            raise ApiError(400, "invalid_body",
                           f'{request.method} {request.path}: expected {{"unload_timeout": "10m" | "never" | "default"}}')
        raw = data["unload_timeout"]
        value: ModelTimeout = USE_GLOBAL if raw == USE_GLOBAL.value else _duration(request, "unload_timeout", raw)
        model = await self.manager.set_model_timeout(request.match_info["name"], value)
        return web.json_response(self.manager.describe(model))

    async def get_settings(self, request: web.Request) -> web.Response:
        return web.json_response(self.manager.loaded_settings.describe())

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
        return web.json_response(self.manager.loaded_settings.describe())

    async def events(self, request: web.Request) -> web.StreamResponse:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        local_only = _local_only(request)

        def on_event(event: dict[str, Any]) -> None:
            if local_only and event["model"].get("remote"):
                return
            if queue.full():  # a reader that stopped reading: drop the oldest, keep the latest
                queue.get_nowait()
            queue.put_nowait(event)

        unsubscribe = self.manager.subscribe(on_event)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        try:
            await response.prepare(request)
            for snapshot in self.manager.snapshots(local_only=local_only):
                await response.write(_sse({"reason": "snapshot", "model": snapshot, "time": self.manager.clock.now()}))
            while True:
                try:
                    async with asyncio.timeout(15):
                        event = await queue.get()
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                await response.write(_sse(event))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            unsubscribe()
        return response


def _local_only(request: web.Request) -> bool:
    """``?scope=local``, or a call from another Siesta (it lists only this one's own models)."""
    return request.query.get("scope") == "local" or HOP_HEADER in request.headers


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: model\ndata: {json.dumps(event)}\n\n".encode()


def _model_field(request: web.Request, data: dict[str, Any], hint: str = "") -> str:
    name = data.get("model")
    if not isinstance(name, str) or not name:
        extra = f" {hint}" if hint else ""
        raise ApiError(400, "missing_model", f'{request.method} {request.path}: expected {{"model": "NAME"}}{extra}')
    return name


def _duration(request: web.Request, field: str, raw: Any) -> Any:
    try:
        return parse_duration(raw)
    except DurationError as exc:
        raise ApiError(400, "invalid_duration", f"{request.method} {request.path}: field {field!r}: {exc}") from None
