"""Helpers for the GUI tests: waiting on the running qasync loop, and a fake app shell."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from app.core.manager import ModelManager
from tests.waiting import until  # noqa: F401 - the GUI tests import it from here


async def next_event(manager: ModelManager, name: str, reason: str, timeout: float = 15.0) -> dict[str, Any]:
    """Waits for the manager's next event ``reason`` about model ``name``."""
    future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    def on_event(event: dict[str, Any]) -> None:
        if event["model"]["name"] == name and event["reason"] == reason and not future.done():
            future.set_result(event)

    unsubscribe = manager.subscribe(on_event)
    try:
        return await asyncio.wait_for(future, timeout)
    finally:
        unsubscribe()


class FakeShell:
    """Stands in for SiestaApp where a test builds the tray or the window on its own."""

    def __init__(self, has_tray: bool = True) -> None:
        self.has_tray = has_tray
        self.calls: list[str] = []

    def show_settings(self) -> None:
        self.calls.append("settings")

    def show_models_window(self) -> None:
        self.calls.append("window")

    def show_discover(self) -> None:
        self.calls.append("discover")

    def show_download(self) -> None:
        self.calls.append("download")

    def show_import(self) -> None:
        self.calls.append("import")

    def show_install_engine(self) -> None:
        self.calls.append("install")

    def request_quit(self) -> None:
        self.calls.append("quit")

    def show_log(self, name: str) -> None:
        self.calls.append(f"log {name}")

    def show_model_settings(self, name: str) -> None:
        self.calls.append(f"model settings {name}")


async def watcher_ready(manager: ModelManager, timeout: float = 10.0) -> None:
    """Waits until the manager's file watcher sees changes (it starts a moment after
    ``manager.start()``, and an edit made before then is never reported): touches a probe
    recipe until the manager lists it, then removes it again."""
    probe = manager.paths.recipe_file("zz-watch-probe")
    deadline = time.monotonic() + timeout
    attempt = 0
    while "zz-watch-probe" not in manager.models:
        if time.monotonic() > deadline:
            raise AssertionError("the recipe watcher never reported a change")
        probe.write_text(f'# probe {attempt}\nbackend = "command"\ncommand = ["true", "{{port}}"]\n')
        attempt += 1
        for _ in range(15):
            if "zz-watch-probe" in manager.models:
                break
            await asyncio.sleep(0.02)
    probe.unlink()
    await until(lambda: "zz-watch-probe" not in manager.models, timeout, "the probe to go")


def pid_alive(pid: int) -> bool:
    """Whether a process is still running (a zombie counts as gone)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


FAKE_VERSION = "9.9.9 (build 42, commit fake)"


def fake_llama_server(path: Path, count_file: Path | None = None) -> Path:
    """An executable stand-in for llama-server that answers ``--version`` as the real one
    does (on stderr); with ``count_file``, each ``--version`` appends a line to it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = f'echo x >> "{count_file}"\n' if count_file else ""
    path.write_text('#!/bin/sh\nif [ "$1" = "--version" ]; then\n' + count +
                    f'  echo "version: {FAKE_VERSION}" >&2\n  echo "built with a test" >&2\n  exit 0\nfi\nexit 1\n')
    path.chmod(0o755)
    return path


def gguf(path: Path, size: int = 64) -> Path:
    """A small file that starts with the GGUF magic (enough for discovery)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * (size - 8))
    return path


def plain(text: str) -> str:
    """A button's or menu entry's text as it reads: its letter's ``&`` left out (``&&`` is an ``&``)."""
    return text.replace("&&", "\0").replace("&", "").replace("\0", "&")
