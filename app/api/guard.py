"""Checks run before any body is read: Host (DNS rebinding), Origin (cross-site calls), API key.

A web page in the user's browser can reach a localhost service; these checks make sure it
cannot drive Siesta. Only loopback addresses (values that parse as IP addresses in
127.0.0.0/8 or ::1, never a name that merely starts with "127."), ``localhost``, the
configured ``host`` and ``allowed_hosts`` are accepted as the Host a request was sent to
and as the host of its Origin.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from app.api.errors import error_response
from app.core.manager import ModelManager

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


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


def make_guard(manager: ModelManager) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        allowed = allowed_host_names(manager)
        host = request.headers.get("Host", "")
        if not host_is_allowed(host, allowed):
            return error_response(403, "forbidden_host",
                                  f"Host {host!r} is not accepted; add it to allowed_hosts to allow it")
        origin = request.headers.get("Origin")
        if origin is not None and origin != "null":
            try:
                origin_host = urlsplit(origin).hostname or ""
            except ValueError:  # an unparsable Origin (e.g. a bad IPv6 literal) names nothing
                origin_host = ""
            if not host_is_allowed(origin_host, allowed):
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
