"""How much Siesta takes from a remote: the size of each answer it reads, the number of
models it keeps of one remote, and the length of a remote model's name.

A remote is another machine: it may be broken, or hostile. Everything read from one goes
through :func:`read_body` or :func:`read_lines` here, so no answer, however long or
endless, holds more than its cap in this process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp

ANSWER_CAP = 4 * 1024 * 1024
"""Bytes of one successful answer. A listing of models is the largest: one model of
another Siesta takes under 1 KB, Ollama's about 400 bytes."""

ERROR_CAP = 64 * 1024
"""Bytes read of an error answer; the rest is not read (a message is at its start)."""

EVENT_CAP = 256 * 1024
"""Bytes of one line of an event stream (one event: one model's snapshot)."""

MAX_MODELS = 10_000
"""Models kept of one remote; the rest of a longer listing is left out (and said once)."""

MAX_NAME_CHARS = 256
"""Characters of a remote model's name, in a listing or in a request."""


class BodyTooLarge(Exception):
    """An answer longer than its cap; nothing of it is kept."""

    def __init__(self, cap: int) -> None:
        super().__init__(f"the answer is larger than {_size(cap)}, more than Siesta reads from a remote")
        self.cap = cap


async def read_body(resp: aiohttp.ClientResponse, cap: int, *, truncate: bool = False) -> bytes:
    """``resp``'s body, read as it arrives and never more than ``cap`` bytes of it: past the
    cap, BodyTooLarge (or, with ``truncate``, the first ``cap`` bytes; the rest is not read)."""
    if not truncate and resp.content_length is not None and resp.content_length > cap:
        raise BodyTooLarge(cap)
    body = bytearray()
    while len(body) <= cap:
        chunk = await resp.content.read(cap + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
    if truncate:
        return bytes(body[:cap])
    raise BodyTooLarge(cap)


async def read_lines(resp: aiohttp.ClientResponse, cap: int = EVENT_CAP) -> AsyncIterator[bytes]:
    """The lines of ``resp``'s body as they arrive (each with its newline), none longer
    than ``cap`` bytes: a longer one ends the stream with BodyTooLarge."""
    pending = bytearray()
    while True:
        chunk = await resp.content.readany()
        if not chunk:
            if pending:
                yield bytes(pending)
            return
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", start)) >= 0:
            if end - start >= cap:
                raise BodyTooLarge(cap)
            yield bytes(pending[start:end + 1])
            start = end + 1
        del pending[:start]
        if len(pending) > cap:
            raise BodyTooLarge(cap)


def _size(cap: int) -> str:
    return f"{cap // (1024 * 1024)} MB" if cap >= 1024 * 1024 else f"{cap // 1024} KB"
