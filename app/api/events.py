"""The management API's event streams (``GET /api/v1/events``), fed by one subscription
to the manager: :class:`EventHub`.

Each event is encoded once and the same bytes go to every stream (encoding it once per
stream made 200 streams that did not read turn one event with a 4 MB name into 2.5 GB).
A stream holds at most :data:`BUFFER_EVENTS` events or :data:`BUFFER_BYTES` bytes that
its client has not taken yet; one that falls further behind is dropped (its connection
closed), never buffered without bound. At most :data:`MAX_STREAMS` streams are open;
when they all are, a new one replaces the oldest stream whose client is not reading, or
is refused (503) when every client is keeping up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web

from app.api.jsonio import dumps
from app.core.manager import ModelManager

MAX_STREAMS = 64
BUFFER_EVENTS = 256
BUFFER_BYTES = 1024 * 1024
KEEPALIVE = b": keep-alive\n\n"


def sse(event: dict[str, Any]) -> bytes:
    """One event as the stream sends it: ``event: model`` and its strict JSON."""
    return b"event: model\ndata: " + dumps(event).encode() + b"\n\n"


class StreamClosed(Exception):
    """The stream was dropped: its client fell too far behind, or a newer one took its place."""


class TooManyStreams(Exception):
    """Every stream is taken by a client that keeps up."""


class EventStream:
    """One client's stream: the encoded events it has not been sent yet."""

    def __init__(self, local_only: bool, abort: Callable[[], None]) -> None:
        self.local_only = local_only  # no remote model's events (another Siesta, or ?scope=local)
        self.closed = False
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._writing = False
        self._wake = asyncio.Event()
        self._abort = abort

    @property
    def reading(self) -> bool:
        """Whether its client keeps up: nothing waits to be sent, and no write is stuck."""
        return not self._pending and not self._writing

    def push(self, data: bytes) -> None:
        """Queues ``data``; a stream that would hold too much is dropped instead."""
        if self.closed:
            return
        if len(self._pending) >= BUFFER_EVENTS or self._pending_bytes + len(data) > BUFFER_BYTES:
            self.drop()
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        self._wake.set()

    def drop(self) -> None:
        """Closes the stream and its connection at once (a write stuck on a client that
        does not read would otherwise wait for ever)."""
        if self.closed:
            return
        self.closed = True
        self._pending.clear()
        self._pending_bytes = 0
        self._wake.set()
        self._abort()

    async def next(self, timeout: float) -> bytes | None:
        """The next encoded event; None when none came within ``timeout`` seconds.
        StreamClosed once the stream is dropped."""
        if not self._pending and not self.closed:
            self._wake.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                return None
        if self.closed:
            raise StreamClosed
        data = self._pending.popleft()
        self._pending_bytes -= len(data)
        return data

    async def send(self, response: web.StreamResponse, data: bytes) -> None:
        """Writes ``data`` to the client (marked as writing while the write waits)."""
        self._writing = True
        try:
            await response.write(data)
        finally:
            self._writing = False


class EventHub:
    """Every open event stream, and the one manager subscription that feeds them (held
    only while a stream is open)."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager
        self.streams: list[EventStream] = []  # oldest first
        self._unsubscribe: Callable[[], None] | None = None

    def open(self, local_only: bool, abort: Callable[[], None]) -> EventStream:
        """A new stream; when :data:`MAX_STREAMS` are open, the oldest one whose client is
        not reading is dropped for it, or TooManyStreams when every client keeps up."""
        if len(self.streams) >= MAX_STREAMS:
            stalled = next((s for s in self.streams if not s.reading), None)
            if stalled is None:
                raise TooManyStreams(f"{len(self.streams)} event streams are open, the most Siesta serves")
            stalled.drop()
            self.close(stalled)
        stream = EventStream(local_only, abort)
        self.streams.append(stream)
        if self._unsubscribe is None:
            self._unsubscribe = self.manager.subscribe(self._on_event)
        return stream

    def close(self, stream: EventStream) -> None:
        """Forgets ``stream``; the last one ends the manager subscription."""
        if stream in self.streams:
            self.streams.remove(stream)
        if not self.streams and self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _on_event(self, event: dict[str, Any]) -> None:
        data = sse(event)
        remote = bool(event["model"].get("remote"))
        for stream in list(self.streams):
            if remote and stream.local_only:
                continue
            stream.push(data)
            if stream.closed:
                self.close(stream)
