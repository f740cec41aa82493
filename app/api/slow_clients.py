"""Slow clients: a header-read timeout and a minimum body rate for aiohttp, and room for
many connections.

aiohttp reads a request's headers with no deadline: a client that opens a connection and
sends half a request holds a connection, a task and a file descriptor for as long as the
keep-alive timeout (an hour by default). :class:`HeaderTimeoutRunner` is an
``aiohttp.web.AppRunner`` whose connections are closed when a request's headers are not
complete within ``header_timeout`` seconds: counted from the opening of the connection
for its first request, and from the first byte of each later request on a kept-alive
connection. A request whose headers are complete is never cut short by it, however
slowly its body arrives or its answer streams. An idle kept-alive connection is closed
after ``KEEPALIVE_TIMEOUT``.

Once its headers are in, a request's body must keep coming: at least ``body_min_bytes``
(:data:`BODY_MIN_BYTES`) in each ``body_window`` seconds (:data:`BODY_WINDOW`), else
reading it raises :class:`BodyTooSlow` (the handler answers 408; see
:mod:`app.api.bodies`) and the connection closes after that answer. A rate, not a
deadline: a 32 MB image upload on a slow link takes minutes and must not be cut, while a
body sent a byte at a time would otherwise hold its connection, its task and its buffer
for as long as the client likes. A window in which Siesta itself held the client back
(reading paused because the handler had not taken what arrived) does not count.

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
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

HEADER_TIMEOUT = 10.0  # seconds for a client to send a request's complete headers
KEEPALIVE_TIMEOUT = 75.0  # seconds an idle kept-alive connection stays open
BODY_WINDOW = 10.0  # seconds in which a body being received must make progress...
BODY_MIN_BYTES = 32 * 1024  # ...of at least this many bytes (26 kbit/s; any real link does better)


class BodyTooSlow(TimeoutError):
    """Reading a request body whose bytes came slower than the minimum rate.

    A TimeoutError so that aiohttp's own reading of a body the handler left unread (after
    its answer) ends quietly, as it does on its own lingering timeout.
    """

    def __init__(self, window: float, min_bytes: int) -> None:
        super().__init__(f"body arrived slower than {min_bytes} bytes in {window:g} s; cut off")


class _HeaderTimeoutHandler(RequestHandler):
    """aiohttp's protocol for one connection, plus a deadline for each request's headers
    and a minimum rate for its body.

    A request's headers are complete when aiohttp's parser hands over a message (a parse
    error counts: aiohttp then answers 400). The handler is waiting for a request's
    headers when no request has arrived yet, or when its request loop waits for the next
    one; bytes that arrive while a request is being handled are its body (or a pipelined
    request) and arm nothing.

    The body of the latest request is watched while it is incomplete: each
    ``body_window`` seconds, the bytes it received in that window are counted.
    """

    def __init__(self, manager: web.Server, *, header_timeout: float, body_window: float = BODY_WINDOW,
                 body_min_bytes: int = BODY_MIN_BYTES, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_count = 0  # requests parsed on this connection when the timer was armed
        self._body_window = body_window
        self._body_min_bytes = body_min_bytes
        self._body: StreamReader | None = None  # the body being received, while incomplete
        self._body_mark = 0  # its size when the current window began
        self._body_timer: asyncio.TimerHandle | None = None
        self._held = False  # reading was paused on this side during the current window

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

    # ---- the body's rate -------------------------------------------------------------------

    def _watch_body(self) -> None:
        """Starts counting the newest request's body, if it has one still to come."""
        self._stop_watching_body()
        body = self._messages[-1][1] if self._messages else None
        if body is None or body.is_eof():
            return
        self._body = body
        self._start_body_window()

    def _start_body_window(self) -> None:
        assert self._body is not None
        self._body_mark = self._body.total_bytes
        self._held = self._reading_paused or getattr(self, "_buffer_paused", False)
        self._body_timer = self._loop.call_later(self._body_window, self._body_window_ended)

    def _stop_watching_body(self) -> None:
        self._body = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_window_ended(self) -> None:
        self._body_timer = None
        body = self._body
        if body is None or body.is_eof() or body.exception() is not None:
            self._body = None  # complete, or already failed (aiohttp fails it once the answer is sent)
            return
        if not self._held and body.total_bytes - self._body_mark < self._body_min_bytes:
            log.debug("cutting off a request body from %s: fewer than %d bytes in %g s",
                      self.peername, self._body_min_bytes, self._body_window)
            self._body = None
            body.set_exception(BodyTooSlow(self._body_window, self._body_min_bytes))
            self.close()  # after the handler's answer: the rest of the body will never be read
            return
        self._start_body_window()

    def pause_reading(self) -> None:
        self._held = True
        super().pause_reading()

    def _pause_reading_for_buffer(self) -> None:  # aiohttp >= 3.13: its message queue is full
        self._held = True
        super()._pause_reading_for_buffer()  # type: ignore[misc]

    # ---- aiohttp's protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        count = self._request_count
        waiting = self._waiting_for_headers()
        super().data_received(data)
        if self._request_count != count:
            self._cancel_header_timer()  # a request's headers are complete
            self._watch_body()
        elif waiting and self._header_timer is None and data:
            self._arm_header_timer()  # the first bytes of the next request on a kept-alive connection

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_header_timer()
        self._stop_watching_body()
        super().connection_lost(exc)


class _HeaderTimeoutServer(web.Server):
    """aiohttp's protocol factory, making :class:`_HeaderTimeoutHandler` protocols."""

    def __init__(self, handler: Any, *, header_timeout: float, body_window: float, body_min_bytes: int,
                 **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.header_timeout = header_timeout
        self.body_window = body_window
        self.body_min_bytes = body_min_bytes

    def __call__(self) -> RequestHandler:
        return _HeaderTimeoutHandler(self, loop=self._loop, header_timeout=self.header_timeout,
                                     body_window=self.body_window, body_min_bytes=self.body_min_bytes,
                                     **self._kwargs)


class HeaderTimeoutRunner(web.AppRunner):
    """``web.AppRunner`` whose connections must send complete request headers within
    ``header_timeout`` seconds (default :data:`HEADER_TIMEOUT`), and each request's body at
    ``body_min_bytes`` per ``body_window`` seconds at least (defaults :data:`BODY_MIN_BYTES`
    and :data:`BODY_WINDOW`); the defaults are read when the runner is made."""

    def __init__(self, app: web.Application, *, header_timeout: float | None = None,
                 body_window: float | None = None, body_min_bytes: int | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", KEEPALIVE_TIMEOUT)
        super().__init__(app, **kwargs)
        self.header_timeout = HEADER_TIMEOUT if header_timeout is None else header_timeout
        self.body_window = BODY_WINDOW if body_window is None else body_window
        self.body_min_bytes = BODY_MIN_BYTES if body_min_bytes is None else body_min_bytes

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _HeaderTimeoutServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            header_timeout=self.header_timeout,
            body_window=self.body_window,
            body_min_bytes=self.body_min_bytes,
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
