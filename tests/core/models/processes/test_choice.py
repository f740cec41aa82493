"""The process layer's choice of OS module (app/core/models/processes/__init__.py), made once at
start-up, and the Linux module's watchdog and options as they were before the layer existed.
The Linux behaviour itself (groups, SIGTERM then SIGKILL, the /proc pid-reuse check) is tested
with real processes in tests/core/models/test_backend_faults.py."""

from __future__ import annotations

import io
import sys
from typing import Any

import pytest

from app.core.models import processes
from app.core.models.processes.macos import MacPlatform
from app.core.models.processes.posix import LINUX_START_TIME_SOURCE, WATCHDOG_LOOP, GroupTree, PosixPlatform
from app.core.models.processes.windows import WindowsPlatform
from app.core.models.reaper import ProcessReaper


@pytest.mark.parametrize(("system", "kind"), [("linux", PosixPlatform), ("freebsd14", PosixPlatform),
                                              ("darwin", MacPlatform), ("win32", WindowsPlatform)])
def test_each_os_gets_its_module(system: str, kind: type) -> None:
    platform = processes.platform_for(system)
    assert type(platform) is kind


def test_this_machine_got_the_right_one_once() -> None:
    expected = {"win32": "windows", "darwin": "macos"}.get(sys.platform, "posix")
    assert processes.PLATFORM.name == expected
    from app.core.models import backend, reaper
    assert backend.PLATFORM is reaper.PLATFORM is processes.PLATFORM


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_linux_start_time_is_field_22_of_proc_stat() -> None:
    import os

    with open(f"/proc/{os.getpid()}/stat", "rb") as fh:
        data = fh.read()
    expected = data[data.rindex(b")") + 2:].split()[19].decode()
    assert PosixPlatform().start_time(os.getpid()) == expected
    assert PosixPlatform().start_time(2**22 + 1) is None  # beyond pid_max: no such process


def test_the_linux_watchdog_is_the_one_it_always_was() -> None:
    started: list[tuple[list[str], dict[str, Any]]] = []

    class Process:
        pid = 1
        stdin = io.StringIO()

        def wait(self, timeout: float | None = None) -> int:
            return 0

    def popen(argv: list[str], **kwargs: Any) -> Process:
        started.append((argv, kwargs))
        return Process()

    reaper = ProcessReaper(PosixPlatform(popen=popen))
    (argv, kwargs), = started
    assert argv == [sys.executable, "-I", "-S", "-c", LINUX_START_TIME_SOURCE + WATCHDOG_LOOP]
    assert kwargs == {"stdin": -1, "stdout": -3, "stderr": -3, "text": True, "bufsize": 1, "close_fds": True,
                      "start_new_session": True}
    reaper.close()


def test_a_linux_server_leads_a_session_of_its_own() -> None:
    tree = PosixPlatform().new_tree()
    assert isinstance(tree, GroupTree)
    assert tree.spawn_options() == {"start_new_session": True}
    tree.terminate()  # not started yet: nothing to signal, nothing raised
    tree.release()
