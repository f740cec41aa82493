"""Notices edits to settings.toml and recipes/*.toml while Siesta runs, without polling.

On Linux an inotify descriptor is read straight from the event loop, so an idle Siesta
wakes for nothing (the watchfiles thread woke 20 times a second: 0.18 % of a core idle,
against 0.05 % with this reader; see docs/performance.md). Elsewhere watchfiles is used.
Changes are debounced: an editor's burst of writes becomes one reload per file.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

DEBOUNCE_SECONDS = 0.15
# IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
_IN_MASK = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200
_EVENT_HEADER = struct.Struct("iIII")


def _interesting(name: str) -> bool:
    return name.endswith(".toml") and not name.startswith(".")


class ConfigWatcher:
    """Calls ``on_change(paths)`` with the TOML files changed in the watched folders."""

    def __init__(self, folders: list[Path], on_change: Callable[[set[Path]], None]) -> None:
        self.folders = folders
        self.on_change = on_change
        self._pending: set[Path] = set()
        self._flush: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        """Watches until cancelled."""
        if sys.platform.startswith("linux"):
            try:
                await self._run_inotify()
                return
            except OSError as exc:
                log.warning("inotify unavailable (%s); watching recipes with watchfiles", exc)
        await self._run_watchfiles()

    def _add(self, path: Path) -> None:
        self._pending.add(path)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(DEBOUNCE_SECONDS, self._deliver)

    def _deliver(self) -> None:
        self._flush = None
        changed, self._pending = self._pending, set()
        try:
            self.on_change(changed)
        except Exception:  # a bad reload must not stop the watcher
            log.exception("reloading %s failed", ", ".join(map(str, changed)))

    async def _run_inotify(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        folders: dict[int, Path] = {}
        try:
            for folder in self.folders:
                wd = libc.inotify_add_watch(fd, os.fsencode(folder), _IN_MASK)
                if wd < 0:
                    raise OSError(ctypes.get_errno(), f"cannot watch {folder}")
                folders[wd] = folder
            loop = asyncio.get_running_loop()

            def readable() -> None:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    return
                pos = 0
                while pos + _EVENT_HEADER.size <= len(data):
                    wd, _mask, _cookie, length = _EVENT_HEADER.unpack_from(data, pos)
                    start = pos + _EVENT_HEADER.size
                    name = os.fsdecode(data[start:start + length].rstrip(b"\0"))
                    pos = start + length
                    if wd in folders and _interesting(name):
                        self._add(folders[wd] / name)

            loop.add_reader(fd, readable)
            try:
                await asyncio.Event().wait()
            finally:
                loop.remove_reader(fd)
        finally:
            if self._flush is not None:
                self._flush.cancel()
            os.close(fd)

    async def _run_watchfiles(self) -> None:
        from watchfiles import awatch

        async for changes in awatch(*self.folders, debounce=int(DEBOUNCE_SECONDS * 1000), step=50,
                                    recursive=False, ignore_permission_denied=True):
            for _change, raw in changes:
                path = Path(raw)
                if _interesting(path.name):
                    self._add(path)
