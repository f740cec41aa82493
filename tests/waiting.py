"""Waiting, on the running event loop, for a condition that the code under test reaches by
itself: the one ``until`` the tests share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
                step: float = 0.005) -> Any:
    """Waits until ``predicate()`` is truthy, checking every ``step`` seconds; returns its value.
    AssertionError after ``timeout`` seconds, naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(step)
