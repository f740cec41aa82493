"""Fakes of the macOS calls behind app/core/memory/readers/macos.py, so that it runs here.
Unverified on real hardware: each follows Apple's headers or documentation, cited below, and
published samples of what the calls return; none was compared with a real Mac.

* ``int sysctlbyname(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t
  newlen)`` (:class:`FakeSysctl`): copies the value to ``oldp`` and its size to ``*oldlenp``, 0
  on success; -1 with errno ENOENT for a name this Mac does not have, ENOMEM when ``oldp`` is
  too small (sysctl(3), https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man3/sysctlbyname.3.html).
  The values, little-endian as on both Apple CPUs: ``kern.memorystatus_vm_pressure_level`` an
  int, 1 normal, 2 warning, 4 critical (xnu ``bsd/kern/kern_memorystatus_notify.c``: the
  handler returns ``convert_internal_pressure_level_to_dispatch_level()``, i.e.
  ``NOTE_MEMORYSTATUS_PRESSURE_*`` of ``bsd/sys/event_private.h``); ``hw.optional.arm64`` an
  int, 1 on Apple Silicon; ``hw.memsize`` a 64-bit integer; ``iogpu.wired_limit_mb`` an int, 0
  by default (macOS 14 and later; the sysctl belongs to Apple's closed IOGPU driver, so only its
  published use, ``sudo sysctl iogpu.wired_limit_mb=<MB>``, describes it).
* ``int proc_pid_rusage(int pid, int flavor, rusage_info_t *buffer)`` (:class:`FakeProcPidRusage`,
  xnu ``libsyscall/wrappers/libproc/libproc.h``; the kernel copies the structure out to
  ``buffer``): flavor ``RUSAGE_INFO_V2`` (2) fills a ``struct rusage_info_v2`` (xnu
  ``bsd/sys/resource.h``: ``uint8_t ri_uuid[16]`` then eighteen ``uint64_t``, from
  ``ri_user_time`` to ``ri_diskio_byteswritten``; ``ri_resident_size`` the seventh,
  ``ri_phys_footprint`` the eighth); 0 on success, else -1 with errno ESRCH for no such
  process. The bytes are written with :mod:`struct` from the header's list, not through the
  code's ctypes structure.
* pyobjc's ``Metal`` module (:class:`FakeMetal`): ``MTLCreateSystemDefaultDevice()`` gives the
  system's default ``MTLDevice`` (or nil), whose ``recommendedMaxWorkingSetSize`` is "an
  approximation of how much memory, in bytes, this GPU device can allocate without affecting
  its runtime performance" (uint64_t), a property that pyobjc calls as a method
  (https://developer.apple.com/documentation/metal/1433401-mtlcreatesystemdefaultdevice,
  https://developer.apple.com/documentation/metal/mtldevice/recommendedmaxworkingsetsize).
  Published sample: llama.cpp's ``ggml_metal_init`` logs ``recommendedMaxWorkingSetSize =
  11453.25 MB`` (bytes / 10^6) on a 16 GB Apple M1 Pro: two thirds of its RAM.
* libdispatch (:class:`FakeLibdispatch`, Apple's ``dispatch/source.h``,
  https://github.com/apple-oss-distributions/libdispatch/blob/main/dispatch/source.h):
  ``dispatch_source_create(DISPATCH_SOURCE_TYPE_MEMORYPRESSURE, 0, mask, queue)`` ("the handle
  is unused (pass zero for now)", the mask of ``DISPATCH_MEMORYPRESSURE_NORMAL`` 0x01, ``WARN``
  0x02, ``CRITICAL`` 0x04), ``dispatch_source_set_event_handler_f`` (a ``void (*)(void
  *context)``), ``dispatch_resume`` (a source is created inactive: no event before it),
  ``dispatch_source_get_data`` (for this type, the pressure level that fired),
  ``dispatch_source_cancel`` (no handler starts after it) and ``dispatch_release``. An event
  (:meth:`FakeLibdispatch.fire`) runs the handler on a thread of its own, as a global queue does.
"""

from __future__ import annotations

import ctypes
import errno
import struct
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

RUSAGE_INFO_V2 = 2
RUSAGE_V2 = struct.Struct("<16s18Q")  # struct rusage_info_v2, field by field
assert RUSAGE_V2.size == 160
INT, QUAD = 4, 8
GiB = 1 << 30
DISPATCH_MEMORYPRESSURE_NORMAL, DISPATCH_MEMORYPRESSURE_WARN, DISPATCH_MEMORYPRESSURE_CRITICAL = 0x01, 0x02, 0x04
SOURCE_TYPE_MEMORYPRESSURE = 0x7FF8_0000_1000  # the address of _dispatch_source_type_memorypressure, as the code takes it

# A 16 GB Apple Silicon Mac at rest (the sysctl values `sysctl` prints there).
M1_PRO_16GB = {"hw.optional.arm64": (INT, 1), "hw.memsize": (QUAD, 16 * GiB), "iogpu.wired_limit_mb": (INT, 0),
               "kern.memorystatus_vm_pressure_level": (INT, 1)}
M1_PRO_METAL_CAP = 11_453_250_000  # recommendedMaxWorkingSetSize, as llama.cpp logs it there (11453.25 MB)


def _out(pointer: Any) -> Any:
    return pointer._obj if hasattr(pointer, "_obj") else pointer


class FakeSysctl:
    """``sysctlbyname`` over ``values``: name -> (size in bytes, integer value)."""

    def __init__(self, values: dict[str, tuple[int, int]]) -> None:
        self.values = dict(values)
        self.calls: list[str] = []

    def __call__(self, name: bytes, oldp: Any, oldlenp: Any, newp: Any, newlen: int) -> int:
        key = name.decode("ascii")
        self.calls.append(key)
        if newp is not None or newlen:
            raise AssertionError("the reader only reads sysctls")
        if key not in self.values:
            ctypes.set_errno(errno.ENOENT)
            return -1
        size, value = self.values[key]
        length = _out(oldlenp)
        if length.value < size:
            ctypes.set_errno(errno.ENOMEM)
            return -1
        data = value.to_bytes(size, "little", signed=value < 0)
        ctypes.memmove(ctypes.addressof(_out(oldp)), data, size)
        length.value = size
        return 0


class FakeProcPidRusage:
    """``proc_pid_rusage`` over ``footprints`` (pid -> ri_phys_footprint; a callable giving
    that table at each call also works); RSS is reported as half the footprint, to tell the two
    apart."""

    def __init__(self, footprints: Any) -> None:
        self.footprints = footprints
        self.calls: list[tuple[int, int]] = []

    def __call__(self, pid: int, flavor: int, buffer: Any) -> int:
        self.calls.append((pid, flavor))
        table = self.footprints() if callable(self.footprints) else self.footprints
        if flavor != RUSAGE_INFO_V2:
            ctypes.set_errno(errno.EINVAL)
            return -1
        if pid not in table:
            ctypes.set_errno(errno.ESRCH)
            return -1
        footprint = table[pid]
        fields = [0] * 18
        fields[6] = footprint // 2  # ri_resident_size
        fields[7] = footprint  # ri_phys_footprint
        data = RUSAGE_V2.pack(b"\x11" * 16, *fields)
        ctypes.memmove(ctypes.addressof(_out(buffer)), data, RUSAGE_V2.size)
        return 0


class FakeMetal:
    """pyobjc's ``Metal`` module: a default device whose ``recommendedMaxWorkingSetSize()`` is
    ``working_set`` (None: no Metal device, as ``MTLCreateSystemDefaultDevice`` gives nil)."""

    def __init__(self, working_set: int | None) -> None:
        self.working_set = working_set
        self.devices_made = 0

    def MTLCreateSystemDefaultDevice(self) -> Any:  # noqa: N802 - Apple's names
        self.devices_made += 1
        if self.working_set is None:
            return None
        size = self.working_set
        return SimpleNamespace(recommendedMaxWorkingSetSize=lambda: size, hasUnifiedMemory=lambda: True)


@dataclass
class _Source:
    mask: int
    queue: int
    handler: Any = None
    resumed: bool = False
    cancelled: bool = False
    refs: int = 1
    data: int = 0
    threads: list[threading.Thread] = field(default_factory=list)


class FakeLibdispatch:
    """libdispatch's memory-pressure source; :meth:`fire` is the kernel changing the level."""

    DISPATCH_SOURCE_TYPE_MEMORYPRESSURE = SOURCE_TYPE_MEMORYPRESSURE

    def __init__(self) -> None:
        self.sources: dict[int, _Source] = {}
        self.misuse: list[str] = []
        self.handled: list[int] = []  # levels whose handler ran
        self._next = 0x6000_0000

    def dispatch_get_global_queue(self, identifier: int, flags: int) -> int:
        if flags != 0:
            self.misuse.append("dispatch_get_global_queue: flags are reserved, pass 0")
        return 0x5000_0000 + identifier

    def dispatch_source_create(self, source_type: int, handle: int, mask: int, queue: int) -> int | None:
        if source_type != SOURCE_TYPE_MEMORYPRESSURE:
            return None
        if handle != 0:
            self.misuse.append("the memory-pressure source's handle is unused: pass 0")
        if mask & ~0x37:
            return None
        self._next += 0x100
        self.sources[self._next] = _Source(mask=mask, queue=queue)
        return self._next

    def dispatch_source_set_event_handler_f(self, source: int, handler: Any) -> None:
        self.sources[source].handler = handler

    def dispatch_resume(self, source: int) -> None:
        self.sources[source].resumed = True

    def dispatch_source_get_data(self, source: int) -> int:
        return self.sources[source].data

    def dispatch_source_cancel(self, source: int) -> None:
        self.sources[source].cancelled = True

    def dispatch_release(self, source: int) -> None:
        record = self.sources[source]
        record.refs -= 1
        if record.refs < 0:
            self.misuse.append("dispatch_release of a released source")

    def live(self) -> list[_Source]:
        return [s for s in self.sources.values() if s.refs > 0]

    def fire(self, level: int) -> int:
        """The pressure level changes to ``level``: every active source whose mask has it runs
        its handler on a thread of its own (waited for); returns how many ran."""
        ran = 0
        for source in list(self.sources.values()):
            if not source.resumed or source.cancelled or not level & source.mask or source.handler is None:
                continue
            source.data = level
            thread = threading.Thread(target=source.handler, args=(None,), name="fake-dispatch-queue")
            thread.start()
            thread.join(5)
            self.handled.append(level)
            ran += 1
        return ran
