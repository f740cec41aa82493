"""One Siesta per port (app/core/config/instance_lock.py).

This OS's lock is tested for real: in this process, and across processes (the lock goes
with a process that is killed, and no child of the holder keeps it). The Windows path runs
here through a recording fake of ``msvcrt`` that follows:

* Python's ``msvcrt.locking(fd, mode, nbytes)`` (https://docs.python.org/3/library/msvcrt.html#msvcrt.locking):
  "The locked region of the file extends from the current file position for nbytes bytes,
  and may continue beyond the end of the file"; ``LK_NBLCK`` raises ``OSError`` when the
  bytes cannot be locked, ``LK_UNLCK`` unlocks bytes that were locked;
* the CRT's ``_locking`` (https://learn.microsoft.com/en-us/cpp/c-runtime-library/reference/locking):
  the failure is errno ``EACCES``, "Locking violation (file already locked or unlocked)";
  the constants of sys/locking.h (``_LK_UNLCK`` 0, ``_LK_LOCK`` 1, ``_LK_NBLCK`` 2);
* ``LockFileEx`` (https://learn.microsoft.com/en-us/windows/win32/api/fileapi/nf-fileapi-lockfileex),
  which ``_locking`` is built on: a lock is the handle's, so a second handle fails even in
  the same process, and "If a process terminates with a portion of a file locked or closes a
  file that has outstanding locks, the locks are unlocked by the operating system".
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs
import pytest

from app.core.config import instance_lock
from app.core.config.instance_lock import (
    AlreadyRunning,
    Holder,
    InstanceLock,
    PosixLocking,
    WindowsLocking,
    lock_dir,
    read_holder,
)
from tests.portable import kill_hard, pid_alive

REPO = Path(__file__).resolve().parents[3]


@dataclass
class FakeMsvcrt:
    """``msvcrt`` for one machine: ``locking`` records each call with the file position it
    starts at, and keeps the locked ranges of every file (by device and inode) per handle."""

    LK_UNLCK = 0
    LK_LOCK = 1
    LK_NBLCK = 2
    calls: list[tuple[str, int, int]] = field(default_factory=list)
    held: dict[tuple[int, int, int], int] = field(default_factory=dict)  # (dev, ino, offset) -> fd

    def locking(self, fd: int, mode: int, nbytes: int) -> None:
        position = os.lseek(fd, 0, os.SEEK_CUR)
        info = os.fstat(fd)
        keys = [(info.st_dev, info.st_ino, position + i) for i in range(nbytes)]
        name = {self.LK_NBLCK: "LK_NBLCK", self.LK_UNLCK: "LK_UNLCK"}[mode]
        self.calls.append((name, position, nbytes))
        if mode == self.LK_NBLCK:
            if any(key in self.held for key in keys):  # any handle, this one's or another's
                raise PermissionError(errno.EACCES, "Permission denied")
            self.held.update(dict.fromkeys(keys, fd))
        else:
            if any(self.held.get(key) != fd for key in keys):
                raise PermissionError(errno.EACCES, "Permission denied")  # not locked (by this handle)
            for key in keys:
                del self.held[key]


def test_a_second_lock_on_the_port_is_refused_and_names_the_holder(tmp_path: Path) -> None:
    first = InstanceLock(8777, directory=tmp_path).acquire(kind="serve", host="127.0.0.1", config_dir="/c")
    try:
        with pytest.raises(AlreadyRunning) as info:
            InstanceLock(8777, directory=tmp_path).acquire(kind="tray", host="0.0.0.0")
        assert info.value.holder == Holder(8777, os.getpid(), "serve", "127.0.0.1", "/c")
        assert str(info.value) == f"Siesta is already running on 127.0.0.1:8777 (pid {os.getpid()}), as `siesta serve`"
        assert info.value.path == tmp_path / "port-8777.lock"
        with InstanceLock(8778, directory=tmp_path).acquire(kind="tray", host="127.0.0.1"):
            pass  # another port is another lock
    finally:
        first.release()
    again = InstanceLock(8777, directory=tmp_path).acquire(kind="tray", host="::1")
    try:
        assert read_holder(8777, directory=tmp_path).describe() == \
            f"Siesta is already running on [::1]:8777 (pid {os.getpid()}), as the tray app"
    finally:
        again.release()
    assert read_holder(8777, directory=tmp_path) is None
    text = (tmp_path / "port-8777.lock").read_bytes()  # read once unlocked: on Windows byte 0 is locked
    assert text[:1] == b"\n"  # the lock byte; the holder's line after it
    assert json.loads(text[1:]) == {"pid": os.getpid(), "kind": "tray", "host": "::1", "port": 8777,
                                    "config_dir": None}
    assert read_holder(9999, directory=tmp_path) is None  # no file at all


def test_a_holder_that_has_not_said_who_it_is_yet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(instance_lock, "READ_PAUSE", 0.001)
    path = tmp_path / "port-8777.lock"
    path.write_bytes(b"\n" + json.dumps({"pid": 2**22 + 12345, "kind": "serve"}).encode())  # a holder long gone
    fd = os.open(path, os.O_RDWR)
    try:
        assert instance_lock.os_locking().try_lock(fd)  # a new holder that has locked, and not written yet
        with pytest.raises(AlreadyRunning) as info:
            InstanceLock(8777, directory=tmp_path).acquire(kind="tray", host="127.0.0.1")
        assert info.value.holder == Holder(8777)
        assert str(info.value) == "Siesta is already running on port 8777 (pid unknown)"
    finally:
        os.close(fd)


# ---- the Windows path, through the fake ---------------------------------------------------------------


def test_windows_locks_byte_0_without_waiting_and_unlocks_it(tmp_path: Path) -> None:
    fake = FakeMsvcrt()
    first = InstanceLock(8777, directory=tmp_path, locking=WindowsLocking(fake))
    first.acquire(kind="tray", host="127.0.0.1")
    assert fake.calls == [("LK_NBLCK", 0, 1)]  # from the start of the file, one byte, failing at once
    second = InstanceLock(8777, directory=tmp_path, locking=WindowsLocking(fake))
    with pytest.raises(AlreadyRunning) as info:
        second.acquire(kind="serve", host="127.0.0.1")
    assert info.value.holder.pid == os.getpid() and info.value.holder.kind == "tray"
    assert fake.calls[1:] == [("LK_NBLCK", 0, 1)] * instance_lock.LOCK_TRIES
    first.release()
    assert fake.calls[-1] == ("LK_UNLCK", 0, 1) and not fake.held
    with second.acquire(kind="serve", host="127.0.0.1"):
        assert second.held
    assert not fake.held


def test_windows_locks_from_the_start_wherever_the_file_position_was(tmp_path: Path) -> None:
    fake = FakeMsvcrt()
    lock = InstanceLock(8777, directory=tmp_path, locking=WindowsLocking(fake)).acquire(kind="tray", host="h")
    assert lock._fd is not None and os.lseek(lock._fd, 0, os.SEEK_CUR) > 0  # it wrote its line after locking
    lock.release()
    assert fake.calls == [("LK_NBLCK", 0, 1), ("LK_UNLCK", 0, 1)]


def test_windows_passes_on_a_failure_that_is_not_the_lock_being_held(tmp_path: Path) -> None:
    class Broken(FakeMsvcrt):
        def locking(self, fd: int, mode: int, nbytes: int) -> None:
            raise OSError(errno.EBADF, "Bad file descriptor")

    with pytest.raises(OSError) as info:
        InstanceLock(8777, directory=tmp_path, locking=WindowsLocking(Broken())).acquire(kind="tray", host="h")
    assert info.value.errno == errno.EBADF


def test_posix_asks_flock_for_an_exclusive_lock_that_does_not_wait(tmp_path: Path) -> None:
    calls = []

    class RecordingFcntl:
        LOCK_EX, LOCK_NB, LOCK_UN = 2, 4, 8  # sys/file.h on Linux and macOS

        def flock(self, fd: int, operation: int) -> None:
            calls.append(operation)

    with InstanceLock(8777, directory=tmp_path, locking=PosixLocking(RecordingFcntl())).acquire(kind="serve",
                                                                                                 host="h"):
        assert calls == [2 | 4]
    assert calls == [2 | 4, 8]


# ---- where the file lives -----------------------------------------------------------------------------


def test_the_lock_lives_in_the_runtime_dir_else_the_state_dir(isolated_home: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    assert lock_dir() == Path(platformdirs.user_runtime_dir("siesta"))
    assert InstanceLock(8777).path == Path(platformdirs.user_runtime_dir("siesta")) / "port-8777.lock"
    assert lock_dir().is_relative_to(isolated_home)

    def no_runtime_dir(*_args: object, **_kwargs: object) -> str:
        raise PermissionError("runtime directory is owned by another user")

    monkeypatch.setattr(platformdirs, "user_runtime_dir", no_runtime_dir)
    assert lock_dir() == Path(platformdirs.user_state_dir("siesta"))


# ---- across processes, on this OS -------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import subprocess, sys, time
    from pathlib import Path
    from app.core.config.instance_lock import InstanceLock
    lock = InstanceLock(int(sys.argv[2]), directory=Path(sys.argv[1])).acquire(kind="serve", host="127.0.0.1")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a server that outlives it
    print(child.pid, flush=True)
    time.sleep(60)
""")


def test_the_lock_goes_with_a_killed_holder_and_no_child_of_its_keeps_it(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), "8777"], stdout=subprocess.PIPE,
                              env=env, cwd=REPO, text=True)
    child = None
    try:
        child = int(holder.stdout.readline())  # type: ignore[union-attr]
        with pytest.raises(AlreadyRunning) as info:
            InstanceLock(8777, directory=tmp_path).acquire(kind="tray", host="127.0.0.1")
        assert info.value.holder.pid == holder.pid
        kill_hard(holder.pid)  # a crash: no release, no clean-up
        holder.wait(timeout=10)
        assert pid_alive(child)
        deadline = time.monotonic() + 5  # Windows unlocks "depending upon available system resources"
        while True:
            try:
                lock = InstanceLock(8777, directory=tmp_path).acquire(kind="tray", host="127.0.0.1")
                break
            except AlreadyRunning:
                assert time.monotonic() < deadline, "the dead holder's lock was not released"
                time.sleep(0.05)
        lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if child is not None and pid_alive(child):
            kill_hard(child)
