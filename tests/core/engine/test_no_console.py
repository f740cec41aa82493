"""On Windows no engine step opens a console window: ``llama-server --version`` (async and sync,
in locate.py), the install's smoke test (install.py) and the source build's version check and
steps (build.py) all pass ``CREATE_NO_WINDOW``. Run here through recording fakes of
``subprocess.run``, ``subprocess.Popen`` and ``asyncio.create_subprocess_exec`` with
app/core/spawn.py answering for Windows. The fakes record the keyword arguments the calls get,
``creationflags`` among them, as Python's subprocess documents them
(https://docs.python.org/3/library/subprocess.html#subprocess.CREATE_NO_WINDOW; the value is
Microsoft's, https://learn.microsoft.com/en-us/windows/win32/procthread/process-creation-flags).
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.core import spawn
from app.core.engine import build, install, locate

CREATE_NO_WINDOW = 0x08000000
VERSION_OUTPUT = b"version: 4321 (abcdef0)\nbuilt with cc\n"


@pytest.fixture
def on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spawn, "WINDOWS", True)


@pytest.fixture
def binary(tmp_path: Path) -> Path:
    path = tmp_path / "llama-server.exe"
    path.write_bytes(b"not run: the fakes answer")
    return path


class RecordingRun:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, Any]]] = []

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        self.calls.append((argv, kwargs))
        return subprocess.CompletedProcess(argv, 0, VERSION_OUTPUT, None)


def test_the_sync_version_run_has_no_console(on_windows, binary, monkeypatch) -> None:
    run = RecordingRun()
    monkeypatch.setattr(subprocess, "run", run)
    version = locate.llama_server_version_sync(binary)
    assert "4321" in str(version)
    (argv, kwargs), = run.calls
    assert argv == [str(binary), "--version"] and kwargs["creationflags"] == CREATE_NO_WINDOW


async def test_the_async_version_run_has_no_console(on_windows, binary, monkeypatch) -> None:
    calls: list[dict[str, Any]] = []

    class Process:
        returncode = 0

        async def communicate(self) -> tuple[bytes, None]:
            return VERSION_OUTPUT, None

    async def create_subprocess_exec(*argv: str, **kwargs: Any) -> Process:
        calls.append(kwargs)
        return Process()

    monkeypatch.setattr(asyncio, "create_subprocess_exec", create_subprocess_exec)
    await locate.llama_server_version(binary)
    (kwargs,) = calls
    assert kwargs["creationflags"] == CREATE_NO_WINDOW and "start_new_session" not in kwargs


def test_the_install_smoke_test_has_no_console(on_windows, binary, monkeypatch) -> None:
    run = RecordingRun()
    monkeypatch.setattr(subprocess, "run", run)
    assert install._smoke_test(binary) == "4321 (abcdef0)"
    (_argv, kwargs), = run.calls
    assert kwargs["creationflags"] == CREATE_NO_WINDOW and kwargs["cwd"] == binary.parent


def test_the_source_build_has_no_console(on_windows, binary, tmp_path, monkeypatch) -> None:
    run = RecordingRun()
    monkeypatch.setattr(subprocess, "run", run)
    assert build.answers_version(binary)
    assert run.calls[0][1]["creationflags"] == CREATE_NO_WINDOW

    steps: list[tuple[list[str], dict[str, Any]]] = []

    def popen(argv: list[str], **kwargs: Any) -> Any:
        steps.append((argv, kwargs))
        raise OSError("stopped here: the first step is enough")

    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setattr(build, "answers_version", lambda path: False)
    with pytest.raises(OSError, match="stopped here"):
        build.build_llama_server(tmp_path / "dest")
    (argv, kwargs), = steps
    assert argv[1:4] == ["-m", "pip", "download"] and kwargs["creationflags"] == CREATE_NO_WINDOW


def test_on_linux_the_calls_are_as_they_were(binary, monkeypatch) -> None:
    monkeypatch.setattr(spawn, "WINDOWS", False)
    run = RecordingRun()
    monkeypatch.setattr(subprocess, "run", run)
    build.answers_version(binary)
    assert "creationflags" not in run.calls[0][1] and "start_new_session" not in run.calls[0][1]
