"""Windows' process layer (app/core/models/processes/windows.py), run here through a recording
fake of kernel32's job API (tests/fakes/kernel32.py, which cites the page each function
follows) and of ``asyncio.create_subprocess_exec``: a job object per server, made before it
starts and kill-on-close; the server in it at once; a stop that ends the whole tree; no console
windows; and what happens when each call fails.

The servers are real processes (small ``python -c`` scripts). Linux has no job objects, so
the fake spawn starts each server as the leader of a process group, and the fake job ends a
member by killing that group: the stand-in for "every process the server starts is in its job".
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.core.models.backend import BackendError, BackendProcess, BoundedLog
from app.core.models.processes import ProcessSetupError
from app.core.models.processes.windows import WindowsPlatform
from app.core.models.reaper import ProcessReaper
from tests.core.models.test_backend_faults import LEAVES_A_WORKER, _kill_quietly, _printed_pid, python_spec, wait_gone
from tests.fakes.kernel32 import (
    ERROR_ACCESS_DENIED,
    ERROR_INVALID_PARAMETER,
    ERROR_NO_SYSTEM_RESOURCES,
    EXTENDED_LIMIT_SIZE,
    JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
    PROCESS_SET_QUOTA,
    PROCESS_TERMINATE,
    FakeKernel32,
)

pytestmark = [pytest.mark.timeout(30),
              pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="runs real servers as process groups (Linux)")]

CREATE_NO_WINDOW = 0x08000000  # https://learn.microsoft.com/en-us/windows/win32/procthread/process-creation-flags
EXIT_CODE = 1

# A server that starts a worker (in its job) and runs until stopped.
SERVER_WITH_A_WORKER = r"""
import subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(f"worker-pid {worker.pid}", flush=True)
time.sleep(60)
"""


def _end_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class RecordingSpawn:
    """``asyncio.create_subprocess_exec`` as the backend calls it on Windows: records the
    keyword arguments (``creationflags``: Microsoft's "Process Creation Flags" page, above),
    then starts the process here without them, as a process-group leader (see the module
    docstring). Its start is recorded in the kernel32 fake's call list, so the order of the
    two is checked too."""

    def __init__(self, kernel32: FakeKernel32) -> None:
        self.kernel32 = kernel32
        self.calls: list[tuple[tuple[str, ...], dict[str, Any]]] = []
        self.pids: list[int] = []

    async def __call__(self, *argv: str, **kwargs: Any) -> asyncio.subprocess.Process:
        self.calls.append((argv, dict(kwargs)))
        assert "start_new_session" not in kwargs, "no POSIX session on Windows"
        kwargs.pop("creationflags", None)  # Linux's Popen refuses it
        proc = await asyncio.create_subprocess_exec(*argv, start_new_session=True, **kwargs)
        self.kernel32.calls.append(("spawn", (proc.pid,)))
        self.pids.append(proc.pid)
        return proc


@pytest.fixture
def windows():
    kernel32 = FakeKernel32(end_tree=_end_group)
    spawn = RecordingSpawn(kernel32)
    platform = WindowsPlatform(kernel32=kernel32, last_error=kernel32.last_error, spawn=spawn)
    yield platform, kernel32, spawn
    for pid in spawn.pids:
        _end_group(pid)


async def _start(platform: WindowsPlatform, source: str, tmp_path: Path) -> BackendProcess:
    return await BackendProcess.start(python_spec(source), BoundedLog(tmp_path / "m.log"), None, platform)


async def _printed(proc: BackendProcess, label: str) -> int:
    for _ in range(500):
        if any(line.startswith(label + " ") for line in proc.log.tail):
            return _printed_pid(proc, label)
        await asyncio.sleep(0.01)
    raise AssertionError(f"the server never printed {label}: {proc.log.tail_text()}")


def _args(kernel32: FakeKernel32, name: str) -> list[tuple[Any, ...]]:
    return [args for call, args in kernel32.calls if call == name]


async def test_a_stop_ends_the_whole_tree_through_its_job(windows, tmp_path):
    platform, kernel32, spawn = windows
    proc = await _start(platform, SERVER_WITH_A_WORKER, tmp_path)
    worker = await _printed(proc, "worker-pid")
    try:
        await asyncio.wait_for(proc.stop(5), 10)
        assert await wait_gone(worker, 3), "the server's worker outlived the stop"
    finally:
        _kill_quietly(worker)

    # The job before the server, the server in it right after it starts, then one
    # TerminateJobObject for the stop and one for what is left once it exited, then the handles.
    assert kernel32.names() == [
        "CreateJobObjectW", "SetInformationJobObject", "spawn", "OpenProcess", "AssignProcessToJobObject",
        "TerminateJobObject", "TerminateJobObject", "CloseHandle", "CloseHandle"]
    (attributes, name), = _args(kernel32, "CreateJobObjectW")
    assert attributes is None and name is None  # the handle cannot be inherited; nobody can open the job
    job = next(iter(kernel32.jobs))
    (set_job, info_class, _raw, size), = _args(kernel32, "SetInformationJobObject")
    assert (set_job, info_class, size) == (job, 9, EXTENDED_LIMIT_SIZE)
    assert kernel32.jobs[job].limit_flags == JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    assert _args(kernel32, "OpenProcess") == [(PROCESS_SET_QUOTA | PROCESS_TERMINATE, False, proc.pid)]
    process_handle = next(iter(kernel32.processes))
    assert _args(kernel32, "AssignProcessToJobObject") == [(job, process_handle)]
    assert kernel32.jobs[job].members == [proc.pid]  # the server, never Siesta
    assert _args(kernel32, "TerminateJobObject") == [(job, EXIT_CODE), (job, EXIT_CODE)]
    assert _args(kernel32, "CloseHandle") == [(process_handle,), (job,)]
    assert kernel32.open_handles() == [] and kernel32.misuse == []

    (_argv, kwargs), = spawn.calls
    assert kwargs["creationflags"] == CREATE_NO_WINDOW  # no console window for the server
    assert proc.returncode is not None


async def test_what_a_server_leaves_behind_is_ended_when_it_exits(windows, tmp_path):
    platform, kernel32, _spawn = windows
    proc = await _start(platform, LEAVES_A_WORKER, tmp_path)
    worker = None
    try:
        assert await asyncio.wait_for(proc.wait_exit(), 10) == 0
        worker = _printed_pid(proc, "worker-pid")
        assert await wait_gone(worker, 3), "the server's leftover worker is still running"
    finally:
        _kill_quietly(worker)
    assert kernel32.names()[-3:] == ["TerminateJobObject", "CloseHandle", "CloseHandle"]
    assert kernel32.open_handles() == [] and kernel32.misuse == []


async def test_when_siesta_dies_closing_its_handles_ends_the_job(windows):
    """What Windows does to a Siesta that is killed: it closes its handles. The job's only
    handle is Siesta's, so kill-on-close ends every process in it."""
    platform, kernel32, _spawn = windows
    tree = platform.new_tree()
    tree.adopt(4242)
    job = next(iter(kernel32.jobs))
    assert not kernel32.jobs[job].inheritable
    kernel32.CloseHandle(job)  # the process exits: the kernel closes this handle
    assert kernel32.ended == [4242]


async def test_no_job_object_no_server(windows, tmp_path):
    """CreateJobObjectW fails: the server is never started, and the error says why."""
    platform, kernel32, spawn = windows
    kernel32.fail["CreateJobObjectW"] = ERROR_NO_SYSTEM_RESOURCES
    log = BoundedLog(tmp_path / "m.log")
    with pytest.raises(BackendError) as info:
        await BackendProcess.start(python_spec("print('ran')"), log, None, platform)
    assert "CreateJobObjectW" in str(info.value) and f"Windows error {ERROR_NO_SYSTEM_RESOURCES}" in str(info.value)
    assert spawn.calls == [] and kernel32.names() == ["CreateJobObjectW"]
    assert "could not start" in log.tail_text()


async def test_a_job_that_would_not_end_with_siesta_is_closed_and_no_server_starts(windows, tmp_path):
    platform, kernel32, spawn = windows
    kernel32.fail["SetInformationJobObject"] = ERROR_INVALID_PARAMETER
    with pytest.raises(BackendError) as info:
        await BackendProcess.start(python_spec("print('ran')"), BoundedLog(tmp_path / "m.log"), None, platform)
    # the code is read before CloseHandle, which resets it (the fake does, as some functions do)
    assert f"SetInformationJobObject: Windows error {ERROR_INVALID_PARAMETER}" in str(info.value)
    assert kernel32.names() == ["CreateJobObjectW", "SetInformationJobObject", "CloseHandle"]
    assert spawn.calls == [] and kernel32.open_handles() == []


@pytest.mark.parametrize("failing", ["OpenProcess", "AssignProcessToJobObject"])
async def test_a_server_that_cannot_be_put_in_its_job_is_ended_at_once(windows, tmp_path, failing):
    """The server started but is not in the job: nothing would end what it starts, or end it
    when Siesta dies. It is ended at once (TerminateProcess through asyncio's kill: the job
    holds nothing), the load fails saying why, and no handle stays open."""
    platform, kernel32, spawn = windows
    kernel32.fail[failing] = ERROR_ACCESS_DENIED
    with pytest.raises(BackendError) as info:
        await _start(platform, SERVER_WITH_A_WORKER, tmp_path)
    message = str(info.value)
    assert f"{failing}: Windows error {ERROR_ACCESS_DENIED}" in message and "it was stopped" in message
    (pid,) = spawn.pids
    assert await wait_gone(pid, 3), "the server outside its job is still running"
    expected = ["CreateJobObjectW", "SetInformationJobObject", "spawn", "OpenProcess"]
    if failing == "AssignProcessToJobObject":
        expected += ["AssignProcessToJobObject", "CloseHandle"]  # the process handle, then the job (below)
    assert kernel32.names() == expected + ["TerminateJobObject", "CloseHandle"]
    assert kernel32.ended == []  # the empty job ended nothing: the server was ended by itself
    assert kernel32.open_handles() == [] and kernel32.misuse == []
    assert "stopping it" in (tmp_path / "m.log").read_text()


async def test_siesta_itself_is_never_put_in_a_kill_on_close_job(windows):
    platform, kernel32, _spawn = windows
    tree = platform.new_tree()
    with pytest.raises(ProcessSetupError):
        tree.adopt(os.getpid())
    assert "OpenProcess" not in kernel32.names()
    tree.release()
    assert kernel32.open_handles() == []


async def test_if_the_job_cannot_be_ended_the_server_is(windows, tmp_path, caplog):
    """TerminateJobObject fails (it should not: Siesta holds the job with all access): the
    server is ended alone with TerminateProcess, so a stop never hangs; Siesta's log says so."""
    platform, kernel32, _spawn = windows
    proc = await _start(platform, SERVER_WITH_A_WORKER, tmp_path)
    worker = await _printed(proc, "worker-pid")
    kernel32.fail["TerminateJobObject"] = ERROR_ACCESS_DENIED
    try:
        with caplog.at_level(logging.WARNING):
            await asyncio.wait_for(proc.stop(5), 10)
    finally:
        _kill_quietly(worker)
    names = kernel32.names()
    assert names[names.index("TerminateJobObject") + 1] == "TerminateProcess"
    process_handle = next(iter(kernel32.processes))
    assert _args(kernel32, "TerminateProcess")[0] == (process_handle, EXIT_CODE)
    assert any("TerminateJobObject failed" in r.getMessage() for r in caplog.records)
    assert kernel32.open_handles() == []


def test_no_watchdog_runs_on_windows():
    """The jobs end the servers when Siesta dies; no helper process is started."""
    kernel32 = FakeKernel32()
    started = []
    reaper = ProcessReaper(WindowsPlatform(kernel32=kernel32, popen=lambda *a, **k: started.append(a)))
    reaper.add(4242)
    reaper.remove(4242)
    assert started == [] and reaper.pid is None
    reaper.close()
    assert kernel32.calls == []


async def test_without_kernel32_no_server_starts(tmp_path):
    """Here there is no kernel32 to load: the same path as a Windows that refuses the job."""
    spawned = []

    async def spawn(*argv: str, **kwargs: Any) -> None:
        spawned.append(argv)

    with pytest.raises(BackendError, match="kernel32"):
        await BackendProcess.start(python_spec("pass"), BoundedLog(tmp_path / "m.log"), None,
                                   WindowsPlatform(spawn=spawn))
    assert spawned == []


def test_no_child_gets_a_console_window_or_a_posix_session():
    platform = WindowsPlatform(kernel32=FakeKernel32())
    assert platform.new_tree().spawn_options() == {"creationflags": CREATE_NO_WINDOW}
    assert platform.watchdog_options() == {"creationflags": CREATE_NO_WINDOW}
    if sys.platform == "win32":
        assert subprocess.CREATE_NO_WINDOW == CREATE_NO_WINDOW
