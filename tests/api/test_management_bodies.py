"""Management API bodies are read whole, however they arrive (issue 10, defect 5).

A raw socket client controls how the body reaches the server: split across TCP segments
with a pause between them, or sent with chunked transfer encoding. The handler must wait
for the whole body before it parses it, and must answer 413 for an oversized body whether
or not the request said how long it would be.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest

from app.api.management import MAX_BODY
from app.core.models.model import ModelState

pytestmark = pytest.mark.timeout(60)

PAUSE = 0.05  # long enough for the server to run the handler on the first segment


async def _raw_request(url: str, head: str, segments: list[bytes]) -> tuple[int, dict[str, Any]]:
    """Sends ``head`` (request line and headers) with the first segment, then each further
    segment after a short pause; returns the status and the JSON body of the answer."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        writer.write(head.encode() + b"\r\n" + segments[0])
        await writer.drain()
        for segment in segments[1:]:
            await asyncio.sleep(PAUSE)
            writer.write(segment)
            await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=20)
    finally:
        writer.close()
    header, _, body = raw.partition(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    return status, json.loads(body) if body else {}


def _head(method: str, path: str, **headers: str) -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
             "Content-Type: application/json"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return "\r\n".join(lines) + "\r\n"


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def test_a_json_body_split_across_two_segments_is_read_whole(front_door, write_recipe):
    write_recipe("a", unload_timeout="5m")
    manager, http, url = await front_door()
    body = json.dumps({"unload_timeout": "10m"}).encode()
    first, second = body[:10], body[10:]
    status, answer = await _raw_request(
        url, _head("PATCH", "/api/v1/models/a", Content_Length=str(len(body))), [first, second])
    assert status == 200, answer
    assert manager.get("a").effective_timeout() == (600, "recipe")


async def test_a_chunked_json_body_in_two_chunks_is_read_whole(front_door, write_recipe):
    write_recipe("a")
    manager, http, url = await front_door()
    status, answer = await _raw_request(
        url, _head("POST", "/api/v1/unload", Transfer_Encoding="chunked"),
        [_chunk(b'{"model": '), _chunk(b'"a"}') + _chunk(b"")])
    assert status == 200, answer
    assert answer["name"] == "a"


async def test_an_oversized_chunked_body_gets_413(front_door, write_recipe):
    write_recipe("a")
    manager, http, url = await front_door()
    filler = b"x" * 8192
    pieces = [_chunk(b'{"model": "')] + [_chunk(filler)] * (MAX_BODY // len(filler) + 1) + [_chunk(b'"}') + _chunk(b"")]
    status, answer = await _raw_request(
        url, _head("POST", "/api/v1/load", Transfer_Encoding="chunked"), pieces)
    assert status == 413, answer
    assert answer["error"]["code"] == "body_too_large"
    assert manager.get("a").state is ModelState.UNLOADED

