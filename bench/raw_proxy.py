"""A proxy on bare asyncio protocols: ``python -m bench.raw_proxy PORT UPSTREAM_PORT``.

Content-Length bodies only, one upstream connection per client connection, no checks of
any kind: the floor of a Python proxy on this machine, for scale in bench.proxy_floor.
"""

from __future__ import annotations

import asyncio
import sys

HEALTH = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{"status":"ok"}'


def _split(buf: bytearray) -> tuple[bytes, bytes] | None:
    """One whole message (head, body) off the front of ``buf``, or None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end])
    lower = head.lower()
    pos = lower.find(b"\r\ncontent-length:")
    length = 0
    if pos >= 0:
        stop = lower.find(b"\r\n", pos + 17)
        length = int(lower[pos + 17: stop if stop >= 0 else len(lower)])
    if len(buf) < end + 4 + length:
        return None
    body = bytes(buf[end + 4: end + 4 + length])
    del buf[: end + 4 + length]
    return head, body


class Upstream(asyncio.Protocol):
    def __init__(self, client: "Client") -> None:
        self.client = client
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        msg = _split(self.buf)
        if msg is not None:
            head, body = msg
            self.client.transport.write(head + b"\r\n\r\n" + body)


class Client(asyncio.Protocol):
    upstream_port = 0

    def __init__(self) -> None:
        self.buf = bytearray()
        self.up: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        msg = _split(self.buf)
        if msg is None:
            return
        head, body = msg
        if head.startswith(b"GET"):
            self.transport.write(HEALTH)
            return
        asyncio.ensure_future(self.forward(head, body))

    async def forward(self, head: bytes, body: bytes) -> None:
        if self.up is None:
            loop = asyncio.get_running_loop()
            self.up, _ = await loop.create_connection(lambda: Upstream(self), "127.0.0.1", self.upstream_port)
        self.up.write(head + b"\r\n\r\n" + body)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.up is not None:
            self.up.close()


async def main(port: int, upstream: int) -> None:
    Client.upstream_port = upstream
    server = await asyncio.get_running_loop().create_server(Client, "127.0.0.1", port)
    async with server:
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
