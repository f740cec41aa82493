"""How this OS holds a model server and everything it starts, so that no server outlives
Siesta: one module per OS behind one interface (:mod:`.base`), as psutil does, and the one
for this OS chosen once, at start-up (:data:`PLATFORM`).

* :mod:`.posix`: Linux and the POSIX part macOS shares: a process group per server
  (SIGTERM, then SIGKILL, to the group), and a watchdog that kills the groups if Siesta is
  killed, checking each group id against its leader's start time in ``/proc``.
* :mod:`.macos`: the same, with the watchdog's start time from libproc's ``proc_pidinfo``.
* :mod:`.windows`: a kill-on-close job object per server, ended with ``TerminateJobObject``;
  no watchdog, since Windows ends the jobs itself when Siesta's handles close.

:mod:`app.core.models.backend` starts and stops servers through it and
:mod:`app.core.models.reaper` runs the watchdog it describes. Every module imports on every OS
(the OS calls are made only when used), so the tests run each one here with fakes of them.
"""

from __future__ import annotations

import sys

from app.core.models.processes.base import Platform, ProcessSetupError, ServerTree
from app.core.models.processes.macos import MacPlatform
from app.core.models.processes.posix import PosixPlatform
from app.core.models.processes.windows import WindowsPlatform

__all__ = ["PLATFORM", "Platform", "ProcessSetupError", "ServerTree", "platform_for"]


def platform_for(system: str) -> Platform:
    """The platform for ``sys.platform`` value ``system``."""
    if system == "win32":
        return WindowsPlatform()
    if system == "darwin":
        return MacPlatform()
    return PosixPlatform()


PLATFORM: Platform = platform_for(sys.platform)
