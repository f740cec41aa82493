"""A tiny watchdog process that kills every model server's process group if Siesta dies.

A graceful shutdown stops each server itself. When Siesta is killed with SIGKILL it gets
no chance to, so each server's process group id is sent to this helper over a pipe; when
the pipe closes (which the kernel does as Siesta dies) the helper kills those groups.
It runs in its own session so a Ctrl-C in Siesta's terminal does not reach it. POSIX only.

Each group id goes with its leader's start time (from /proc where there is one). A group
whose id is now the pid of a process with another start time is not killed: the server
was reaped, its group emptied and its pid reused before Siesta could unregister it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

log = logging.getLogger(__name__)

_REAPER_SOURCE = r"""
import os, signal, sys
def start_time(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as fh: data = fh.read()
        return data[data.rindex(b")") + 2:].split()[19].decode()
    except (OSError, ValueError, IndexError): return None
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


def _start_time(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
        return data[data.rindex(b")") + 2:].split()[19].decode()
    except (OSError, ValueError, IndexError):
        return None


class ProcessReaper:
    """Registers process groups with the watchdog; a no-op where process groups do not exist."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        if os.name != "posix":
            return
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _REAPER_SOURCE],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                text=True,
                bufsize=1,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:  # Siesta still works; only the SIGKILL safety net is missing
            log.warning("could not start the process reaper: %s", exc)

    def _send(self, line: str) -> None:
        if self._proc is None or self._proc.stdin is None:
            return
        try:
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass

    def add(self, pgid: int) -> None:
        """Registers the group led by process ``pgid`` (call it while that process runs)."""
        started = _start_time(pgid)
        self._send(f"+{pgid} {started}" if started else f"+{pgid}")

    def remove(self, pgid: int) -> None:
        self._send(f"-{pgid}")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def close(self) -> None:
        """Ends the watchdog (it kills whatever is still registered)."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        try:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
