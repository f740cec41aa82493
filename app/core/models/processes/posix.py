"""Linux (and the POSIX part macOS shares): each model server leads a process group.

A server runs in a session, and so a process group, of its own: stopping it signals the
group (SIGTERM, then SIGKILL), and whatever is left in the group when the server exits is
killed. The group is signalled by its id (the server's pid) only while that id is known to
name the server's group: never once the pid may belong to another process.

The watchdog (:mod:`app.core.models.reaper`) runs :data:`WATCHDOG_LOOP` after the OS's
``start_time`` function (here :data:`LINUX_START_TIME_SOURCE`, from ``/proc``): each group id
comes with its leader's start time, and a group whose id is now the pid of a process with
another start time is not killed, since the server was reaped, its group emptied and its pid
reused before Siesta could unregister it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any

import psutil

from app.core.models.processes.base import define_start_time
from app.core.spawn import child_options

__all__ = ["GroupTree", "LINUX_START_TIME_SOURCE", "PosixPlatform", "WATCHDOG_LOOP"]

# A process's start time in clock ticks since boot: field 22 of /proc/PID/stat (the fields
# after the command, which may hold spaces and parentheses, start at its last ")").
LINUX_START_TIME_SOURCE = r"""
def start_time(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as fh: data = fh.read()
        return data[data.rindex(b")") + 2:].split()[19].decode()
    except (OSError, ValueError, IndexError): return None
"""

# The watchdog itself, after the OS's start_time: it reads "+PGID [START]" and "-PGID" lines
# until its stdin closes (which the kernel does as Siesta dies), then kills every group still
# registered, unless its id now names a process that started at another time.
WATCHDOG_LOOP = r"""
import os, signal, sys
groups = {}
for line in sys.stdin:
    line = line.strip()
    if line[:1] == "+":
        pgid, _, started = line[1:].partition(" ")
        groups[int(pgid)] = started or None
    elif line[:1] == "-": groups.pop(int(line[1:]), None)
for pgid, started in groups.items():
    now = start_time(pgid)
    if started and now is not None and now != started: continue  # the id is another process's now
    try: os.killpg(pgid, signal.SIGKILL)
    except OSError: pass
"""


class GroupTree:
    """A server in a session and process group of its own, signalled as a group."""

    def __init__(self) -> None:
        self._pid: int | None = None
        # The server's identity beside its pid: its start time tells it from a later process
        # that gets the same pid once the server has been reaped.
        self._started_at: float | None = None

    def spawn_options(self) -> dict[str, Any]:
        return child_options(own_session=True, windows=False)

    def adopt(self, pid: int) -> None:
        self._pid = pid
        try:
            self._started_at = psutil.Process(pid).create_time()
        except psutil.Error:  # already gone and reaped
            self._started_at = None

    def _group_is_ours(self) -> bool:
        """Whether the process group id (the server's pid) still names the server's group.

        While a process group has members the kernel gives its id to no new process, so the
        id can only name another group once the server has been reaped, its group is empty
        and its pid has gone to a new process. So: a process with that pid that is not the
        server (another start time) means the id is someone else's now; no process with that
        pid means only the server's own leftovers can still carry the id.
        """
        assert self._pid is not None
        try:
            holder = psutil.Process(self._pid)
        except psutil.NoSuchProcess:
            return True
        except psutil.Error:
            return False
        try:
            return self._started_at is not None and holder.create_time() == self._started_at
        except psutil.Error:
            return False

    def _signal_group(self, sig: int) -> None:
        if self._pid is None:
            return
        try:
            if self._group_is_ours():
                os.killpg(self._pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def terminate(self) -> None:
        self._signal_group(signal.SIGTERM)

    def kill(self) -> None:
        self._signal_group(signal.SIGKILL)

    def release(self) -> None:
        self._signal_group(signal.SIGKILL)  # anything the server left behind in its group


class PosixPlatform:
    """Linux, and every POSIX system but macOS (which :mod:`.macos` refines)."""

    name = "posix"
    start_time_source = LINUX_START_TIME_SOURCE

    def __init__(self, spawn: Callable[..., Awaitable[asyncio.subprocess.Process]] | None = None,
                 popen: Callable[..., subprocess.Popen[Any]] | None = None) -> None:
        self.spawn = spawn or asyncio.create_subprocess_exec
        self.popen = popen or subprocess.Popen
        self._start_time = define_start_time(self.start_time_source)

    @property
    def watchdog_source(self) -> str | None:
        return self.start_time_source + WATCHDOG_LOOP

    def new_tree(self) -> GroupTree:
        return GroupTree()

    def start_time(self, pid: int) -> str | None:
        return self._start_time(pid)

    def watchdog_options(self) -> dict[str, Any]:
        # A session of its own, so a Ctrl-C in Siesta's terminal does not end it first.
        return child_options(own_session=True, windows=False)
