"""Request bodies, read the one way for ``/v1`` and ``/api/v1``: within a size limit, at
the minimum rate :mod:`app.api.slow_clients` enforces, and parsed as one strict JSON object.

Each refusal is an :class:`~app.api.errors.ApiError` naming the request: 413
``body_too_large``, 408 ``body_too_slow``, 400 ``empty_body``, ``body_too_deep``,
``invalid_json`` or ``invalid_body``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from app.api.errors import ApiError
from app.api.jsonio import MAX_DEPTH, loads, too_deep
from app.api.slow_clients import BodyTooSlow

MAX_V1_BODY = 32 * 1024 * 1024
"""The largest ``/v1`` body: images in chat requests are large; anything past this is hostile."""


def request_name(request: web.Request) -> str:
    """How error messages name a request: ``POST /v1/chat/completions``."""
    return f"{request.method} {request.path}"


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refused as soon as it passes ``limit`` bytes (a chunked body
    declares no length) or arrives too slowly."""
    what = request_name(request)
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "body_too_large", f"{what}: body larger than {limit} bytes")
    parts: list[bytes] = []
    size = 0
    try:
        while part := await request.content.readany():
            parts.append(part)
            size += len(part)
            if size > limit:
                raise ApiError(413, "body_too_large", f"{what}: body larger than {limit} bytes")
    except BodyTooSlow as exc:
        raise ApiError(408, "body_too_slow", f"{what}: {exc}") from None
    return b"".join(parts)


def parse_object(raw: bytes, what: str) -> dict[str, Any]:
    """``raw`` as a JSON object; ApiError 400 when it is empty, nested past
    :data:`~app.api.jsonio.MAX_DEPTH`, not strict JSON, or not an object."""
    if not raw or raw.isspace():
        raise ApiError(400, "empty_body", f"{what}: expected a JSON object body")
    if too_deep(raw):
        raise ApiError(400, "body_too_deep",
                       f"{what}: body too deeply nested (more than {MAX_DEPTH} levels of arrays and objects)")
    try:
        data = loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"{what}: body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", f"{what}: body must be a JSON object")
    return data
