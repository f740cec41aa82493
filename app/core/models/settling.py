"""asyncio helpers for the lifecycle tasks, which must settle their state whatever cancels them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def result_or_none(future: Awaitable[T]) -> T | None:
    """The result of ``future``, or None if it failed."""
    try:
        return await future
    except Exception:  # noqa: BLE001 - the caller reports the cancellation, not this
        return None


def uncancel() -> None:
    """A lifecycle task that caught its cancellation goes on to settle its state."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


async def run_to_end(awaitable: Awaitable[T]) -> T:
    """Runs ``awaitable`` to its end even if the caller is cancelled meanwhile (again and
    again): a server being stopped is always stopped, and the state after it is always set.
    The caller's cancellation is swallowed: it is a lifecycle task that settles its state."""
    inner = asyncio.ensure_future(awaitable)
    while True:
        try:
            return await asyncio.shield(inner)
        except asyncio.CancelledError:
            if inner.cancelled():
                raise
            uncancel()
