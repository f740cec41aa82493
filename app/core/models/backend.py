"""One running model server: how it is started, watched, logged and stopped.

Each server runs in a process tree that this OS's process layer holds
(:mod:`app.core.models.processes`: a process group on Linux and macOS, a kill-on-close job
object on Windows), so stopping it stops everything it started, and whatever is left of the
tree when it exits is ended. A server the OS will not let Siesta hold that way is not run.
Its output goes to its log (:mod:`app.core.models.server_log`). It is healthy when its
health path answers 200 from a socket that one of its own processes listens on, not
another program that took the port first.

A server sees Siesta's environment without Siesta's own secrets (:func:`app.core.spawn.child_env`),
plus its recipe's ``env``. What Siesta says about it (its log's "starting:" line, every
BackendError and its log tail) has the recipe's secrets replaced (:mod:`app.core.config.redact`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import psutil

from app.core.config.recipes import Recipe
from app.core.config.redact import redact_args, redact_text
from app.core.models.processes import PLATFORM, Platform, ProcessSetupError, ServerTree
from app.core.models.reaper import ProcessReaper
from app.core.models.server_log import LOG_MAX_BYTES, LOG_TAIL_LINES, LOG_WRITER, BoundedLog, safe_note
from app.core.spawn import child_env

__all__ = ["BackendError", "BackendProcess", "BoundedLog", "LaunchSpec", "LOG_MAX_BYTES", "LOG_TAIL_LINES",
           "LOG_WRITER", "build_launch", "free_port", "looks_out_of_memory"]

_log = logging.getLogger(__name__)

LOAD_OUTPUT_MAX_BYTES = 256 * 1024  # a loading llama-server prints some 10-20 KB at verbosity 4
HEALTH_POLL_INTERVAL = 0.01
HEALTH_PROBE_TIMEOUT = 2.0
# A probe still connecting does not hold up the next: on Windows a connection to a loopback
# port nobody listens on is refused only after some 2 s (the SYN is retried), so probes
# overlap, one started every HEALTH_OVERLAP_INTERVAL while others wait, at most
# HEALTH_PROBES_IN_FLIGHT at once; the first healthy answer cancels the rest. Where a refusal
# is immediate (Linux, macOS) they seldom overlap: one every HEALTH_POLL_INTERVAL, as before.
HEALTH_OVERLAP_INTERVAL = 0.1
HEALTH_PROBES_IN_FLIGHT = 25
LOG_CLOSE_WAIT = 1.0  # seconds an exited server waits for its log's last lines to reach the disk


_OUT_OF_MEMORY = re.compile(
    r"out of memory|failed to allocate|unable to allocate|cudaMalloc failed|ErrorOutOfDeviceMemory"
    r"|std::bad_alloc|hipMalloc failed|insufficient memory", re.IGNORECASE)


def looks_out_of_memory(output: str) -> bool:
    """Whether a server's last output says it could not allocate its memory (llama.cpp's
    CPU, CUDA, ROCm and Vulkan wordings)."""
    return bool(_OUT_OF_MEMORY.search(output or ""))


class BackendError(Exception):
    """A server that could not start, died while loading, or never became healthy; its
    message and log tail are shown to clients, so any secret in them is replaced."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(redact_text(message))
        self.log_tail = redact_text(log_tail)


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


def build_launch(recipe: Recipe, llama_server: Path | None, port: int) -> LaunchSpec:
    """Turns a recipe into a command line; BackendError says what is missing."""
    env = child_env(dict(recipe.env))
    if recipe.backend == "llamacpp":
        assert recipe.model is not None
        if not recipe.model.is_file():
            raise BackendError(f"{recipe.path}: field 'model': file not found: {recipe.model}")
        if llama_server is None:
            raise BackendError(
                "no llama-server found: install one with `siesta engine install` (a prebuilt llama.cpp "
                "release; `siesta engine install --from-source` builds one), or set llama_server in "
                "settings.toml (or SIESTA_LLAMA_SERVER), or put one on PATH"
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


class BackendProcess:
    """A started model server process; :meth:`stop` ends its whole process tree."""

    def __init__(self, proc: asyncio.subprocess.Process, spec: LaunchSpec, log: BoundedLog,
                 reaper: ProcessReaper | None, tree: ServerTree) -> None:
        self._proc = proc
        self.spec = spec
        self.log = log
        self._reaper = reaper
        self._tree = tree  # what holds the server and everything it starts (see app.core.models.processes)
        self._log_broken = False  # set once writing the model's log failed: output is then dropped
        self.stopping = False
        self.base_url = f"http://127.0.0.1:{spec.port}"
        self._output = asyncio.Event()  # set on each chunk of output: a moment worth probing health
        self._printed = asyncio.Event()  # likewise, for load_output_until (which clears it)
        self._foreign_listener = False  # the port answered, but from a socket none of its processes owns
        self._ps: psutil.Process | None = None  # its memory and children (process_tree, memory)
        self.open_connection = asyncio.open_connection  # how a health probe connects (a test's fake: Windows)
        self._load_output: list[bytes] | None = []  # what it prints until loaded (see load_output)
        try:
            self._ps = psutil.Process(proc.pid)
        except psutil.Error:  # already gone and reaped
            self._ps = None
        self._pump = asyncio.create_task(self._pump_output(), name=f"log-pump-{proc.pid}")
        self._exit = asyncio.create_task(self._wait_exit(), name=f"exit-watch-{proc.pid}")

    @classmethod
    async def start(cls, spec: LaunchSpec, log: BoundedLog, reaper: ProcessReaper | None,
                    platform: Platform | None = None) -> "BackendProcess":
        """Starts the server in a tree of its own (``platform``: this OS's process layer).

        The tree is made first, so a tree the OS refuses starts nothing; the server is taken
        into it right after it starts, and one the OS will not let into it is ended at once:
        either way BackendError says why, and nothing is left running."""
        platform = platform or PLATFORM
        log.write_off_the_loop()
        log_error = safe_note(log, "starting: " + " ".join(redact_args(spec.argv)))
        try:
            tree = platform.new_tree()
        except ProcessSetupError as exc:
            safe_note(log, f"could not start: {exc}")
            log.close()
            raise BackendError(f"could not start {spec.argv[0]!r}: {exc}") from exc
        try:
            proc = await platform.spawn(
                *spec.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=spec.env,
                **tree.spawn_options(),
            )
        except OSError as exc:
            tree.release()
            safe_note(log, f"could not start: {exc}")
            log.close()
            raise BackendError(f"could not start {spec.argv[0]!r}: {exc.strerror or exc}") from exc
        except BaseException:  # cancelled: asyncio has ended the process it started, if any
            tree.release()
            log.close()
            raise
        try:
            tree.adopt(proc.pid)
        except ProcessSetupError as exc:
            backend = cls(proc, spec, log, None, tree)
            await backend._end_outside_the_tree(exc)  # raises BackendError
        if reaper is not None:
            reaper.add(proc.pid)
        backend = cls(proc, spec, log, reaper, tree)
        if log_error is not None:
            backend._log_failed(log_error)
        return backend

    async def _end_outside_the_tree(self, reason: ProcessSetupError) -> NoReturn:
        """The server started, but the OS would not let it into its tree: nothing could stop
        what it starts, or end it if Siesta dies. Ends it at once (the server alone: the
        tree never held it), waits for its exit and its last output, and raises BackendError."""
        self.stopping = True
        self._note(f"{reason}; stopping it")
        try:
            self._proc.kill()
        except ProcessLookupError:  # it has exited already
            pass
        code = await self.wait_exit()
        raise BackendError(f"could not run {self.spec.argv[0]!r}: {reason}; it was stopped (exit code {code})",
                           self.log.tail_text())

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
        if self._log_broken:
            self.log.keep_tail(data)
            return
        try:
            self.log.write(data)  # keeps the tail before it writes, so a failed write is in it too
        except Exception as exc:  # noqa: BLE001 - whatever the log does, the pipe must keep draining
            self._log_failed(exc)

    def _note(self, message: str) -> None:
        if not self._log_broken:
            error = safe_note(self.log, message)
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
            if self._load_output is not None:
                self._keep_load_output(chunk)
            self._output.set()
            self._printed.set()

    async def _wait_exit(self) -> int:
        code = await self._proc.wait()
        try:
            await asyncio.wait_for(self._pump, timeout=1.0)  # keep the last lines for the error
        except (asyncio.TimeoutError, asyncio.CancelledError):
            pass
        except Exception:  # noqa: BLE001 - the pump does not raise; never let its end hide the exit code
            _log.exception("output pump of server %s failed", self._proc.pid)
        self._tree.release()  # anything it left behind in its tree (with or without the watchdog)
        if self._reaper is not None:
            self._reaper.remove(self._proc.pid)
        self._note(f"exited with code {code}")
        try:
            self.log.close()
            # its last lines on disk before the exit is reported (bounded: a stuck disk delays nothing much)
            await asyncio.wait_for(asyncio.shield(self.log.wait_closed()), LOG_CLOSE_WAIT)
        except (OSError, asyncio.TimeoutError):
            pass
        if self.log.error is not None:
            self._log_failed(self.log.error)
        return code

    async def wait_exit(self) -> int:
        """Waits for the process to end; returns its exit code."""
        return await asyncio.shield(self._exit)

    async def wait_healthy(self, timeout: float) -> None:
        """Probes the health endpoint until it answers 200; BackendError on exit or time-out.

        A probe starts every HEALTH_POLL_INTERVAL, or at once when the server prints something
        (it logs as it becomes ready); while earlier probes are still connecting, one starts
        every HEALTH_OVERLAP_INTERVAL instead, HEALTH_PROBES_IN_FLIGHT at most. The first
        that answers 200 from the server's own socket ends the wait and the others are
        cancelled, as they are on exit, time-out or cancellation."""
        deadline = time.monotonic() + timeout
        probes: set[asyncio.Task[bool]] = set()
        next_probe = time.monotonic()
        try:
            while True:
                for probe in [p for p in probes if p.done()]:
                    probes.discard(probe)
                    if probe.result():
                        if await asyncio.to_thread(self._listener_is_ours):  # it reads /proc
                            return
                        self._foreign_listener = True
                if self._exit.done():
                    code = self._exit.result()
                    raise BackendError(f"server exited with code {code} while loading{self._foreign_note()}",
                                       self.log.tail_text())
                now = time.monotonic()
                if now >= deadline:
                    raise BackendError(
                        f"server did not become healthy at {self.spec.health_path} within {timeout:g} s"
                        f"{self._foreign_note()}",
                        self.log.tail_text(),
                    )
                if not probes:  # none waiting: the next a poll interval after the last, or at output
                    next_probe = min(next_probe, now + HEALTH_POLL_INTERVAL)
                room = len(probes) < HEALTH_PROBES_IN_FLIGHT
                if room and (now >= next_probe or (not probes and self._output.is_set())):
                    self._output.clear()  # before the probe: a line printed during it triggers the next one
                    probes.add(asyncio.create_task(self._probe_health(), name=f"health-probe-{self.pid}"))
                    next_probe = now + (HEALTH_OVERLAP_INTERVAL if len(probes) > 1 else HEALTH_POLL_INTERVAL)
                    room = len(probes) < HEALTH_PROBES_IN_FLIGHT
                # Wait until a probe answers, the next one is due, the server exits or (while
                # no probe is in flight) prints something.
                output = None if probes else asyncio.ensure_future(self._output.wait())
                wake: set[asyncio.Future[object]] = {self._exit, *probes, *([output] if output else [])}
                until = min(deadline, next_probe) if room else deadline
                await asyncio.wait(wake, timeout=max(until - now, 0), return_when=asyncio.FIRST_COMPLETED)
                if output is not None:
                    output.cancel()
        finally:
            for probe in probes:
                probe.cancel()
            if probes:
                await asyncio.wait(probes)  # their sockets closed before the load goes on

    def _foreign_note(self) -> str:
        if not self._foreign_listener:
            return ""
        return (f" (port {self.spec.port} was answered by another process, which took the port "
                f"before the server could)")

    def _listener_is_ours(self) -> bool:
        """Whether the socket listening on the server's port belongs to its process tree: the
        server itself, or a process it started. A probe that got 200 may have reached another
        program that took the free port first."""
        port = self.spec.port
        leader = self._ps
        if leader is None:
            return False
        listeners = _listening_socket_inodes(port)
        if listeners is None:  # no sock_diag (not Linux): ask psutil, per process of the tree
            return _tree_listens_psutil(leader, port)
        if not listeners:
            return False
        if _socket_inodes(leader.pid) & listeners:
            return True
        try:
            children = leader.children(recursive=True)
        except psutil.Error:
            return False
        return any(_socket_inodes(child.pid) & listeners for child in children)

    async def _probe_health(self) -> bool:
        """One GET of the health path, answered 200 or not. A bare connection and the status
        line only: a server prints dozens of lines while it starts, each one a probe, and an
        aiohttp request cost several times more CPU than this on the start-up path."""
        # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that lands
        # as its inner call finishes (here: a refused connection, every 10 ms while loading),
        # and a load cancelled by its last client then went on to the end.
        try:
            async with asyncio.timeout(HEALTH_PROBE_TIMEOUT):
                reader, writer = await self.open_connection("127.0.0.1", self.spec.port)
        except (OSError, TimeoutError):
            return False
        try:
            writer.write(f"GET {self.spec.health_path} HTTP/1.1\r\nHost: 127.0.0.1:{self.spec.port}\r\n"
                         "Connection: close\r\n\r\n".encode())
            async with asyncio.timeout(HEALTH_PROBE_TIMEOUT):
                status_line = await reader.readline()
            parts = status_line.split(None, 2)
            return len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1] == b"200"
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()

    async def stop(self, timeout: float) -> int:
        """Asks the server to stop (SIGTERM to its group; on Windows the end of its job), kills
        its tree after ``timeout``; returns the exit code."""
        self.stopping = True
        if not self._exit.done():
            self._tree.terminate()
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self._exit)
            except TimeoutError:
                self._note(f"did not stop within {timeout:g} s; killing")
                self._tree.kill()
        return await asyncio.shield(self._exit)

    def _keep_load_output(self, chunk: bytes) -> None:
        assert self._load_output is not None
        if sum(map(len, self._load_output)) < LOAD_OUTPUT_MAX_BYTES:
            self._load_output.append(chunk)

    def load_output(self) -> list[str]:
        """What the server printed while it loaded (bounded): where llama-server says what it
        allocated. Kept only until :meth:`end_load_output`, so a loaded server's output costs
        nothing more than its log."""
        data = b"".join(self._load_output or [])
        return data.decode("utf-8", "replace").splitlines()

    async def output_caught_up(self, limit: float = 0.5) -> None:
        """Waits (at most ``limit`` seconds) until the output pump has read everything the
        server has printed so far. A load's last lines (llama-server's buffer sizes) are in
        the pipe when its health check passes, but on a busy loop the pump may not have run yet."""
        try:
            import fcntl
            import termios
        except ImportError:  # Windows: no FIONREAD on a pipe; the lines may come a little late
            return
        stream = self._proc.stdout
        try:
            fd = self._proc._transport.get_pipe_transport(1).get_extra_info("pipe").fileno()  # type: ignore[attr-defined]
        except (AttributeError, OSError, ValueError):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while loop.time() < deadline:
            try:
                waiting = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
            except OSError:
                return  # the pipe is closed: the pump has had it all
            if waiting == 0 and not getattr(stream, "_buffer", b""):
                return
            await asyncio.sleep(0.002)

    async def load_output_until(self, done: Callable[[list[str]], bool], limit: float) -> None:
        """Waits (at most ``limit`` seconds) until ``done(load_output())`` holds. llama.cpp
        writes its log from a thread of its own, so lines it printed before its health check
        passed (the buffer sizes) can reach the pipe after it, more so on a busy machine."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while self._load_output is not None and not done(self.load_output()):
            remaining = deadline - loop.time()
            if remaining <= 0 or self._pump.done():
                return
            self._printed.clear()
            try:
                await asyncio.wait_for(self._printed.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def end_load_output(self) -> list[str]:
        lines = self.load_output()
        self._load_output = None
        return lines

    def process_tree(self) -> list[int]:
        """The pids of the server and its children now (blocking: call it off the loop, once per load)."""
        if self._ps is None:
            return [self.pid]
        try:
            return [self.pid] + [c.pid for c in self._ps.children(recursive=True)]
        except psutil.Error:
            return [self.pid]

    def memory(self) -> int | None:
        """Resident bytes of the server and its children (None when unknown)."""
        try:
            if self._ps is None:
                return None
            total = self._ps.memory_info().rss
            for child in self._ps.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass
            return total
        except psutil.Error:
            return None


# ---- which process listens on a port ---------------------------------------------------------------

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_TCP_LISTEN = 10


def _listening_socket_inodes(port: int) -> set[int] | None:
    """Inodes of the TCP sockets listening on ``port`` (any address, IPv4 and IPv6), asked
    from the kernel's sock_diag interface, as ``ss -l`` does: a dump of listening sockets
    only, cheap and open to any user. None where it is not available (not Linux)."""
    if not hasattr(socket, "AF_NETLINK"):
        return None
    inodes: set[int] = set()
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(1.0)
            for family in (socket.AF_INET, socket.AF_INET6):
                # struct inet_diag_req_v2: family, protocol, ext, pad, states; then the
                # inet_diag_sockid (sport, dport big-endian, src[4], dst[4], if, cookie[2]).
                request = (struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN)
                           + struct.pack(">HH", port, 0) + bytes(32) + struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF))
                nl.send(struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, 1, 0)
                        + request)
                done = False
                while not done:
                    data = nl.recv(65536)
                    offset = 0
                    while offset + 16 <= len(data):
                        length, kind = struct.unpack_from("=IH", data, offset)
                        if kind == _NLMSG_DONE:
                            done = True
                            break
                        if kind == _NLMSG_ERROR or length < 16:
                            return None
                        # struct inet_diag_msg: family, state, timer, retrans, inet_diag_sockid
                        # (48 bytes: sport first), expires, rqueue, wqueue, uid, inode
                        body = offset + 16
                        sport = struct.unpack_from(">H", data, body + 4)[0]
                        inode = struct.unpack_from("=I", data, body + 4 + 48 + 16)[0]
                        if sport == port:
                            inodes.add(inode)
                        offset += (length + 3) & ~3
                    if not data:
                        break
    except (OSError, struct.error):
        return None
    return inodes


def _socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` has open (from /proc/PID/fd; readable for one's own children)."""
    inodes: set[int] = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return inodes
    for fd in fds:
        try:
            link = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return inodes


def _tree_listens_psutil(leader: psutil.Process, port: int) -> bool:
    """The same question through psutil, where there is no sock_diag (macOS, Windows)."""
    try:
        procs = [leader, *leader.children(recursive=True)]
    except psutil.AccessDenied:
        return True  # the sockets cannot be seen here: trust the answer
    except psutil.Error:
        return False
    for proc in procs:
        try:
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                    return True
        except psutil.AccessDenied:
            return True
        except psutil.Error:
            continue
    return False
