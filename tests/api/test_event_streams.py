"""The event streams of ``GET /api/v1/events`` (app/api/events.py): one subscription to the
manager, each event encoded once for every stream, streams capped, and a client that does
not read dropped instead of buffered without bound.

Before: each stream subscribed on its own and encoded every event itself; with 200 streams
that did not read, one request with a 4 MB name took Siesta from 111 MB to 2.6 GB.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import pytest

from app.api import events
from app.api.events import EventHub, StreamClosed, TooManyStreams
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)


class FakeManager:
    """Just the manager's subscription."""

    def __init__(self) -> None:
        self.subscribers: list[Callable[[dict[str, Any]], None]] = []

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        self.subscribers.append(callback)
        return lambda: self.subscribers.remove(callback)

    def emit(self, name: str = "a", **model: Any) -> None:
        for callback in list(self.subscribers):
            callback({"reason": "busy", "model": {"name": name, **model}, "time": 1.0})


def _open(hub: EventHub, local_only: bool = False) -> tuple[events.EventStream, list[bool]]:
    aborted: list[bool] = []
    return hub.open(local_only, lambda: aborted.append(True)), aborted


def test_each_event_is_encoded_once_for_every_stream(monkeypatch):
    manager = FakeManager()
    hub = EventHub(manager)  # type: ignore[arg-type]
    encoded: list[str] = []
    real = events.dumps
    monkeypatch.setattr(events, "dumps", lambda data: encoded.append("x") or real(data))
    streams = [_open(hub)[0] for _ in range(50)]
    assert len(manager.subscribers) == 1  # one subscription for all of them
    manager.emit(name="m" * 100_000)
    assert len(encoded) == 1
    first = streams[0]._pending[0]
    assert all(s._pending[0] is first for s in streams)  # the same bytes, shared
    for stream in streams:
        hub.close(stream)
    assert manager.subscribers == []  # the last stream ends the subscription


def test_local_only_streams_get_no_remote_events():
    manager = FakeManager()
    hub = EventHub(manager)  # type: ignore[arg-type]
    local, _ = _open(hub, local_only=True)
    everything, _ = _open(hub)
    manager.emit(name="gpu/m", remote="gpu")
    manager.emit(name="a")
    assert len(local._pending) == 1 and len(everything._pending) == 2


async def test_a_stream_that_falls_behind_is_dropped_and_closed():
    manager = FakeManager()
    hub = EventHub(manager)  # type: ignore[arg-type]
    stalled, aborted = _open(hub)
    reader, _ = _open(hub)
    for i in range(events.BUFFER_EVENTS + 1):
        manager.emit(name=f"m{i}")
        assert await reader.next(1) is not None  # this one keeps up
    assert stalled.closed and aborted == [True]
    assert stalled not in hub.streams and reader in hub.streams
    assert stalled._pending_bytes == 0
    with pytest.raises(StreamClosed):
        await stalled.next(1)


def test_a_stream_is_dropped_when_its_bytes_pass_the_buffer():
    manager = FakeManager()
    hub = EventHub(manager)  # type: ignore[arg-type]
    stream, aborted = _open(hub)
    big = "x" * (events.BUFFER_BYTES // 3)
    for _ in range(4):
        manager.emit(big=big)
    assert stream.closed and aborted == [True]


def test_streams_are_capped_and_the_oldest_that_is_not_reading_goes_first():
    manager = FakeManager()
    hub = EventHub(manager)  # type: ignore[arg-type]
    opened = [_open(hub) for _ in range(events.MAX_STREAMS)]
    with pytest.raises(TooManyStreams):
        _open(hub)  # every client keeps up: the new one is refused
    for stream, _ in opened[10:20]:
        stream.push(b"pending")  # these ten have not taken their last event
    newest, _ = _open(hub)
    assert len(hub.streams) == events.MAX_STREAMS
    assert opened[10][0].closed and opened[10][1] == [True]  # the oldest of those that do not read
    assert not any(stream.closed for stream, _ in opened[:10] + opened[11:])
    assert hub.streams[-1] is newest


def _stalled_subscriber(port: int) -> socket.socket:
    """A client that asks for the event stream and never reads a byte of it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return sock


async def test_stalled_subscribers_are_capped_and_dropped(front_door, write_recipe):
    write_recipe("a")
    manager, http, url = await front_door()
    port = int(url.rsplit(":", 1)[1])
    socks = [_stalled_subscriber(port) for _ in range(events.MAX_STREAMS)]
    try:
        def the_hub() -> EventHub | None:
            return next((c.__self__ for c in manager._subscribers if isinstance(getattr(c, "__self__", None), EventHub)),
                        None)

        await until(lambda: the_hub() is not None and len(the_hub().streams) == events.MAX_STREAMS)
        hub = the_hub()
        async with http.get(f"{url}/api/v1/events") as resp:  # all of them look healthy: refused
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "too_many_streams"
        model = manager.get("a")
        padding = {"x": "p" * 4000}
        for _ in range(events.BUFFER_EVENTS * 30):  # far more than a stalled client's buffers take
            manager._emit_remote({**model.snapshot(), **padding}, "busy")
            if not hub.streams:
                break
            await asyncio.sleep(0)
        await until(lambda: not hub.streams)  # every one of them dropped, its connection closed
        assert sum(len(s._pending) for s in hub.streams) == 0
        async with http.get(f"{url}/api/v1/events") as resp:  # room again
            assert resp.status == 200
            line = await resp.content.readline()
            assert line == b"event: model\n"
            assert json.loads((await resp.content.readline())[6:])["reason"] == "snapshot"
    finally:
        for sock in socks:
            sock.close()
