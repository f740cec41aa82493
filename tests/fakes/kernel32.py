"""A recording fake of the kernel32 job-object API, so that app/core/models/processes/windows.py
runs here, on Linux, through the same calls it makes on Windows.

Every function takes the arguments of its C signature, returns what Microsoft's page says it
returns (a handle, or a nonzero BOOL; NULL/0 on failure with the reason for GetLastError),
records ``(name, args)`` in :attr:`FakeKernel32.calls`, and checks what the page requires:

* CreateJobObjectW(lpJobAttributes, lpName): NULL attributes give a handle that cannot be
  inherited; NULL name, a job nobody else can open.
  https://learn.microsoft.com/en-us/windows/win32/api/jobapi2/nf-jobapi2-createjobobjectw
* SetInformationJobObject(hJob, JobObjectInformationClass, lpJobObjectInformation, cbJobObjectInformationLength):
  class 9 is JobObjectExtendedLimitInformation, whose buffer is a JOBOBJECT_EXTENDED_LIMIT_INFORMATION;
  LimitFlags is read from the bytes passed, at its offset in the documented layout (two
  LARGE_INTEGERs, then the DWORD), not through the code's own ctypes structure.
  https://learn.microsoft.com/en-us/windows/win32/api/jobapi2/nf-jobapi2-setinformationjobobject
  https://learn.microsoft.com/en-us/windows/win32/api/winnt/ns-winnt-jobobject_extended_limit_information
  https://learn.microsoft.com/en-us/windows/win32/api/winnt/ns-winnt-jobobject_basic_limit_information
* OpenProcess(dwDesiredAccess, bInheritHandle, dwProcessId).
  https://learn.microsoft.com/en-us/windows/win32/api/processthreadsapi/nf-processthreadsapi-openprocess
  https://learn.microsoft.com/en-us/windows/win32/procthread/process-security-and-access-rights
* AssignProcessToJobObject(hJob, hProcess): the process handle needs PROCESS_SET_QUOTA and
  PROCESS_TERMINATE, else ERROR_ACCESS_DENIED.
  https://learn.microsoft.com/en-us/windows/win32/api/jobapi2/nf-jobapi2-assignprocesstojobobject
* TerminateJobObject(hJob, uExitCode): ends every process in the job.
  https://learn.microsoft.com/en-us/windows/win32/api/jobapi2/nf-jobapi2-terminatejobobject
* TerminateProcess(hProcess, uExitCode).
  https://learn.microsoft.com/en-us/windows/win32/api/processthreadsapi/nf-processthreadsapi-terminateprocess
* CloseHandle(hObject): closing a closed handle fails with ERROR_INVALID_HANDLE (recorded as a
  misuse); closing the last handle of a job with JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE ends its
  processes ("Job Objects", https://learn.microsoft.com/en-us/windows/win32/procthread/job-objects).

A process "in the job" is ended through ``end_tree(pid)``: by default only recorded; tests
that run real processes start the server as a process-group leader and pass a function that
kills the group, which stands in for "every process the server started is in its job".
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ERROR_ACCESS_DENIED = 5
ERROR_INVALID_HANDLE = 6
ERROR_INVALID_PARAMETER = 87
ERROR_NO_SYSTEM_RESOURCES = 1450

JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x00002000
JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS = 9
PROCESS_TERMINATE = 0x0001
PROCESS_SET_QUOTA = 0x0100
# sizeof(JOBOBJECT_EXTENDED_LIMIT_INFORMATION) by the documented layout: the basic limits
# (LARGE_INTEGER x2, DWORD, SIZE_T x2, DWORD, ULONG_PTR, DWORD x2, padded to 8), IO_COUNTERS
# (six ULONGLONG), four SIZE_T.
EXTENDED_LIMIT_SIZE = 144 if ctypes.sizeof(ctypes.c_void_p) == 8 else 112
LIMIT_FLAGS_OFFSET = 16


@dataclass
class FakeJob:
    handle: int
    inheritable: bool
    limit_flags: int = 0
    members: list[int] = field(default_factory=list)  # pids assigned to it
    open: bool = True


@dataclass
class FakeProcessHandle:
    handle: int
    pid: int
    access: int
    open: bool = True


class FakeKernel32:
    """kernel32's job functions, recorded. ``fail[name] = code`` makes ``name`` fail with ``code``."""

    def __init__(self, end_tree: Callable[[int], None] | None = None) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.fail: dict[str, int] = {}
        self.jobs: dict[int, FakeJob] = {}
        self.processes: dict[int, FakeProcessHandle] = {}
        self.ended: list[int] = []  # pids ended, in order (TerminateJobObject, kill-on-close, TerminateProcess)
        self.misuse: list[str] = []  # calls the documentation says are wrong
        self._end_tree = end_tree or (lambda pid: None)
        self._last_error = 0
        self._next = 0x100

    # ---- helpers -----------------------------------------------------------------------

    def last_error(self) -> int:
        """GetLastError(): the code of the last failed call (a later successful CloseHandle sets 0,
        as some functions do, so the code must be read before any other call)."""
        return self._last_error

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def _failed(self, name: str) -> bool:
        if name in self.fail:
            self._last_error = self.fail[name]
            return True
        return False

    def _handle(self) -> int:
        self._next += 4
        return self._next

    def _end(self, job: FakeJob) -> None:
        for pid in job.members:
            self.ended.append(pid)
            self._end_tree(pid)

    # ---- the API -----------------------------------------------------------------------

    def CreateJobObjectW(self, attributes: Any, name: Any) -> int | None:
        self.calls.append(("CreateJobObjectW", (attributes, name)))
        if self._failed("CreateJobObjectW"):
            return None
        handle = self._handle()
        self.jobs[handle] = FakeJob(handle, inheritable=attributes is not None)
        if name is not None:
            self.misuse.append("a named job can be opened by other programs")
        return handle

    def SetInformationJobObject(self, job: int, info_class: int, info: Any, size: int) -> int:
        raw = bytes(info._obj) if hasattr(info, "_obj") else bytes(info)  # ctypes.byref(structure)
        self.calls.append(("SetInformationJobObject", (job, info_class, raw, size)))
        if self._failed("SetInformationJobObject"):
            return 0
        record = self.jobs.get(job)
        if record is None or not record.open:
            self._last_error = ERROR_INVALID_HANDLE
            return 0
        if info_class != JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS or size != EXTENDED_LIMIT_SIZE or len(raw) < size:
            self._last_error = ERROR_INVALID_PARAMETER
            self.misuse.append(f"SetInformationJobObject class {info_class} with {size} bytes")
            return 0
        record.limit_flags = struct.unpack_from("<I", raw, LIMIT_FLAGS_OFFSET)[0]
        return 1

    def OpenProcess(self, access: int, inherit: Any, pid: int) -> int | None:
        self.calls.append(("OpenProcess", (access, inherit, pid)))
        if self._failed("OpenProcess"):
            return None
        if inherit:
            self.misuse.append("an inheritable process handle")
        handle = self._handle()
        self.processes[handle] = FakeProcessHandle(handle, pid, access)
        return handle

    def AssignProcessToJobObject(self, job: int, process: int) -> int:
        self.calls.append(("AssignProcessToJobObject", (job, process)))
        if self._failed("AssignProcessToJobObject"):
            return 0
        record, proc = self.jobs.get(job), self.processes.get(process)
        if record is None or proc is None or not record.open or not proc.open:
            self._last_error = ERROR_INVALID_HANDLE
            return 0
        if proc.access & (PROCESS_SET_QUOTA | PROCESS_TERMINATE) != PROCESS_SET_QUOTA | PROCESS_TERMINATE:
            self._last_error = ERROR_ACCESS_DENIED
            return 0
        record.members.append(proc.pid)
        return 1

    def TerminateJobObject(self, job: int, exit_code: int) -> int:
        self.calls.append(("TerminateJobObject", (job, exit_code)))
        if self._failed("TerminateJobObject"):
            return 0
        record = self.jobs.get(job)
        if record is None or not record.open:
            self._last_error = ERROR_INVALID_HANDLE
            return 0
        self._end(record)
        return 1

    def TerminateProcess(self, process: int, exit_code: int) -> int:
        self.calls.append(("TerminateProcess", (process, exit_code)))
        if self._failed("TerminateProcess"):
            return 0
        proc = self.processes.get(process)
        if proc is None or not proc.open:
            self._last_error = ERROR_INVALID_HANDLE
            return 0
        self.ended.append(proc.pid)
        self._end_tree(proc.pid)
        return 1

    def CloseHandle(self, handle: int) -> int:
        self.calls.append(("CloseHandle", (handle,)))
        record = self.jobs.get(handle) or self.processes.get(handle)
        if record is None or not record.open:
            self.misuse.append(f"CloseHandle of a handle that is not open: {handle:#x}")
            self._last_error = ERROR_INVALID_HANDLE
            return 0
        record.open = False
        if isinstance(record, FakeJob) and record.limit_flags & JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE:
            self._end(record)  # its last handle: only Siesta ever had one
        self._last_error = 0
        return 1

    def open_handles(self) -> list[int]:
        return [h for h, r in {**self.jobs, **self.processes}.items() if r.open]
