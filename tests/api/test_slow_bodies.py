"""A request body must keep coming once its headers are in (app/api/slow_clients.py): fewer
than ``body_min_bytes`` in a ``body_window`` is 408 ``body_too_slow`` and the connection
closes; a large body at a real link's speed, or one Siesta itself held back, is never cut.

Before: nothing bounded a body after the headers; one byte a minute held a connection, its
task and its buffer for as long as the client liked.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import web

from app.api import slow_clients
from app.api.bodies import read_body
from app.api.errors import ApiError
from app.api.slow_clients import HeaderTimeoutRunner

pytestmark = pytest.mark.timeout(60)

WINDOW = 0.3
MIN_BYTES = 1000


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    return status, await reader.readexactly(length)


async def _closed(reader: asyncio.StreamReader, timeout: float = 5) -> bool:
    try:
        while await asyncio.wait_for(reader.read(65536), timeout):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


@pytest.fixture
async def body_server():
    """An app whose handler reads the body as Siesta's do (after ``delay`` seconds); yields its port."""
    delay = {"seconds": 0.0}

    async def echo(request: web.Request) -> web.Response:
        await asyncio.sleep(delay["seconds"])
        try:
            body = await read_body(request, 64 * 1024 * 1024)
        except ApiError as exc:
            return exc.response()
        return web.Response(text=f"read {len(body)}")

    app = web.Application()
    app.add_routes([web.post("/echo", echo)])
    runner = HeaderTimeoutRunner(app, body_window=WINDOW, body_min_bytes=MIN_BYTES, access_log=None,
                                 shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1], delay  # type: ignore[union-attr]
    await runner.cleanup()


async def test_a_dribbled_body_is_cut_with_408_and_the_connection_closed(body_server):
    port, _ = body_server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n")
    started = time.monotonic()

    async def dribble() -> None:
        while True:
            writer.write(b"x" * 10)
            await asyncio.sleep(0.05)

    sender = asyncio.ensure_future(dribble())
    try:
        status, body = await _response(reader)
    finally:
        sender.cancel()
    assert status == 408
    error = json.loads(body)["error"]
    assert error["code"] == "body_too_slow" and "POST /echo" in error["message"]
    assert WINDOW * 0.9 <= time.monotonic() - started < 5
    assert await _closed(reader)
    writer.close()


async def test_a_large_body_at_a_steady_rate_is_read_whole(body_server):
    port, _ = body_server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    size = 12 * MIN_BYTES
    writer.write(f"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {size}\r\n\r\n".encode())
    for _ in range(size // (MIN_BYTES // 2)):  # twice the minimum rate, over many windows
        writer.write(b"x" * (MIN_BYTES // 2))
        await asyncio.sleep(WINDOW / 4)
    status, body = await _response(reader)
    assert (status, body) == (200, f"read {size}".encode())
    writer.close()


async def test_a_body_siesta_has_not_read_yet_is_not_cut(body_server):
    """The handler takes its time (a load, say) before reading: the client is held back by
    flow control, which is no fault of its own."""
    port, delay = body_server
    delay["seconds"] = WINDOW * 5
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    size = 8 * 1024 * 1024
    writer.write(f"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {size}\r\n\r\n".encode())
    writer.write(b"x" * size)
    status, body = await _response(reader)
    assert (status, body) == (200, f"read {size}".encode())
    writer.close()


async def test_the_front_door_cuts_slow_bodies(front_door, monkeypatch):
    """ApiServer's runner uses the minimum rate (shortened here; 32 KB per 10 s in Siesta)."""
    monkeypatch.setattr(slow_clients, "BODY_WINDOW", WINDOW)
    monkeypatch.setattr(slow_clients, "BODY_MIN_BYTES", MIN_BYTES)
    _, _, url = await front_door()
    port = int(url.rsplit(":", 1)[1])
    for path in ("/v1/chat/completions", "/api/v1/load"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     f"Content-Length: 60000\r\n\r\n{{\"model\": \"".encode())
        status, body = await _response(reader)
        assert status == 408, path
        assert json.loads(body)["error"]["code"] == "body_too_slow"
        assert await _closed(reader)
        writer.close()
