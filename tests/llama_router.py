"""The real ``llama-server`` as a test process: llama.cpp's router (``--models-dir DIR``,
no model) or, for contrast, a one-model server.

The router starts one child ``llama-server`` per loaded model in its own process group;
:meth:`LlamaProcess.stop` ends the whole group, so no child outlives a test. (Windows has no
process groups: there its children are the router's descendants, ended with it.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.portable import POSIX

START_SECONDS = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaProcess:
    """One ``llama-server`` on a free port, in a process group of its own; ``args`` say
    what it serves (``--models-dir DIR`` for the router, ``-m FILE`` for one model)."""

    def __init__(self, binary: Path, log_file: Path, *args: str) -> None:
        self.log_file = log_file
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [str(binary), "--host", "127.0.0.1", "--port", str(self.port), "-t", "1", "--ctx-size", "256",
                   *args]
        with log_file.open("ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        self.pgid = self.proc.pid

    def wait_healthy(self) -> None:
        """Polls ``/health`` (a separate process: no event to await) until it answers 200."""
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"llama-server did not answer /health within {START_SECONDS:g} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")[-3000:]

    async def statuses(self) -> dict[str, dict[str, Any]]:
        """``status`` of every model, as the router's own ``GET /models`` has it."""
        async with httpx.AsyncClient() as client:
            data = (await client.get(self.url + "/models", timeout=5.0)).json()
        return {item["id"]: item["status"] for item in data["data"]}

    async def wait_status(self, model: str, value: str, timeout: float = 20.0) -> dict[str, Any]:
        """Polls the router until ``model``'s status is ``value``."""
        deadline = time.monotonic() + timeout
        while True:
            status = (await self.statuses())[model]
            if status["value"] == value:
                return status
            if time.monotonic() >= deadline:
                raise AssertionError(f"{model} is {status} on the router, not {value}, after {timeout:g} s")
            await asyncio.sleep(0.1)

    def children(self) -> list[int]:
        """The live processes of the router's group other than the router (its models' servers);
        on Windows, the router's live descendants."""
        if not POSIX:
            try:
                return [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True) if _live(c)]
            except psutil.NoSuchProcess:
                return []
        found = []
        for proc in psutil.process_iter():
            if proc.pid == self.proc.pid or not _live(proc):
                continue
            try:
                if os.getpgid(proc.pid) == self.pgid:
                    found.append(proc.pid)
            except OSError:
                continue
        return found

    def stop(self) -> None:
        """Ends the server and every child it started (the whole process group)."""
        if not POSIX:  # no groups: the router's descendants, then the router
            for pid in self.children():
                try:
                    psutil.Process(pid).kill()
                except psutil.NoSuchProcess:
                    pass
            self.proc.kill()
            self.proc.wait(timeout=5)
            return
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and (self.proc.poll() is None or self.children()):
                time.sleep(0.05)
            if self.proc.poll() is not None and not self.children():
                break
        self.proc.wait(timeout=5)


def _live(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
