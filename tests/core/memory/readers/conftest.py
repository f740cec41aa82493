"""Puts a reader of another OS, built on fakes, in the place of this machine's for one test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from app.core.memory import readers
from app.core.memory.readers.base import Reader


@pytest.fixture
def use_reader() -> Iterator[Callable[[Reader], Reader]]:
    """``use_reader(reader)`` makes ``reader`` this machine's (read_ram, process_ram, GpuMemory
    and the pressure watch take it) until the test ends."""
    before = readers.current()

    def put(reader: Reader) -> Reader:
        readers.use(reader)
        return reader

    yield put
    readers.use(before)
