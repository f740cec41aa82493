"""One running model server: how it is started, watched, logged and stopped.

Each server runs in its own process group (its own session on POSIX), so stopping it
stops everything it started; its output goes to a size-bounded log file per model and
the last lines are kept in memory for error messages.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from .process_reaper import ProcessReaper
from .recipes import Recipe

_log = logging.getLogger(__name__)

# Windows has no SIGKILL; there "kill" means TerminateProcess, which _kill_group does.
KILL = getattr(signal, "SIGKILL", signal.SIGTERM)
LOG_MAX_BYTES = 2 * 1024 * 1024
LOG_TAIL_LINES = 40
HEALTH_POLL_INTERVAL = 0.01
HEALTH_PROBE_TIMEOUT = 2.0


class BackendError(Exception):
    """A server that could not start, died while loading, or never became healthy."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


@dataclass(frozen=True)
class LaunchSpec:
    """Exactly what to run for one model; built only from the user's own recipe file."""

    argv: tuple[str, ...]
    env: dict[str, str]
    port: int
    health_path: str


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_llama_server(configured: Path | None, data_dir: Path, cache_dir: Path) -> Path | None:
    """The llama-server to use: the setting, else Siesta's data dir, else the build cache, else PATH."""
    if configured is not None:
        return configured.expanduser()
    candidates = [data_dir / "engine" / "llama-server"]
    if cache_dir.is_dir():
        candidates += sorted(cache_dir.glob("*/llama-server"), reverse=True)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("llama-server")
    return Path(found) if found else None


def build_launch(recipe: Recipe, llama_server: Path | None, port: int) -> LaunchSpec:
    """Turns a recipe into a command line; BackendError says what is missing."""
    env = dict(os.environ)
    env.update(dict(recipe.env))
    if recipe.backend == "llamacpp":
        assert recipe.model is not None
        if not recipe.model.is_file():
            raise BackendError(f"{recipe.path}: field 'model': file not found: {recipe.model}")
        if llama_server is None:
            raise BackendError(
                "no llama-server found: set llama_server in settings.toml (or SIESTA_LLAMA_SERVER), "
                "put it on PATH, or build one with scripts/build-llama-server.sh"
            )
        argv = (
            str(llama_server), "-m", str(recipe.model), "--host", "127.0.0.1", "--port", str(port),
            "--alias", recipe.name, *recipe.args,
        )
    else:
        argv = tuple(part.replace("{port}", str(port)) for part in recipe.command)
        resolved = shutil.which(argv[0]) if os.path.sep not in argv[0] else argv[0]
        if resolved is None or not os.path.exists(resolved):
            raise BackendError(f"{recipe.path}: field 'command': program not found: {argv[0]!r}")
    return LaunchSpec(argv=argv, env=env, port=port, health_path=recipe.health_path)


class BoundedLog:
    """Appends a server's output to its log file, starting a fresh file past ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int = LOG_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._rotate_if_large()
        self._fh = path.open("ab", buffering=0)
        self._written = self._fh.tell()

    def _rotate_if_large(self) -> None:
        try:
            if self.path.stat().st_size > self.max_bytes:
                os.replace(self.path, self.path.with_suffix(self.path.suffix + ".1"))
        except FileNotFoundError:
            pass

    def keep_tail(self, data: bytes) -> None:
        """Keeps the last lines of ``data`` in memory (for error messages) without writing it."""
        text = data.decode("utf-8", "replace")
        self.tail.extend(line for line in text.splitlines() if line.strip())

    def write(self, data: bytes) -> None:
        if self._fh.closed:
            return
        self.keep_tail(data)
        if self._written + len(data) > self.max_bytes:
            self._fh.close()
            os.replace(self.path, self.path.with_suffix(self.path.suffix + ".1"))
            self._fh = self.path.open("ab", buffering=0)
            self._written = 0
        self._fh.write(data)
        self._written += len(data)

    def note(self, message: str) -> None:
        self.write(f"--- siesta {time.strftime('%Y-%m-%d %H:%M:%S')}: {message}\n".encode())

    def tail_text(self, lines: int = 15) -> str:
        return "\n".join(list(self.tail)[-lines:])

    def close(self) -> None:
        self._fh.close()


def _safe_note(log: BoundedLog, message: str) -> Exception | None:
    """Writes a Siesta note to a model's log; returns the error of a failed write, never raises it."""
    try:
        log.note(message)
    except Exception as exc:  # noqa: BLE001 - a full disk must not stop a server from starting or stopping
        return exc
    return None


class BackendProcess:
    """A started model server process; :meth:`stop` ends its whole process group."""

    def __init__(self, proc: asyncio.subprocess.Process, spec: LaunchSpec, log: BoundedLog,
                 reaper: ProcessReaper | None) -> None:
        self._proc = proc
        self.spec = spec
        self.log = log
        self._reaper = reaper
        self._log_broken = False  # set once writing the model's log failed: output is then dropped
        self.stopping = False
        self.base_url = f"http://127.0.0.1:{spec.port}"
        self._output = asyncio.Event()  # set on each chunk of output: a moment worth probing health
        self._pump = asyncio.create_task(self._pump_output(), name=f"log-pump-{proc.pid}")
        self._exit = asyncio.create_task(self._wait_exit(), name=f"exit-watch-{proc.pid}")
        self._ps: psutil.Process | None = None

    @classmethod
    async def start(cls, spec: LaunchSpec, log: BoundedLog, reaper: ProcessReaper | None) -> "BackendProcess":
        log_error = _safe_note(log, "starting: " + " ".join(spec.argv))
        try:
            proc = await asyncio.create_subprocess_exec(
                *spec.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=spec.env,
                start_new_session=(os.name == "posix"),
            )
        except OSError as exc:
            _safe_note(log, f"could not start: {exc}")
            raise BackendError(f"could not start {spec.argv[0]!r}: {exc.strerror or exc}") from exc
        if reaper is not None:
            reaper.add(proc.pid)
        backend = cls(proc, spec, log, reaper)
        if log_error is not None:
            backend._log_failed(log_error)
        return backend

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def _log_failed(self, exc: BaseException | None) -> None:
        if self._log_broken:
            return
        self._log_broken = True
        _log.warning("cannot write the model log %s (%s); the server's output is dropped from now on",
                     self.log.path, exc)

    def _write_log(self, data: bytes) -> None:
        """Writes server output to the model's log; after a failed write (a full disk, an I/O
        error) the output is only kept in the in-memory tail, and the failure is logged once."""
        if not self._log_broken:
            try:
                self.log.write(data)
                return
            except Exception as exc:  # noqa: BLE001 - whatever the log does, the pipe must keep draining
                self._log_failed(exc)
        self.log.keep_tail(data)

    def _note(self, message: str) -> None:
        if not self._log_broken:
            error = _safe_note(self.log, message)
            if error is not None:
                self._log_failed(error)

    async def _pump_output(self) -> None:
        """Drains the server's output to the end, whatever happens to the log: a server whose
        pipe is not read blocks once the pipe buffer is full, and its requests with it."""
        stream = self._proc.stdout
        assert stream is not None
        while True:
            try:
                chunk = await stream.read(65536)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a broken pipe ends the output, not Siesta
                _log.warning("reading the output of server %s failed: %s", self._proc.pid, exc)
                return
            if not chunk:
                return
            self._write_log(chunk)
            self._output.set()

    async def _wait_exit(self) -> int:
        code = await self._proc.wait()
        try:
            await asyncio.wait_for(self._pump, timeout=1.0)  # keep the last lines for the error
        except (asyncio.TimeoutError, asyncio.CancelledError):
            pass
        except Exception:  # noqa: BLE001 - the pump does not raise; never let its end hide the exit code
            _log.exception("output pump of server %s failed", self._proc.pid)
        if self._reaper is not None:
            self._kill_group(KILL)  # anything it left behind in its group
            self._reaper.remove(self._proc.pid)
        self._note(f"exited with code {code}")
        try:
            self.log.close()
        except OSError:
            pass
        return code

    async def wait_exit(self) -> int:
        """Waits for the process to end; returns its exit code."""
        return await asyncio.shield(self._exit)

    async def wait_healthy(self, timeout: float) -> None:
        """Polls the health endpoint until it answers 200; BackendError on exit or time-out."""
        deadline = time.monotonic() + timeout
        while True:
            self._output.clear()  # before the probe: a line printed during it triggers the next one
            if self._exit.done():
                code = self._exit.result()
                raise BackendError(f"server exited with code {code} while loading", self.log.tail_text())
            if await self._probe_health():
                return
            if time.monotonic() >= deadline:
                raise BackendError(
                    f"server did not become healthy at {self.spec.health_path} within {timeout:g} s",
                    self.log.tail_text(),
                )
            # Probe again after the poll interval, or at once when the server prints
            # something (it logs as it becomes ready) or exits.
            output = asyncio.ensure_future(self._output.wait())
            await asyncio.wait({self._exit, output}, timeout=HEALTH_POLL_INTERVAL,
                               return_when=asyncio.FIRST_COMPLETED)
            output.cancel()

    async def _probe_health(self) -> bool:
        """One GET of the health path, answered 200 or not. A bare connection and the status
        line only: a server prints dozens of lines while it starts, each one a probe, and an
        aiohttp request cost several times more CPU than this on the start-up path."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.spec.port), HEALTH_PROBE_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            return False
        try:
            writer.write(f"GET {self.spec.health_path} HTTP/1.1\r\nHost: 127.0.0.1:{self.spec.port}\r\n"
                         "Connection: close\r\n\r\n".encode())
            status_line = await asyncio.wait_for(reader.readline(), HEALTH_PROBE_TIMEOUT)
            parts = status_line.split(None, 2)
            return len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1] == b"200"
        except (OSError, asyncio.TimeoutError):
            return False
        finally:
            writer.close()

    def _kill_group(self, sig: int) -> None:
        try:
            if os.name == "posix":
                os.killpg(self._proc.pid, sig)
            elif sig == KILL:
                self._proc.kill()
            else:
                self._proc.terminate()
        except (ProcessLookupError, PermissionError):
            pass

    async def stop(self, timeout: float) -> int:
        """Asks the server to stop (SIGTERM to its group), kills it after ``timeout``; returns the exit code."""
        self.stopping = True
        if not self._exit.done():
            self._kill_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self._exit), timeout)
            except asyncio.TimeoutError:
                self._note(f"did not stop within {timeout:g} s; killing")
                self._kill_group(KILL)
        return await asyncio.shield(self._exit)

    def memory(self) -> int | None:
        """Resident bytes of the server and its children (None when unknown)."""
        try:
            if self._ps is None:
                self._ps = psutil.Process(self._proc.pid)
            total = self._ps.memory_info().rss
            for child in self._ps.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass
            return total
        except psutil.Error:
            return None
