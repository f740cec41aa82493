"""Checks run before any body is read: Host (DNS rebinding), Origin (cross-site calls),
the type of a browser's body, API key.

A web page in the user's browser can reach a localhost service; these checks make sure it
cannot drive Siesta. Only loopback addresses (values that parse as IP addresses in
127.0.0.0/8 or ::1, never a name that merely starts with "127."), ``localhost``, the
configured ``host`` and ``allowed_hosts`` are accepted as the Host a request was sent to.

An Origin is trusted only when it is Siesta's own (``http://`` one of those hosts, on a
port Siesta listens on) or matches an ``allowed_origins`` pattern; any other page, a dev
server on another localhost port included, is refused 403, and the manager is told
(:meth:`~app.core.manager.ModelManager.origin_refused`: the tray offers to allow it).

A page can send a "simple" request, which the browser does not ask about first, only with
a CORS-safelisted body type (``text/plain``, ``application/x-www-form-urlencoded``,
``multipart/form-data``) or none. A body of those types, or without a type, is accepted
only from a client that sends no Origin (curl and scripts); a browser's must say
``application/json`` (415 otherwise), which a page elsewhere cannot send without asking.

A trusted page is answered as CORS asks, or its browser would not let it read a thing:
the preflight (``OPTIONS`` with ``Access-Control-Request-Method``) gets 204 here, and
every answer to it ``Access-Control-Allow-Origin`` (:func:`add_cors_headers`). No other
page ever gets those headers.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

from aiohttp import web

from app.api.errors import error_response
from app.api.jsonio import json_response
from app.core.config.settings import ORIGIN_PATTERN
from app.core.manager import ModelManager

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
SAFELISTED_TYPES = {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_NO_BODY_METHODS = {"GET", "HEAD", "OPTIONS"}
# The request's key for the Origin the guard trusted (aiohttp before 3.12 has no RequestKey).
_TRUSTED_ORIGIN: Any = (web.RequestKey("siesta_trusted_origin", str) if hasattr(web, "RequestKey")
                        else "siesta.trusted_origin")


def _strip_port(host: str) -> str:
    """The host part of a ``Host`` value or an ``allowed_hosts`` entry, lower-cased: the
    port is dropped and an IPv6 address loses its brackets. Brackets around anything but
    an IPv6 address, or anything after ``]`` other than a port, leave the value unusable
    (it then matches no name and parses as no address)."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end == -1:
            return host
        rest = host[end + 1:]
        inner = host[1:end]
        if ":" not in inner or rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return host
        return inner
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def _is_loopback_address(host: str) -> bool:
    """True only for a value that parses as an IP address in 127.0.0.0/8 or ::1 (an
    IPv4-mapped ::ffff:127.x counts). A name that merely starts with "127." does not."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def host_is_allowed(value: str, allowed: set[str]) -> bool:
    """Whether a ``Host`` value (with or without port) or an Origin's host names Siesta:
    a loopback address, or one of the ``allowed`` names (already stripped, lower-case)."""
    host = _strip_port(value)
    if not host:
        return False
    return host in allowed or _is_loopback_address(host)


def allowed_host_names(manager: ModelManager) -> set[str]:
    """The names accepted besides loopback addresses: localhost, ``host`` and ``allowed_hosts``."""
    settings = manager.settings
    names = set(LOOPBACK_NAMES)
    names.add(_strip_port(settings.host))
    names.update(_strip_port(h) for h in settings.allowed_hosts)
    names.discard("")
    return names


def _origin_parts(value: str) -> tuple[str, str, str | None] | None:
    """``(scheme, host, port)`` of an Origin or an ``allowed_origins`` pattern, lower-cased,
    a scheme's default port as None; None when it is neither."""
    match = ORIGIN_PATTERN.fullmatch(value.strip().removesuffix("/"))
    if match is None:
        return None
    scheme, host, port = match.group("scheme").lower(), match.group("host").lower(), match.group("port")
    if port is not None and port == _DEFAULT_PORTS.get(scheme):
        port = None
    return scheme, host, port


def origin_matches(origin: str, patterns: Iterable[str]) -> bool:
    """Whether the Origin ``origin`` matches one of ``patterns`` (``allowed_origins``): the
    same scheme; the same host, or any for ``*``; the same port, or any for ``*``."""
    parts = _origin_parts(origin)
    if parts is None or "*" in (parts[1], parts[2]):
        return False
    scheme, host, port = parts
    for pattern in patterns:
        want = _origin_parts(pattern)
        if want is None or want[0] != scheme:
            continue
        if want[1] in ("*", host) and want[2] in ("*", port):
            return True
    return False


def is_own_origin(origin: str, allowed: set[str], ports: Collection[int]) -> bool:
    """Whether ``origin`` is Siesta's own: ``http://`` a host it answers to (loopback, or
    one of ``allowed``) on one of the ``ports`` it listens on."""
    parts = _origin_parts(origin)
    if parts is None or parts[0] != "http" or parts[2] == "*":
        return False
    port = 80 if parts[2] is None else int(parts[2])
    return port in ports and host_is_allowed(parts[1], allowed)


def make_guard(manager: ModelManager, ports: Collection[int] = ()) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The guard middleware; ``ports`` are the ports Siesta listens on (filled once bound),
    which make an Origin its own."""

    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        allowed = allowed_host_names(manager)
        host = request.headers.get("Host", "")
        if not host_is_allowed(host, allowed):
            return refuse(request, 403, "forbidden_host",
                                  f"Host {host!r} is not accepted; add it to allowed_hosts to allow it")
        origin = request.headers.get("Origin")
        if origin == "null":
            return refuse(request, 403, "forbidden_origin", "cross-site request from an opaque Origin refused")
        if origin is not None:
            if not (is_own_origin(origin, allowed, ports) or origin_matches(origin, manager.settings.allowed_origins)):
                if len(origin) <= 255 and _origin_parts(origin) is not None:
                    manager.origin_refused(origin)  # the tray offers to allow it
                return refuse(request, 403, "forbidden_origin",
                                      f"{request.method} {request.path}: request from Origin {origin[:200]!r} refused; "
                                      "add it to allowed_origins to allow it")
            request[_TRUSTED_ORIGIN] = origin
            if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
                return _preflight_answer(request)  # before the API key: a browser sends none with it
            if request.method not in _NO_BODY_METHODS:
                kind = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
                if not kind or kind in SAFELISTED_TYPES:
                    return refuse(request, 415, "unsupported_content_type",
                                          f"{request.method} {request.path}: a request with an Origin must send "
                                          f"Content-Type application/json, not {kind or 'none'}")
        key = manager.settings.api_key
        if key:
            supplied = request.headers.get("Authorization", "")
            expected = f"Bearer {key}"
            if not hmac.compare_digest(supplied.encode(), expected.encode()):
                return refuse(request, 401, "invalid_api_key",
                                      "missing or wrong API key: send Authorization: Bearer <SIESTA_API_KEY>")
        return await handler(request)

    return guard


def refuse(request: web.Request, status: int, code: str, message: str) -> web.Response:
    """The guard's refusal in the shape the route's clients read: Ollama's ``{"error": "..."}``
    on Ollama's routes (``/`` and ``/api/`` outside ``/api/v1/``), else Siesta's own."""
    path = request.path
    if path == "/" or path.startswith("/api/") and not path.startswith("/api/v1/"):
        return json_response({"error": message}, status=status)
    return error_response(status, code, message)


def _preflight_answer(request: web.Request) -> web.Response:
    """204 to a trusted page's CORS preflight: the methods Siesta serves, and the headers it
    asked for (an OpenAI client sends a few of its own besides Authorization)."""
    asked = request.headers.get("Access-Control-Request-Headers", "")
    return web.Response(status=204, headers={
        "Access-Control-Allow-Methods": "GET, POST, PATCH",
        "Access-Control-Allow-Headers": asked[:1000] or "Authorization, Content-Type",
        "Access-Control-Max-Age": "600",
    })


async def add_cors_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """``on_response_prepare``: a page the guard trusted may read the answer (a stream too)."""
    origin = request.get(_TRUSTED_ORIGIN)
    if origin is None:
        return
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Expose-Headers"] = "Retry-After"
    vary = response.headers.get("Vary")
    if vary is None:
        response.headers["Vary"] = "Origin"
    elif "origin" not in vary.lower():
        response.headers["Vary"] = f"{vary}, Origin"
