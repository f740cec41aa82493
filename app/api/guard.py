"""Checks run before any body is read: Host (DNS rebinding), Origin (cross-site calls), API key.

A web page in the user's browser can reach a localhost service; these checks make sure it
cannot drive Siesta. Only loopback names, the configured ``host`` and ``allowed_hosts``
are accepted as the Host a request was sent to and as the host of its Origin.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from app.core.manager import ModelManager

from .errors import error_response

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "localhost.localdomain", "ip6-localhost"}


def _strip_port(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def allowed_host_names(manager: ModelManager) -> set[str]:
    settings = manager.settings
    names = set(LOOPBACK_NAMES)
    names.add(_strip_port(settings.host))
    names.update(_strip_port(h) for h in settings.allowed_hosts)
    return names


def make_guard(manager: ModelManager) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        allowed = allowed_host_names(manager)
        host = _strip_port(request.headers.get("Host", ""))
        if host not in allowed and not host.startswith("127."):
            return error_response(403, "forbidden_host",
                                  f"Host {host!r} is not accepted; add it to allowed_hosts to allow it")
        origin = request.headers.get("Origin")
        if origin is not None and origin != "null":
            origin_host = (urlsplit(origin).hostname or "").lower()
            if origin_host not in allowed and not origin_host.startswith("127."):
                return error_response(403, "forbidden_origin",
                                      f"cross-site request from Origin {origin!r} refused")
        elif origin == "null":
            return error_response(403, "forbidden_origin", "cross-site request from an opaque Origin refused")
        key = manager.settings.api_key
        if key:
            supplied = request.headers.get("Authorization", "")
            expected = f"Bearer {key}"
            if not hmac.compare_digest(supplied.encode(), expected.encode()):
                return error_response(401, "invalid_api_key",
                                      "missing or wrong API key: send Authorization: Bearer <SIESTA_API_KEY>")
        return await handler(request)

    return guard
