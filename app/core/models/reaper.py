"""A tiny watchdog process that kills every model server's process group if Siesta dies.

A graceful shutdown stops each server itself. When Siesta is killed with SIGKILL it gets
no chance to, so each server's process group id is sent to this helper over a pipe; when
the pipe closes (which the kernel does as Siesta dies) the helper kills those groups.
It runs in its own session so a Ctrl-C in Siesta's terminal does not reach it.

What it runs comes from the OS's process layer (:mod:`app.core.models.processes`): each group
id goes with its leader's start time (``/proc`` on Linux, libproc on macOS), and a group whose
id is now the pid of a process with another start time is not killed: the server was reaped,
its group emptied and its pid reused before Siesta could unregister it. On Windows no
watchdog runs: each server's kill-on-close job object ends it when Siesta's handles close.
"""

from __future__ import annotations

import logging
import subprocess
import sys

from app.core.models.processes import PLATFORM, Platform

log = logging.getLogger(__name__)


class ProcessReaper:
    """Registers process groups with the watchdog; a no-op where the OS needs none (Windows)."""

    def __init__(self, platform: Platform | None = None) -> None:
        self._platform = platform or PLATFORM
        self._proc: subprocess.Popen[str] | None = None
        source = self._platform.watchdog_source
        if source is None:
            return
        try:
            self._proc = self._platform.popen(
                [sys.executable, "-I", "-S", "-c", source],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                text=True,
                bufsize=1,
                close_fds=True,
                **self._platform.watchdog_options(),
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
        if self._proc is None:
            return
        started = self._platform.start_time(pgid)
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
