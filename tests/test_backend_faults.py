"""Faults around one server process (app/core/backend.py): a log that cannot be written,
process groups and reused pids, a foreign server on the chosen port.

Every test runs real child processes (small ``python -c`` scripts), never llama-server.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sys
from pathlib import Path

import pytest

from app.core.backend import BackendProcess, BoundedLog, LaunchSpec

pytestmark = pytest.mark.timeout(30)

# More than any pipe buffer: a server whose output nobody drains blocks in write() long before the end.
FLOOD = r"""
import sys
line = b"x" * 1023 + b"\n"
for _ in range(1100):
    sys.stdout.buffer.write(line)
sys.stdout.buffer.write(b"last line of the flood\n")
sys.stdout.flush()
"""


def python_spec(source: str, port: int = 1) -> LaunchSpec:
    import os

    return LaunchSpec(argv=(sys.executable, "-c", source), env=dict(os.environ), port=port, health_path="/health")


class FullDiskLog(BoundedLog):
    """A model log whose disk fills up after ``room`` bytes: every later write raises ENOSPC."""

    def __init__(self, path: Path, room: int) -> None:
        super().__init__(path)
        self.room = room
        self.failed_writes = 0

    def write(self, data: bytes) -> None:
        if len(data) > self.room:
            self.failed_writes += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        super().write(data)


async def _run_flood(log: BoundedLog) -> tuple[BackendProcess, int]:
    proc = await BackendProcess.start(python_spec(FLOOD), log, reaper=None)
    try:
        code = await asyncio.wait_for(proc.wait_exit(), timeout=10)
    finally:
        if proc.returncode is None:
            await proc.stop(1)
    return proc, code


async def test_server_output_is_drained_after_the_log_disk_fills(tmp_path, caplog):
    """The log write fails mid-run (ENOSPC): the server's 1 MB of output is still read to the
    end, it exits normally, wait_exit returns its code, and Siesta's own log says so once."""
    log = FullDiskLog(tmp_path / "m.log", room=200_000)
    with caplog.at_level(logging.WARNING):
        proc, code = await _run_flood(log)
    assert code == 0
    assert log.failed_writes >= 1
    assert "last line of the flood" in proc.log.tail_text()  # the tail for error messages still follows
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "m.log" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "No space left" in warnings[0].getMessage()


async def test_a_log_that_cannot_be_written_at_all_does_not_stop_the_server(tmp_path, caplog):
    """The disk is full from the start: not even the 'starting' note can be written."""
    log = FullDiskLog(tmp_path / "m.log", room=0)
    with caplog.at_level(logging.WARNING):
        proc, code = await _run_flood(log)
    assert code == 0
    assert len([r for r in caplog.records if "m.log" in r.getMessage()]) == 1
