"""One Siesta per port: a lock file that ``siesta serve`` and the tray app both take for their
port before anything starts, and hold for the life of the process.

**Where:** ``port-<port>.lock`` in the platform's runtime dir (``platformdirs.user_runtime_dir``:
``$XDG_RUNTIME_DIR/siesta`` on Linux, ``~/Library/Caches/TemporaryItems/siesta`` on macOS,
``%LOCALAPPDATA%\\Temp\\siesta\\siesta`` on Windows), or in the state dir where no runtime dir
can be had. It is one lock per user and port, whatever the host: two Siestas on
``127.0.0.1:8777`` and ``0.0.0.0:8777`` are two Siestas on one port.

**How:** on POSIX ``fcntl.flock(LOCK_EX | LOCK_NB)`` on the whole file; on Windows
``msvcrt.locking(LK_NBLCK)`` on its first byte (a byte-range lock, and mandatory: nobody
else may read that byte). Either lock belongs to the open file, and the OS drops it when
the process ends, however it ends, so a lock is never stale and nothing guesses whether its
owner still lives: a file left by a dead Siesta is simply taken again. The file is never
deleted (deleting a lock file lets two processes lock two different files of one name).
Like every file Python opens, its descriptor is not inherited (PEP 446), so a llama-server
that outlives Siesta does not hold the port.

**What is in it:** byte 0 is the lock byte; after it, one line of JSON names the holder
(pid, kind, host, port, config dir), which a second Siesta reads, from byte 1 on, for its
message: "Siesta is already running on 127.0.0.1:8777 (pid 4242), as `siesta serve`".

The OS calls are injected (:class:`PosixLocking`, :class:`WindowsLocking`), so tests drive
the Windows path on any OS with a recording fake of ``msvcrt``.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import platformdirs

APP_NAME = "siesta"
KINDS = {"serve": "as `siesta serve`", "tray": "as the tray app"}
LOCK_TRIES = 3  # a moment's lock by read_holder is not a Siesta
READ_TRIES = 10  # a holder that has just locked writes its line a moment later
READ_PAUSE = 0.05


class Locking(Protocol):
    """One OS's way to take and give back the lock on an open file."""

    def try_lock(self, fd: int) -> bool:
        """Takes the lock without waiting; False when another open file holds it."""

    def unlock(self, fd: int) -> None: ...


class PosixLocking:
    """``flock``: a whole-file lock held by the open file description
    (https://man7.org/linux/man-pages/man2/flock.2.html). Not ``lockf``/``fcntl`` record
    locks, which a process loses when it closes any descriptor of the file."""

    def __init__(self, fcntl_module: Any = None) -> None:
        if fcntl_module is None:
            import fcntl as fcntl_module
        self.fcntl = fcntl_module

    def try_lock(self, fd: int) -> bool:
        try:
            self.fcntl.flock(fd, self.fcntl.LOCK_EX | self.fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    def unlock(self, fd: int) -> None:
        self.fcntl.flock(fd, self.fcntl.LOCK_UN)


class WindowsLocking:
    """``msvcrt.locking`` on byte 0 (https://docs.python.org/3/library/msvcrt.html#msvcrt.locking,
    the CRT's ``_locking``: https://learn.microsoft.com/en-us/cpp/c-runtime-library/reference/locking).
    The region starts at the file position, so the position is set to 0 first. ``LK_NBLCK``
    fails at once with ``EACCES`` when the byte is locked through another handle, of this
    process or another (LockFileEx: "If the locking process opens the file a second time,
    it cannot access the specified region through this second handle").
    """

    def __init__(self, msvcrt_module: Any = None) -> None:
        if msvcrt_module is None:
            import msvcrt as msvcrt_module
        self.msvcrt = msvcrt_module

    def try_lock(self, fd: int) -> bool:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            self.msvcrt.locking(fd, self.msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            if exc.errno in (errno.EACCES, getattr(errno, "EDEADLOCK", errno.EDEADLK)):
                return False
            raise
        return True

    def unlock(self, fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        self.msvcrt.locking(fd, self.msvcrt.LK_UNLCK, 1)


def os_locking() -> Locking:
    return WindowsLocking() if sys.platform == "win32" else PosixLocking()


def lock_dir() -> Path:
    """The platform's runtime dir for Siesta, else its state dir (see the module's note)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when it falls back from $XDG_RUNTIME_DIR
            runtime = Path(platformdirs.user_runtime_dir(APP_NAME))
        runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        return runtime
    except OSError:
        state = Path(platformdirs.user_state_dir(APP_NAME))
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        return state


@dataclass(frozen=True)
class Holder:
    """The Siesta that holds a port, as its lock file says; ``pid`` None when it said nothing yet."""

    port: int
    pid: int | None = None
    kind: str | None = None
    host: str | None = None
    config_dir: str | None = None

    @property
    def address(self) -> str:
        if self.host is None:
            return f"port {self.port}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def describe(self) -> str:
        """``Siesta is already running on 127.0.0.1:8777 (pid 4242), as `siesta serve```."""
        pid = "pid unknown" if self.pid is None else f"pid {self.pid}"
        text = f"Siesta is already running on {self.address} ({pid})"
        if self.kind in KINDS:
            text += f", {KINDS[self.kind]}"
        return text


class AlreadyRunning(Exception):
    """Another Siesta holds the port's lock."""

    def __init__(self, holder: Holder, path: Path) -> None:
        super().__init__(holder.describe())
        self.holder = holder
        self.path = path


class InstanceLock:
    """The lock on one port, held from :meth:`acquire` until :meth:`release` or the process's end."""

    def __init__(self, port: int, *, directory: Path | None = None, locking: Locking | None = None) -> None:
        self.port = port
        self.path = (directory if directory is not None else lock_dir()) / f"port-{port}.lock"
        self.locking = locking if locking is not None else os_locking()
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, kind: str, host: str, config_dir: Path | str | None = None) -> InstanceLock:
        """Takes the lock and writes who holds it; raises :class:`AlreadyRunning` naming the holder."""
        if self._fd is not None:
            return self
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o600)
        try:
            if not self._try_lock(fd):
                raise AlreadyRunning(self._read_holder(fd), self.path)
            line = json.dumps({"pid": os.getpid(), "kind": kind, "host": host, "port": self.port,
                               "config_dir": None if config_dir is None else str(config_dir)})
            data = b"\n" + line.encode("utf-8") + b"\n"  # byte 0 is the lock byte
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, data)
            os.ftruncate(fd, len(data))
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def _try_lock(self, fd: int) -> bool:
        """A few tries, a moment apart: :func:`read_holder` (``siesta doctor``) takes the lock
        for an instant to see whether anybody holds it."""
        for attempt in range(LOCK_TRIES):
            if self.locking.try_lock(fd):
                return True
            if attempt + 1 < LOCK_TRIES:
                time.sleep(READ_PAUSE)
        return False

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            self.locking.unlock(fd)
        except OSError:
            pass  # closing gives it back all the same
        finally:
            os.close(fd)

    def _read_holder(self, fd: int) -> Holder:
        """What the holder wrote; it locks first and writes a moment later, so a file with no
        line yet (or a line of an earlier holder that is gone) is read again, briefly."""
        for attempt in range(READ_TRIES):
            found = _parse(_read_from(fd, 1), self.port)
            if found is not None and found.pid is not None and _alive(found.pid):
                return found
            if attempt + 1 < READ_TRIES:
                time.sleep(READ_PAUSE)
        return Holder(self.port)  # "pid unknown": the lock is held all the same

    def __enter__(self) -> InstanceLock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def read_holder(port: int, *, directory: Path | None = None, locking: Locking | None = None) -> Holder | None:
    """Who holds ``port`` now (for ``siesta doctor``); None when nobody does, or no lock file
    can be opened. It takes the lock for an instant when it is free, and writes nothing. A
    moment's answer: the holder may stop just after."""
    lock = InstanceLock(port, directory=directory, locking=locking)
    try:
        fd = os.open(lock.path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    except OSError:
        return None  # no file: no Siesta has run on this port since the runtime dir was made
    try:
        if lock.locking.try_lock(fd):
            lock.locking.unlock(fd)
            return None
        return lock._read_holder(fd)
    finally:
        os.close(fd)


def _read_from(fd: int, offset: int) -> bytes:
    os.lseek(fd, offset, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(data: bytes, port: int) -> Holder | None:
    try:
        found = json.loads(data.decode("utf-8").strip() or "null")
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(found, dict) or not isinstance(found.get("pid"), int):
        return None

    def text(key: str) -> str | None:
        value = found.get(key)
        return value if isinstance(value, str) else None

    return Holder(port=port, pid=found["pid"], kind=text("kind"), host=text("host"), config_dir=text("config_dir"))


def _alive(pid: int) -> bool:
    import psutil  # never os.kill(pid, 0): on Windows signal 0 is CTRL_C_EVENT

    return psutil.pid_exists(pid)
