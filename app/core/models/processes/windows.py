"""Windows: each model server and everything it starts in a job object of its own.

Windows has no process groups, and a windowless server has no console to send CTRL_BREAK
to. So each server gets a job object (https://learn.microsoft.com/en-us/windows/win32/procthread/job-objects):

* **Made before the server starts** (``CreateJobObjectW`` with no security attributes, so
  its handle cannot be inherited: only Siesta holds it; no name, so nobody can open it),
  with ``JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`` set through ``SetInformationJobObject`` and a
  ``JOBOBJECT_EXTENDED_LIMIT_INFORMATION``. If either fails the server is not started: a
  clear error, and nothing left running.
* **The server is assigned at once** after it starts: ``OpenProcess`` with
  ``PROCESS_SET_QUOTA | PROCESS_TERMINATE`` (what ``AssignProcessToJobObject`` needs), then
  ``AssignProcessToJobObject``. Every process it starts from then on is in the job too (the
  job allows no breakaway). If the assignment fails the server runs outside any job: the
  caller ends it at once (``TerminateProcess``) and the load fails with the reason.
* **Stop** (after the requests in flight have drained, as on every OS) is
  ``TerminateJobObject``: the whole tree, at once. Once the server has exited, whatever it
  left is ended the same way and the handles are closed.
* **If Siesta dies**, however it dies, Windows closes its handles, the job's last handle
  with them, and kill-on-close ends every process in the job. So no watchdog runs on Windows.
* **Siesta itself is never put in a job** (``adopt`` refuses its own pid): the editor and
  browser it opens would die with it.

**The instant before the assignment.** asyncio starts the server running (no
``CREATE_SUSPENDED``: it hands back no thread handle to resume it with), so there is a
moment in which the server runs outside the job: from ``CreateProcess`` until asyncio has
connected its pipes and handed it back (a turn or two of the event loop, normally well under
a millisecond), and ``AssignProcessToJobObject``, the next thing Siesta does. A process the
server starts in that moment is not in the job (a job takes in only the children of processes
already in it): it is neither stopped with the server nor ended when Siesta dies; it lives on
as if it had broken away, like a POSIX child that leaves its process group. llama-server
starts no process at all; a ``command`` backend (a script or launcher) is still loading its
interpreter at that point, so in practice nothing is started in that moment, but nothing
forbids it.

**ctypes, not pywin32.** Seven kernel32 calls with documented C signatures are all this needs,
and ctypes is in the standard library. pywin32 would be a Windows-only dependency of several
megabytes, with DLLs of its own (pywintypes, pythoncom) for PyInstaller to bundle, for the
same calls; and a fake of ``win32job`` would check pywin32's wrapper, whereas the fake of
kernel32 (``tests/fakes/kernel32.py``) follows Microsoft's pages for these functions and
structures one by one, and reads the structure's bytes at the documented offsets.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any

from app.core.models.processes.base import ProcessSetupError
from app.core.spawn import child_options

__all__ = ["EXIT_CODE", "JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE", "JOBOBJECT_EXTENDED_LIMIT_INFORMATION",
           "JobObjectExtendedLimitInformation", "JobTree", "PROCESS_SET_QUOTA", "PROCESS_TERMINATE",
           "WindowsPlatform"]

log = logging.getLogger(__name__)

JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x00002000
JobObjectExtendedLimitInformation = 9  # JOBOBJECTINFOCLASS
PROCESS_TERMINATE = 0x0001
PROCESS_SET_QUOTA = 0x0100
EXIT_CODE = 1  # what a stopped server exits with: the code Python's Popen.kill() gives on Windows


class IO_COUNTERS(ctypes.Structure):  # noqa: N801 - Windows' names
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "ReadOperationCount", "WriteOperationCount", "OtherOperationCount",
        "ReadTransferCount", "WriteTransferCount", "OtherTransferCount")]


class JOBOBJECT_BASIC_LIMIT_INFORMATION(ctypes.Structure):  # noqa: N801
    _fields_ = [
        ("PerProcessUserTimeLimit", ctypes.c_int64),  # LARGE_INTEGER
        ("PerJobUserTimeLimit", ctypes.c_int64),
        ("LimitFlags", ctypes.c_uint32),  # DWORD
        ("MinimumWorkingSetSize", ctypes.c_size_t),  # SIZE_T
        ("MaximumWorkingSetSize", ctypes.c_size_t),
        ("ActiveProcessLimit", ctypes.c_uint32),
        ("Affinity", ctypes.c_size_t),  # ULONG_PTR
        ("PriorityClass", ctypes.c_uint32),
        ("SchedulingClass", ctypes.c_uint32),
    ]


class JOBOBJECT_EXTENDED_LIMIT_INFORMATION(ctypes.Structure):  # noqa: N801
    _fields_ = [
        ("BasicLimitInformation", JOBOBJECT_BASIC_LIMIT_INFORMATION),
        ("IoInfo", IO_COUNTERS),
        ("ProcessMemoryLimit", ctypes.c_size_t),
        ("JobMemoryLimit", ctypes.c_size_t),
        ("PeakProcessMemoryUsed", ctypes.c_size_t),
        ("PeakJobMemoryUsed", ctypes.c_size_t),
    ]


def load_kernel32() -> Any:
    """kernel32 with the prototypes used here, in an instance of its own (setting restype on
    the shared ``ctypes.windll.kernel32`` would change it for every other user)."""
    dll = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    handle, boolean, dword = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32
    prototypes = {
        "CreateJobObjectW": (handle, [ctypes.c_void_p, ctypes.c_wchar_p]),
        "SetInformationJobObject": (boolean, [handle, ctypes.c_int, ctypes.c_void_p, dword]),
        "OpenProcess": (handle, [dword, boolean, dword]),
        "AssignProcessToJobObject": (boolean, [handle, handle]),
        "TerminateJobObject": (boolean, [handle, ctypes.c_uint]),
        "TerminateProcess": (boolean, [handle, ctypes.c_uint]),
        "CloseHandle": (boolean, [handle]),
    }
    for name, (restype, argtypes) in prototypes.items():
        function = getattr(dll, name)
        function.restype, function.argtypes = restype, argtypes
    return dll


def _describe(code: int) -> str:
    format_error = getattr(ctypes, "FormatError", None)  # Windows only
    text = format_error(code).strip() if format_error is not None and code else ""
    return f"Windows error {code}" + (f": {text}" if text else "")


class JobTree:
    """One server's job object, made (and configured) on construction."""

    def __init__(self, kernel32: Any, last_error: Callable[[], int]) -> None:
        self._k = kernel32
        self._last_error = last_error
        self._leader: Any = None  # the server's process handle, kept to end it if the job cannot be
        job = kernel32.CreateJobObjectW(None, None)
        if not job:
            raise ProcessSetupError(f"cannot create a job object for the server (CreateJobObjectW: "
                                    f"{_describe(last_error())})")
        limits = JOBOBJECT_EXTENDED_LIMIT_INFORMATION()
        limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        if not kernel32.SetInformationJobObject(job, JobObjectExtendedLimitInformation, ctypes.byref(limits),
                                                ctypes.sizeof(limits)):
            reason = _describe(last_error())  # before CloseHandle, which may change it
            kernel32.CloseHandle(job)
            raise ProcessSetupError(f"cannot make the server's job end its processes when Siesta exits "
                                    f"(SetInformationJobObject: {reason})")
        self._job: Any = job

    def spawn_options(self) -> dict[str, Any]:
        return child_options(own_session=True, windows=True)

    def adopt(self, pid: int) -> None:
        if pid == os.getpid():
            raise ProcessSetupError("refusing to put Siesta itself in a kill-on-close job")
        if self._job is None:
            raise ProcessSetupError("the server's job object is already closed")
        process = self._k.OpenProcess(PROCESS_SET_QUOTA | PROCESS_TERMINATE, False, pid)
        if not process:
            raise ProcessSetupError(f"cannot open the server (pid {pid}) to put it in its job "
                                    f"(OpenProcess: {_describe(self._last_error())})")
        if not self._k.AssignProcessToJobObject(self._job, process):
            reason = _describe(self._last_error())
            self._k.CloseHandle(process)
            raise ProcessSetupError(f"cannot put the server (pid {pid}) in its job object "
                                    f"(AssignProcessToJobObject: {reason})")
        self._leader = process

    def _end_all(self) -> None:
        if self._job is None:
            return
        if self._k.TerminateJobObject(self._job, EXIT_CODE):
            return
        reason = _describe(self._last_error())
        log.warning("TerminateJobObject failed (%s); ending the server process alone", reason)
        if self._leader is not None:
            self._k.TerminateProcess(self._leader, EXIT_CODE)

    def terminate(self) -> None:
        self._end_all()  # no console, so no CTRL_BREAK: the tree ends at once

    def kill(self) -> None:
        self._end_all()

    def release(self) -> None:
        if self._job is None:
            return
        self._end_all()  # whatever the server left running
        if self._leader is not None:
            self._k.CloseHandle(self._leader)
            self._leader = None
        self._k.CloseHandle(self._job)
        self._job = None


class WindowsPlatform:
    """Windows: a kill-on-close job object per server, no watchdog, no console windows."""

    name = "windows"
    watchdog_source: str | None = None  # the jobs end the servers when Siesta's handles close

    def __init__(self, kernel32: Any = None, last_error: Callable[[], int] | None = None,
                 spawn: Callable[..., Awaitable[asyncio.subprocess.Process]] | None = None,
                 popen: Callable[..., subprocess.Popen[Any]] | None = None) -> None:
        self._kernel32 = kernel32  # loaded at the first server when not given (tests give a fake)
        self._last_error = last_error or getattr(ctypes, "get_last_error", lambda: 0)
        self.spawn = spawn or asyncio.create_subprocess_exec
        self.popen = popen or subprocess.Popen

    def new_tree(self) -> JobTree:
        if self._kernel32 is None:
            try:
                self._kernel32 = load_kernel32()
            except (OSError, AttributeError) as exc:
                raise ProcessSetupError(f"cannot load kernel32 for job objects: {exc}") from exc
        return JobTree(self._kernel32, self._last_error)

    def start_time(self, pid: int) -> str | None:
        return None  # no watchdog asks

    def watchdog_options(self) -> dict[str, Any]:
        return child_options(windows=True)
