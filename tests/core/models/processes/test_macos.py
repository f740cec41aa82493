"""macOS's process layer (app/core/models/processes/macos.py), run here: process groups as on
Linux, and the watchdog's pid-reuse check from libproc's ``proc_pidinfo(PROC_PIDTBSDINFO)``
instead of ``/proc``, through a fake of ``proc_pidinfo`` (tests/fakes/libproc.py, which lays
out ``struct proc_bsdinfo`` from Apple's header) and a recording fake of ``subprocess.Popen``.
"""

from __future__ import annotations

import ctypes
import io
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from app.core.models.processes.base import define_start_time
from app.core.models.processes.macos import MACOS_START_TIME_SOURCE, PROC_PIDTBSDINFO_SIZE, MacPlatform
from app.core.models.processes.posix import WATCHDOG_LOOP, GroupTree
from app.core.models.reaper import ProcessReaper
from tests.fakes.libproc import BSDINFO, PROC_PIDTBSDINFO, FakeProcPidinfo

STARTED = (1_700_000_000, 123_456)


def test_a_start_time_is_read_from_proc_pidinfo_to_the_microsecond():
    proc_pidinfo = FakeProcPidinfo({4242: STARTED, 4243: (1_700_000_000, 123_457)})
    platform = MacPlatform(proc_pidinfo=proc_pidinfo)
    assert platform.start_time(4242) == "1700000000.123456"
    assert platform.start_time(4243) == "1700000000.123457"  # a pid reused within the same second differs
    assert proc_pidinfo.calls[0] == (4242, PROC_PIDTBSDINFO, 0, BSDINFO.size)


def test_no_such_process_has_no_start_time():
    """proc_pidinfo returns 0 (libproc.c: the system call failed): None, as /proc's absence on Linux."""
    assert MacPlatform(proc_pidinfo=FakeProcPidinfo({})).start_time(4242) is None


def test_a_short_or_failed_answer_has_no_start_time():
    def short(pid: int, flavor: int, arg: int, buffer: Any, size: int) -> int:
        return 64  # fewer bytes than a proc_bsdinfo: the start fields were not filled

    def broken(pid: int, flavor: int, arg: int, buffer: Any, size: int) -> int:
        raise ctypes.ArgumentError("bad argument")

    assert MacPlatform(proc_pidinfo=short).start_time(4242) is None
    assert MacPlatform(proc_pidinfo=broken).start_time(4242) is None


def test_the_structure_is_apples_proc_bsdinfo():
    """136 bytes (PROC_PIDTBSDINFO_SIZE), the start fields at 120 and 128, as the header lays them out."""
    namespace: dict[str, Any] = {}
    exec(compile(MACOS_START_TIME_SOURCE, "<macos>", "exec"), namespace)
    info = namespace["_ProcBSDInfo"]
    assert ctypes.sizeof(info) == PROC_PIDTBSDINFO_SIZE == BSDINFO.size
    assert (info.pbi_start_tvsec.offset, info.pbi_start_tvusec.offset) == (120, 128)
    assert (info.pbi_comm.offset, info.pbi_name.offset, info.pbi_nice.offset) == (48, 64, 116)


class RecordingPopen:
    """``subprocess.Popen`` as the reaper calls it: records the command line and keyword
    arguments, and gives a process whose stdin is kept in memory."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, Any]]] = []
        self.stdin = io.StringIO()

    def __call__(self, argv: list[str], **kwargs: Any) -> Any:
        self.calls.append((argv, kwargs))
        recorder = self

        class Process:
            pid = 777
            stdin = recorder.stdin

            def wait(self, timeout: float | None = None) -> int:
                return 0

            def kill(self) -> None:
                pass

        return Process()


def test_the_watchdog_runs_without_proc_and_registers_the_libproc_start_time():
    popen = RecordingPopen()
    reaper = ProcessReaper(MacPlatform(proc_pidinfo=FakeProcPidinfo({4242: STARTED}), popen=popen))
    (argv, kwargs), = popen.calls
    assert argv[:4] == [sys.executable, "-I", "-S", "-c"]  # no site-packages: no psutil there
    source = argv[4]
    assert source == MACOS_START_TIME_SOURCE + WATCHDOG_LOOP
    assert "/proc/" not in source and "proc_pidinfo" in source
    compile(source, "<watchdog>", "exec")
    assert kwargs["start_new_session"] is True and kwargs["close_fds"] is True  # out of Siesta's terminal
    assert "creationflags" not in kwargs
    reaper.add(4242)
    reaper.remove(4242)
    assert popen.stdin.getvalue() == "+4242 1700000000.123456\n-4242\n"


def test_the_watchdog_and_siesta_run_the_same_start_time_code():
    proc_pidinfo = FakeProcPidinfo({4242: STARTED})
    in_the_watchdog = define_start_time(MACOS_START_TIME_SOURCE)
    in_siesta = MacPlatform(proc_pidinfo=proc_pidinfo).start_time(4242)
    assert in_the_watchdog(4242, proc_pidinfo) == in_siesta == "1700000000.123456"  # type: ignore[call-arg]


def test_servers_run_in_process_groups_as_on_linux():
    tree = MacPlatform().new_tree()
    assert isinstance(tree, GroupTree)
    assert tree.spawn_options() == {"start_new_session": True}


@pytest.mark.timeout(30)
@pytest.mark.skipif(os.name != "posix", reason="the watchdog kills process groups (POSIX)")
def test_the_macos_watchdog_runs_as_python_dash_i_dash_s_and_kills_a_registered_group():
    """The macOS watchdog's own text, run here under ``python -I -S``: ctypes imports, libproc
    is not found (this is not a Mac), so no start time can be told and the group is killed,
    as the watchdog did on macOS before it had a check."""
    reaper = ProcessReaper(MacPlatform())
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        reaper.add(server.pid)
        reaper.close()
        assert server.wait(timeout=5) == -signal.SIGKILL
    finally:
        server.kill()
        server.wait()
