"""Slow clients: a header-read timeout for aiohttp, and room for many connections.

aiohttp reads a request's headers with no deadline: a client that opens a connection and
sends half a request holds a connection, a task and a file descriptor for as long as the
keep-alive timeout (an hour by default). :class:`HeaderTimeoutRunner` is an
``aiohttp.web.AppRunner`` whose connections are closed when a request's headers are not
complete within ``header_timeout`` seconds: counted from the opening of the connection
for its first request, and from the first byte of each later request on a kept-alive
connection. A request whose headers are complete is never cut short by it, however
slowly its body arrives or its answer streams. An idle kept-alive connection is closed
after ``KEEPALIVE_TIMEOUT``.

One limit of this: the rest of a pipelined request that arrives together with the
request before it is only bounded by the keep-alive timeout (aiohttp does not say where
one request's bytes end), so such a connection lives at most ``KEEPALIVE_TIMEOUT``.

:func:`raise_open_files_limit` raises the soft limit on open files to the hard limit, so
that a thousand idle connections do not use up the 1,024 descriptors many desktops give
a process by default.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

HEADER_TIMEOUT = 10.0  # seconds for a client to send a request's complete headers
KEEPALIVE_TIMEOUT = 75.0  # seconds an idle kept-alive connection stays open


class _HeaderTimeoutHandler(RequestHandler):
    """aiohttp's protocol for one connection, plus a deadline for each request's headers.

    A request's headers are complete when aiohttp's parser hands over a message (a parse
    error counts: aiohttp then answers 400). The handler is waiting for a request's
    headers when no request has arrived yet, or when its request loop waits for the next
    one; bytes that arrive while a request is being handled are its body (or a pipelined
    request) and arm nothing.
    """

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_count = 0  # requests parsed on this connection when the timer was armed

    def _waiting_for_headers(self) -> bool:
        if self._request_count == 0:
            return True
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _arm_header_timer(self) -> None:
        self._header_count = self._request_count
        self._header_timer = self._loop.call_later(self._header_timeout, self._header_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self._request_count != self._header_count or not self._waiting_for_headers():
            return
        log.debug("closing a connection from %s: no complete request headers within %g s",
                  self.peername, self._header_timeout)
        self.force_close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        count = self._request_count
        waiting = self._waiting_for_headers()
        super().data_received(data)
        if self._request_count != count:
            self._cancel_header_timer()  # a request's headers are complete
        elif waiting and self._header_timer is None and data:
            self._arm_header_timer()  # the first bytes of the next request on a kept-alive connection

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)


class _HeaderTimeoutServer(web.Server):
    """aiohttp's protocol factory, making :class:`_HeaderTimeoutHandler` protocols."""

    def __init__(self, handler: Any, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return _HeaderTimeoutHandler(self, loop=self._loop, header_timeout=self.header_timeout, **self._kwargs)


class HeaderTimeoutRunner(web.AppRunner):
    """``web.AppRunner`` whose connections must send complete request headers within
    ``header_timeout`` seconds (default :data:`HEADER_TIMEOUT`, read when the runner is made)."""

    def __init__(self, app: web.Application, *, header_timeout: float | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", KEEPALIVE_TIMEOUT)
        super().__init__(app, **kwargs)
        self.header_timeout = HEADER_TIMEOUT if header_timeout is None else header_timeout

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _HeaderTimeoutServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            header_timeout=self.header_timeout,
            **server._kwargs,
        )


def raise_open_files_limit() -> int | None:
    """Raises the soft limit on open files (RLIMIT_NOFILE) as far as the hard limit allows;
    returns the soft limit now in force (None where there is no such limit)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft == hard:
        return soft
    if hard == resource.RLIM_INFINITY:
        # Linux refuses an infinite NOFILE (its ceiling is fs.nr_open), macOS anything past OPEN_MAX.
        candidates = [_nr_open(), 1 << 20, 65536, 10240]
    else:
        candidates = [hard, 10240]
    for target in candidates:
        if target is None or target <= soft or (hard != resource.RLIM_INFINITY and target > hard):
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        log.debug("raised the open files limit from %d to %d", soft, target)
        return target
    return soft


def _nr_open() -> int | None:
    try:
        with open("/proc/sys/fs/nr_open") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return None
