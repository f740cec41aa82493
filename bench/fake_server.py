"""A zero-work OpenAI-ish backend for the overhead benchmark: ``python fake_server.py --port N``.

It is a bare :class:`asyncio.Protocol` with a hand-rolled HTTP/1.1 parser (keep-alive,
``Content-Length`` bodies), so nearly all of a request's time through it is the client's
and the proxy's: ``GET`` answers ``{"status":"ok"}``; ``POST`` answers a fixed
chat-completion JSON, or, when the body asks for ``"stream": true``, a chunked
``text/event-stream`` of ``--chunks`` events and ``data: [DONE]`` (all at once, or
``--interval`` seconds apart, like a model generating at a steady rate).

Standalone on purpose (no import of the app or of aiohttp), so its speed does not change
when either does.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

COMPLETION = (
    b'{"id":"fake","object":"chat.completion","model":"fake","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
)
HEALTH = b'{"status":"ok"}'


def _response(body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


HEALTH_RESPONSE = _response(HEALTH)
COMPLETION_RESPONSE = _response(COMPLETION)


def _stream_response(chunks: int) -> bytes:
    out = [b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"]
    for i in range(chunks):
        event = (b'data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"t'
                 + str(i).encode() + b'"}}]}\n\n')
        out.append(b"%x\r\n%s\r\n" % (len(event), event))
    done = b"data: [DONE]\n\n"
    out.append(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
    return b"".join(out)


def _event(i: int) -> bytes:
    event = (b'data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"t'
             + str(i).encode() + b'"}}]}\n\n')
    return b"%x\r\n%s\r\n" % (len(event), event)


class FakeProtocol(asyncio.Protocol):
    stream_response = b""
    chunks = 16
    interval = 0.0  # seconds between streamed events (0: the whole stream at once)

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            length = 0
            pos = head.find(b"\r\ncontent-length:")
            if pos >= 0:
                stop = head.find(b"\r\n", pos + 17)
                length = int(head[pos + 17: stop if stop >= 0 else len(head)])
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4: end + 4 + length]
            self.buf = self.buf[end + 4 + length:]
            assert self.transport is not None
            if head.startswith(b"get"):
                self.transport.write(HEALTH_RESPONSE)
            elif b'"stream":true' in body.replace(b" ", b""):
                if self.interval > 0:
                    asyncio.ensure_future(self._paced_stream())
                    return  # one request at a time per connection: nothing is pipelined here
                self.transport.write(self.stream_response)
            else:
                self.transport.write(COMPLETION_RESPONSE)
            if b"\r\nconnection: close" in head:
                self.transport.close()
                return


    async def _paced_stream(self) -> None:
        """Events ``interval`` apart on a fixed schedule, like a model generating at a steady rate."""
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(self.chunks):
            await asyncio.sleep(max(0.0, start + (i + 1) * self.interval - loop.time()))
            if self.transport.is_closing():
                return
            self.transport.write(_event(i))
        done = b"data: [DONE]\n\n"
        self.transport.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        if self.buf:
            self.data_received(b"")


async def _main(port: int, chunks: int, interval: float) -> None:
    FakeProtocol.stream_response = _stream_response(chunks)
    FakeProtocol.chunks = chunks
    FakeProtocol.interval = interval
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(FakeProtocol, "127.0.0.1", port, reuse_address=True, backlog=512)
    print(f"zero-work fake listening on {port}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between streamed events")
    args = parser.parse_args()
    asyncio.run(_main(args.port, args.chunks, args.interval))


if __name__ == "__main__":
    main()
