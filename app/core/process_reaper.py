"""A tiny watchdog process that kills every model server's process group if Siesta dies.

A graceful shutdown stops each server itself. When Siesta is killed with SIGKILL it gets
no chance to, so each server's process group id is sent to this helper over a pipe; when
the pipe closes (which the kernel does as Siesta dies) the helper kills those groups.
It runs in its own session so a Ctrl-C in Siesta's terminal does not reach it. POSIX only.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

log = logging.getLogger(__name__)

_REAPER_SOURCE = r"""
import os, signal, sys
groups = set()
for line in sys.stdin:
    line = line.strip()
    if line[:1] == "+": groups.add(int(line[1:]))
    elif line[:1] == "-": groups.discard(int(line[1:]))
for pgid in groups:
    try: os.killpg(pgid, signal.SIGKILL)
    except OSError: pass
"""


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
        self._send(f"+{pgid}")

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
