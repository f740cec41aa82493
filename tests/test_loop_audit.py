"""Nothing slow on the loop that also serves the proxy: no file is opened for writing,
written, renamed or fsync'ed, and no /proc folder is listed, on the event loop's thread
while streams run.

An audit hook (:func:`sys.addaudithook`) sees every ``open`` (``builtins.open``, ``io.open``
and ``os.open`` all raise it, with the open flags), ``os.rename`` (also raised by
``os.replace``), ``os.listdir`` and ``os.scandir``. ``os.fsync`` raises no audit event in
3.11, so the test wraps it; a write to a file already open raises none either, so a
profile function on the loop's thread (:func:`sys.setprofile`, which sees calls into C)
catches the ``write`` of a file object. A hook cannot be removed: it records only while
:data:`_watched` names a thread, and only on that thread.

Writes to /proc, /sys and /dev (a memory-pressure trigger, /dev/null for a child's stdin)
and to ``__pycache__`` (the import system caching a module) are not disk I/O that Siesta
chose, and are not counted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import os
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import app.core.config.toml_edit as toml_edit
import app.core.memory.book as model_memory
from app.core.config.atomic_write import SerialWriter
from app.core.config.durations import parse_duration
from app.core.models.backend import BackendProcess, BoundedLog

pytestmark = pytest.mark.timeout(60)

_watched: dict[str, int | None] = {"thread": None}
_found: list[str] = []
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_NOT_DISK = ("/proc/", "/sys/", "/dev/")


def _where() -> str:
    """The innermost frames of Siesta's own code that led here (no source lines: reading them
    would open files inside the hook)."""
    frame = sys._getframe(2)
    out = []
    while frame is not None and len(out) < 4:
        name = frame.f_code.co_filename
        if "/app/" in name:
            out.append(f"{name.rsplit('/app/', 1)[1]}:{frame.f_lineno} {frame.f_code.co_name}")
        frame = frame.f_back
    return " < ".join(out) or "(not from app/)"


def _path_text(path: Any) -> str | None:
    if isinstance(path, int):
        return None
    path = os.fsdecode(os.fspath(path))
    return os.path.abspath(path)


def _is_regular_fd(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _watched["thread"] is None or event not in ("open", "os.rename", "os.listdir", "os.scandir"):
        return
    if threading.get_ident() != _watched["thread"]:
        return
    if event == "open":
        path, mode, flags = args
        if not isinstance(flags, int) or not flags & _WRITE_FLAGS:
            return
        text = _path_text(path)
        if text is None:  # os.fdopen of an fd: a write only if it is a file (not a pipe)
            if not _is_regular_fd(path):
                return
            text = f"fd {path}"
        elif text.startswith(_NOT_DISK) or "/__pycache__/" in text:
            return
        _found.append(f"opened for writing ({mode or oct(flags)}): {text}  at {_where()}")
    elif event == "os.rename":
        text = _path_text(args[1])
        if text is not None and not text.startswith(_NOT_DISK):
            _found.append(f"renamed {_path_text(args[0])} to {text}  at {_where()}")
    else:
        path = args[0] if args else "."
        text = _path_text(path if path is not None else ".")
        if text is not None and (text == "/proc" or text.startswith("/proc/")):
            _found.append(f"listed {text}  at {_where()}")


sys.addaudithook(_audit)


def _profile(frame: Any, event: str, arg: Any) -> None:
    """Catches ``write`` on a file object (a regular file, not the test's own output)."""
    if event != "c_call" or getattr(arg, "__name__", None) not in ("write", "writelines"):
        return
    owner = getattr(arg, "__self__", None)
    if not isinstance(owner, io.IOBase):
        return
    try:
        fd = owner.fileno()
    except (OSError, ValueError):
        return
    if fd in _console_fds or not _is_regular_fd(fd):
        return
    _found.append(f"wrote to {getattr(owner, 'name', fd)}  at {_where()}")


_console_fds: set[int] = set()


@pytest.fixture
def on_the_loop(monkeypatch: pytest.MonkeyPatch):
    """Records what this test's loop thread does from now until the test ends."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if threading.get_ident() == _watched["thread"]:
            _found.append(f"fsync  at {_where()}")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    _found.clear()

    _console_fds.clear()
    _console_fds.update({0, 1, 2})
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            _console_fds.add(stream.fileno())
        except (AttributeError, OSError, ValueError):
            pass

    def watch() -> list[str]:
        _watched["thread"] = threading.get_ident()
        sys.setprofile(_profile)
        return _found

    yield watch
    sys.setprofile(None)
    _watched["thread"] = None


async def _stream(http: Any, url: str, model: str, on_chunk: Any) -> int:
    chunks = 0
    async with http.post(f"{url}/v1/chat/completions",
                         json={"model": model, "stream": True, "messages": []}) as resp:
        assert resp.status == 200, await resp.text()
        async for _chunk in resp.content.iter_any():
            chunks += 1
            await on_chunk()
    return chunks


async def test_no_write_fsync_or_proc_listing_on_the_loop_while_streams_run(
        front_door, write_recipe, paths, on_the_loop, monkeypatch) -> None:
    """Loads, streams, two timeout PATCHes, a setting PATCH, a model's settings saved, the
    memory figures as the tray reads them every second (every snapshot refreshing its
    measurement), then unloads."""
    monkeypatch.setattr(model_memory, "REFRESH_AFTER", 0.0)
    for name in ("a", "b"):
        write_recipe(name, fake=["--delay", "0.02", "--chunks", "8"])
    found = on_the_loop()
    manager, http, url = await front_door(watch_files=True)

    async def tray_tick() -> None:
        # what the tray and the Models window do each second while shown
        manager.snapshots()
        await manager.system_memory()

    streams = [asyncio.create_task(_stream(http, url, name, tray_tick)) for name in ("a", "b", "a", "b")]
    for value in ("7m", "9m"):
        async with http.patch(f"{url}/api/v1/models/a", json={"unload_timeout": value}) as resp:
            assert resp.status == 200, await resp.text()
    async with http.patch(f"{url}/api/v1/settings", json={"global_unload_timeout": "11m"}) as resp:
        assert resp.status == 200, await resp.text()
    await manager.set_model_settings("b", memory_estimate=2**30)  # the Model settings dialog's save
    assert all(n > 0 for n in await asyncio.gather(*streams))
    for name in ("a", "b"):
        await manager.memory.measured(name)
        await manager.memory.measure_now(name)
    await tray_tick()
    async with http.get(f"{url}/api/v1/system") as resp:
        assert resp.status == 200
    async with http.post(f"{url}/api/v1/unload", json={"all": True}) as resp:
        assert resp.status == 200

    assert 'unload_timeout = "9m"' in paths.recipe_file("a").read_text()
    assert 'global_unload_timeout = "11m"' in paths.settings_file.read_text()
    assert "memory_estimate" in paths.recipe_file("b").read_text()
    assert found == [], "done on the event loop's thread:\n" + "\n".join(found)


async def test_writes_to_one_file_land_in_the_order_they_were_asked(manager_factory, write_recipe, paths,
                                                                    monkeypatch) -> None:
    """Many timeout changes of one recipe, and of the global timeout, asked at once: each
    file is written by one write at a time, in the order asked, and the last one asked wins."""
    write_recipe("a", fake=[])
    manager = await manager_factory()
    written: list[tuple[Path, str]] = []
    running: dict[Path, int] = {}
    overlaps: list[Path] = []
    lock = threading.Lock()
    real_write = toml_edit.write_text_atomic

    def write(path: Path, text: str) -> None:
        with lock:
            running[path] = running.get(path, 0) + 1
            if running[path] > 1:
                overlaps.append(path)
        try:
            time.sleep(0.002)  # a slow disk: long enough for a second write to the file to start
            real_write(path, text)
            with lock:
                written.append((path, text))
        finally:
            with lock:
                running[path] -= 1

    monkeypatch.setattr(toml_edit, "write_text_atomic", write)
    minutes = list(range(1, 21))
    await asyncio.gather(*(manager.set_model_timeout("a", parse_duration(f"{m}m")) for m in minutes),
                         *(manager.set_setting("global_unload_timeout", f"{m}h") for m in minutes))

    recipe = paths.recipe_file("a")
    in_recipe = [t for p, t in written if p == recipe]
    in_settings = [t for p, t in written if p == paths.settings_file]
    assert overlaps == []
    assert [f'unload_timeout = "{m}m"' in t for m, t in zip(minutes, in_recipe)] == [True] * len(minutes)
    assert [f'global_unload_timeout = "{m}h"' in t for m, t in zip(minutes, in_settings)] == [True] * len(minutes)
    assert 'unload_timeout = "20m"' in recipe.read_text()
    assert manager.get("a").recipe.unload_timeout == 20 * 60
    assert manager.global_timeout == 20 * 3600



async def test_memory_readings_read_the_process_tree_kept_from_the_load(manager_factory, write_recipe,
                                                                         monkeypatch) -> None:
    """Finding a server's process tree lists every process in /proc: it is done once the
    server is ready, and again only when the tree is old (or a pid of it has gone); the
    readings a shown tray asks for every second read the kept pids."""
    monkeypatch.setattr(model_memory, "REFRESH_AFTER", 0.0)
    trees: list[int] = []
    real_tree = BackendProcess.process_tree
    monkeypatch.setattr(BackendProcess, "process_tree", lambda self: trees.append(self.pid) or real_tree(self))
    readings: asyncio.Queue[str] = asyncio.Queue()
    real_read = model_memory.MemoryBook._read_now

    async def read_now(self: Any, name: str, find_again: bool = False) -> Any:
        use = await real_read(self, name, find_again)
        readings.put_nowait(name)
        return use

    monkeypatch.setattr(model_memory.MemoryBook, "_read_now", read_now)
    write_recipe("a", fake=[])
    manager = await manager_factory()
    model = await manager.load("a")
    assert await readings.get() == "a" and trees == [model.pid]  # the reading of the load
    for _ in range(5):
        manager.snapshots()  # what the tray does each second: an old figure is read again
        assert await readings.get() == "a"
        assert manager.snapshot_of(model)["memory"] > 0
    assert trees == [model.pid]
    monkeypatch.setattr(model_memory, "TREE_KEPT_FOR", 0.0)
    manager.snapshots()
    await readings.get()
    assert trees == [model.pid, model.pid]


class HeldWriter(SerialWriter):
    """A writer whose jobs wait until the test runs them: a disk that does not answer."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, tuple[Any, ...], concurrent.futures.Future[Any]]] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.jobs.append((fn, args, future))
        return future

    def run_all(self) -> None:
        while self.jobs:
            fn, args, future = self.jobs.pop(0)
            future.set_result(fn(*args))


def test_a_model_log_waits_for_its_disk_off_the_loop_in_order_and_bounded(tmp_path: Path) -> None:
    """A log handed to a writer that does not answer: the caller never touches the file, the
    tail still follows, what waits is bounded by max_bytes (the rest is dropped and said so
    in the log), and what is written keeps its order."""
    path = tmp_path / "logs" / "m.log"
    log = BoundedLog(path, max_bytes=1000)
    writer = HeldWriter()
    log.write_off_the_loop(writer)
    for i in range(30):
        log.write(f"line {i:02d} ".encode() + b"x" * 41 + b"\n")  # 50 bytes: 20 lines fill max_bytes
    log.note("exited with code 0")
    log.close()
    assert not path.parent.exists()
    assert "line 29" in log.tail_text() and "exited with code 0" in log.tail_text()
    writer.run_all()
    rotated = path.with_suffix(".log.1")
    text = (rotated.read_text() if rotated.exists() else "") + path.read_text()
    lines = text.splitlines()
    assert [line[:7] for line in lines[:20]] == [f"line {i:02d}" for i in range(20)]
    assert lines[20].endswith("bytes of output dropped: the disk was too slow to take them")
    assert len(lines) == 21 and log.error is None
