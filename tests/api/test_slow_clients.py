"""Slow clients (app/api/slow_clients.py): a connection must send complete request headers
within the header timeout, and a thousand half-sent requests must not stop a normal one.

Real sockets throughout; the thousand-connection test runs Siesta's front door in a child
process whose soft open-files limit starts low (256, macOS's default; many Linux desktops
give 1,024, which a thousand connections plus the process's own files also exceed).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from app.api import slow_clients
from app.api.slow_clients import HeaderTimeoutRunner
from tests.portable import POSIX, posix_only

try:
    import resource
except ImportError:  # Windows: no open-files limit to raise
    resource = None  # type: ignore[assignment]

pytestmark = pytest.mark.timeout(60)

HALF_REQUEST = b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n"
FULL_REQUEST = b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n"
REPO = Path(__file__).resolve().parents[2]


async def _closed_within(reader: asyncio.StreamReader, timeout: float) -> bool:
    """True when the server closes the connection (EOF or reset) within ``timeout`` seconds."""
    try:
        while await asyncio.wait_for(reader.read(65536), timeout):
            pass
    except asyncio.TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    return head + await reader.readexactly(length)


@pytest.fixture
async def tiny_server():
    """A small aiohttp app behind HeaderTimeoutRunner(header_timeout=0.5); yields its port."""
    async def hello(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(text=f"hello {len(body)}")

    app = web.Application()
    app.add_routes([web.get("/hello", hello), web.post("/hello", hello)])
    runner = HeaderTimeoutRunner(app, header_timeout=0.5, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await runner.cleanup()


async def test_half_request_is_closed_after_the_header_timeout(tiny_server):
    reader, writer = await asyncio.open_connection("127.0.0.1", tiny_server)
    started = time.monotonic()
    writer.write(HALF_REQUEST)
    assert await _closed_within(reader, 5)
    assert time.monotonic() - started >= 0.4
    writer.close()


async def test_silent_connection_is_closed_after_the_header_timeout(tiny_server):
    reader, writer = await asyncio.open_connection("127.0.0.1", tiny_server)
    assert await _closed_within(reader, 5)
    writer.close()


async def test_dribbled_headers_are_closed_even_though_bytes_keep_coming(tiny_server):
    """A byte every 0.1 s never completes the headers: the deadline is not reset by activity."""
    reader, writer = await asyncio.open_connection("127.0.0.1", tiny_server)
    closed = asyncio.ensure_future(_closed_within(reader, 5))
    for byte in HALF_REQUEST * 10:
        if closed.done():
            break
        writer.write(bytes([byte]))
        await asyncio.wait({closed}, timeout=0.1)
    assert await closed
    writer.close()


async def test_complete_headers_are_not_cut_off(tiny_server):
    """A slow body after complete headers, and an idle kept-alive connection, both outlive the
    header timeout; the next request's headers get the deadline again."""
    reader, writer = await asyncio.open_connection("127.0.0.1", tiny_server)
    writer.write(b"POST /hello HTTP/1.1\r\nHost: localhost\r\nContent-Length: 6\r\n\r\n")
    for byte in b"abcdef":  # 0.9 s of body, past the 0.5 s header timeout
        await asyncio.sleep(0.15)
        writer.write(bytes([byte]))
    assert (await _read_response(reader)).endswith(b"hello 6")
    assert not await _closed_within(reader, 0.8)  # idle keep-alive: still open past the header timeout
    writer.write(FULL_REQUEST)
    assert (await _read_response(reader)).endswith(b"hello 0")
    writer.write(HALF_REQUEST)  # the next request on the same connection is half sent
    assert await _closed_within(reader, 5)
    writer.close()


async def test_front_door_closes_half_requests(front_door, monkeypatch):
    """ApiServer uses the header timeout (shortened here; 10 s in Siesta)."""
    monkeypatch.setattr(slow_clients, "HEADER_TIMEOUT", 0.5)
    manager, http, url = await front_door()
    port = int(url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HALF_REQUEST)
    assert await _closed_within(reader, 5)
    writer.close()
    async with http.get(f"{url}/api/v1/health") as resp:
        assert resp.status == 200


@posix_only
def test_open_files_limit_is_raised_to_the_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if soft == hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1024) - 1, hard))
        lowered = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        new = slow_clients.raise_open_files_limit()
        now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert now == new and now > lowered
        assert hard == resource.RLIM_INFINITY or now == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


SERVER_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from app.api.server import ApiServer
    from app.core.manager import ModelManager
    from app.core.config.paths import Paths
    from app.core.config.settings import load_settings

    async def main():
        root = Path(sys.argv[1])
        paths = Paths(config_dir=root / "c", log_dir=root / "l", data_dir=root / "d")
        paths.recipes_dir.mkdir(parents=True)
        manager = ModelManager(paths, load_settings(paths.settings_file, {}), watch_files=False)
        await manager.start()
        server = ApiServer(manager)
        await server.start(port=0)
        try:
            import resource
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except ImportError:  # Windows: no such limit
            limit = -1
        print(server.port, limit, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
""")

CONNECTIONS = 1000
DESKTOP_SOFT_LIMIT = 256


def _desktop_limit() -> None:  # runs in the child before exec (preexec_fn: POSIX only)
    if POSIX:
        resource.setrlimit(resource.RLIMIT_NOFILE, (DESKTOP_SOFT_LIMIT, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


async def test_a_thousand_half_requests_do_not_stop_a_normal_request(tmp_path):
    desktop_limit = {}
    if POSIX:  # Windows has no open-files limit: the child starts as it is
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < CONNECTIONS + 200:
            pytest.skip(f"hard open-files limit {hard} is too low for {CONNECTIONS} connections")
        if soft != resource.RLIM_INFINITY and soft < CONNECTIONS + 200:  # the test's own end of the connections
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
        desktop_limit["preexec_fn"] = _desktop_limit
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE,
                              env=env, cwd=REPO, **desktop_limit)
    socks: list[socket.socket] = []
    try:
        loop = asyncio.get_running_loop()
        line = await asyncio.wait_for(loop.run_in_executor(None, server.stdout.readline), 20)  # type: ignore[union-attr]
        port, server_limit = (int(v) for v in line.split())
        assert server_limit > DESKTOP_SOFT_LIMIT or not POSIX  # Siesta raised its own limit at start-up

        async def half_request() -> None:
            sock = socket.socket()
            sock.setblocking(False)
            socks.append(sock)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, HALF_REQUEST)

        for start in range(0, CONNECTIONS, 100):
            await asyncio.wait_for(asyncio.gather(*(half_request() for _ in range(100))), 10)
        started = time.monotonic()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
            async with http.get(f"http://127.0.0.1:{port}/api/v1/health") as resp:
                assert resp.status == 200
        assert time.monotonic() - started < 2
        # every half request is still held open by the server (10 s header timeout): none was refused
        assert len(psutil_connections(server.pid, port)) >= CONNECTIONS
    finally:
        for sock in socks:
            sock.close()
        server.kill()
        server.wait()


def psutil_connections(pid: int, port: int) -> list:
    import psutil

    return [c for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED]
