"""A fake of macOS libproc's ``proc_pidinfo``, so that the watchdog's macOS start-time check
(app/core/models/processes/macos.py) runs here.

It follows Apple's sources (xnu, https://github.com/apple-oss-distributions/xnu):

* ``int proc_pidinfo(int pid, int flavor, uint64_t arg, void *buffer, int buffersize)``
  (``libsyscall/wrappers/libproc/libproc.h``); ``libproc.c`` returns 0 when the
  ``__proc_info`` system call fails (no such process, or one we may not ask about), else the
  number of bytes it filled.
* flavor ``PROC_PIDTBSDINFO`` (3) fills a ``struct proc_bsdinfo`` of
  ``PROC_PIDTBSDINFO_SIZE`` bytes (``bsd/sys/proc_info.h``): ``pbi_flags``, ``pbi_status``,
  ``pbi_xstatus``, ``pbi_pid``, ``pbi_ppid``, ``pbi_uid``, ``pbi_gid``, ``pbi_ruid``,
  ``pbi_rgid``, ``pbi_svuid``, ``pbi_svgid``, ``rfu_1`` (uint32 each), ``pbi_comm[16]``,
  ``pbi_name[32]``, ``pbi_nfiles``, ``pbi_pgid``, ``pbi_pjobc``, ``e_tdev``, ``e_tpgid``
  (uint32), ``pbi_nice`` (int32), ``pbi_start_tvsec``, ``pbi_start_tvusec`` (uint64): 136
  bytes, little-endian on both Apple CPUs.

The fake writes those bytes with :mod:`struct` from the header's list, not through the code's
ctypes structure, so a wrong layout there reads the wrong numbers here.
"""

from __future__ import annotations

import ctypes
import struct
from typing import Any

PROC_PIDTBSDINFO = 3
BSDINFO = struct.Struct("<12I16s32s5Ii2Q")  # struct proc_bsdinfo, field by field
assert BSDINFO.size == 136


class FakeProcPidinfo:
    """``proc_pidinfo`` over a table of pid -> (start seconds, start microseconds)."""

    def __init__(self, started: dict[int, tuple[int, int]]) -> None:
        self.started = started
        self.calls: list[tuple[int, int, int, int]] = []  # (pid, flavor, arg, buffersize)

    def __call__(self, pid: int, flavor: int, arg: int, buffer: Any, buffersize: int) -> int:
        self.calls.append((pid, flavor, arg, buffersize))
        if flavor != PROC_PIDTBSDINFO or pid not in self.started or buffersize < BSDINFO.size:
            return 0
        seconds, micros = self.started[pid]
        data = BSDINFO.pack(0, 0, 0, pid, 1, 501, 20, 501, 20, 501, 20, 0, b"llama-server", b"", 12, pid, 0, 0, 0, 0,
                            seconds, micros)
        target = buffer._obj if hasattr(buffer, "_obj") else buffer  # ctypes.byref(structure)
        ctypes.memmove(ctypes.addressof(target), data, BSDINFO.size)
        return BSDINFO.size
