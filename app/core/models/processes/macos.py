"""macOS: process groups as on Linux (:mod:`.posix`); only the watchdog's pid-reuse check
differs, since macOS has no ``/proc``.

The watchdog runs as ``python -I -S`` (no site-packages, so no psutil), so it asks the
kernel itself: ``proc_pidinfo(pid, PROC_PIDTBSDINFO, 0, &info, sizeof info)`` from libproc,
through ctypes, and reads ``pbi_start_tvsec`` and ``pbi_start_tvusec`` of the
``struct proc_bsdinfo`` it fills. Chosen over ``ps -o lstart= -p PID`` because:

* it is exact to the microsecond; ``lstart`` is to the second, so a pid reused within the
  second the server started would pass for the server;
* it starts no process at the moment Siesta died (one ``ps`` per registered group), and
  needs no ``ps`` on the PATH launchd gives;
* it parses no text: ``lstart`` is a date in the local time zone and the locale's words.

The layout follows Apple's header (xnu ``bsd/sys/proc_info.h``:
https://github.com/apple-oss-distributions/xnu/blob/main/bsd/sys/proc_info.h): twelve 32-bit
fields, ``pbi_comm[MAXCOMLEN]`` and ``pbi_name[2 * MAXCOMLEN]`` (MAXCOMLEN = 16), six more
32-bit fields, then the two 64-bit start fields at offsets 120 and 128: 136 bytes, which is
``PROC_PIDTBSDINFO_SIZE``. ``proc_pidinfo`` (``libproc.h``, same repository,
``libsyscall/wrappers/libproc/``) returns the bytes it filled, 0 on failure (no such
process, or not ours to ask).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any

from app.core.models.processes.posix import PosixPlatform

__all__ = ["MACOS_START_TIME_SOURCE", "MacPlatform", "PROC_PIDTBSDINFO", "PROC_PIDTBSDINFO_SIZE"]

PROC_PIDTBSDINFO = 3
PROC_PIDTBSDINFO_SIZE = 136

# Standard library only: it runs in the watchdog (python -I -S) as well as in Siesta.
# start_time(pid) -> "SECONDS.MICROSECONDS" or None; proc_pidinfo: the libproc function
# (found at the first call when not given: tests give a fake).
MACOS_START_TIME_SOURCE = r"""
import ctypes
class _ProcBSDInfo(ctypes.Structure):
    _fields_ = ([(n, ctypes.c_uint32) for n in ("pbi_flags", "pbi_status", "pbi_xstatus", "pbi_pid",
                 "pbi_ppid", "pbi_uid", "pbi_gid", "pbi_ruid", "pbi_rgid", "pbi_svuid", "pbi_svgid", "rfu_1")]
                + [("pbi_comm", ctypes.c_char * 16), ("pbi_name", ctypes.c_char * 32)]
                + [(n, ctypes.c_uint32) for n in ("pbi_nfiles", "pbi_pgid", "pbi_pjobc", "e_tdev", "e_tpgid")]
                + [("pbi_nice", ctypes.c_int32), ("pbi_start_tvsec", ctypes.c_uint64),
                   ("pbi_start_tvusec", ctypes.c_uint64)])
_found = []
def _libproc_pidinfo():
    if not _found:
        function = None
        for path in ("/usr/lib/libproc.dylib", "/usr/lib/libSystem.B.dylib"):
            try:
                function = ctypes.CDLL(path, use_errno=True).proc_pidinfo
                break
            except (OSError, AttributeError): continue
        if function is not None:
            function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_int]
            function.restype = ctypes.c_int
        _found.append(function)
    return _found[0]
def start_time(pid, proc_pidinfo=None):
    proc_pidinfo = proc_pidinfo or _libproc_pidinfo()
    if proc_pidinfo is None: return None
    info = _ProcBSDInfo()
    size = ctypes.sizeof(info)
    try: filled = proc_pidinfo(pid, 3, 0, ctypes.byref(info), size)  # 3: PROC_PIDTBSDINFO
    except (OSError, ctypes.ArgumentError): return None
    if filled != size: return None
    return "%d.%06d" % (info.pbi_start_tvsec, info.pbi_start_tvusec)
"""


class MacPlatform(PosixPlatform):
    """macOS: :class:`PosixPlatform` with the watchdog's start time from libproc."""

    name = "macos"
    start_time_source = MACOS_START_TIME_SOURCE

    def __init__(self, proc_pidinfo: Callable[..., int] | None = None,
                 spawn: Callable[..., Awaitable[asyncio.subprocess.Process]] | None = None,
                 popen: Callable[..., subprocess.Popen[Any]] | None = None) -> None:
        super().__init__(spawn, popen)
        self._proc_pidinfo = proc_pidinfo

    def start_time(self, pid: int) -> str | None:
        return self._start_time(pid, self._proc_pidinfo)  # type: ignore[call-arg]
