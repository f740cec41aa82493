"""Faults around one server process (app/core/models/backend.py): a log that cannot be written,
process groups and reused pids, a foreign server on the chosen port.

Every test runs real child processes (small ``python -c`` scripts), never llama-server.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.models.backend import BackendError, BackendProcess, BoundedLog, LaunchSpec
from app.core.models.reaper import ProcessReaper
from tests.portable import LINUX, kill_hard, pid_alive, posix_only

pytestmark = pytest.mark.timeout(30)

# More than any pipe buffer: a server whose output nobody drains blocks in write() long before the end.
FLOOD = r"""
import sys
line = b"x" * 1023 + b"\n"
for _ in range(1100):
    sys.stdout.buffer.write(line)
sys.stdout.buffer.write(b"last line of the flood\n")
sys.stdout.flush()
"""


def python_spec(source: str, port: int = 1) -> LaunchSpec:
    return LaunchSpec(argv=(sys.executable, "-c", source), env=dict(os.environ), port=port, health_path="/health")


class FullDiskLog(BoundedLog):
    """A model log whose disk fills up after ``room`` bytes: every later write raises ENOSPC."""

    def __init__(self, path: Path, room: int) -> None:
        super().__init__(path)
        self.room = room
        self.failed_writes = 0

    def write(self, data: bytes) -> None:
        if len(data) > self.room:
            self.failed_writes += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        super().write(data)


async def _run_flood(log: BoundedLog) -> tuple[BackendProcess, int]:
    proc = await BackendProcess.start(python_spec(FLOOD), log, reaper=None)
    try:
        code = await asyncio.wait_for(proc.wait_exit(), timeout=10)
    finally:
        if proc.returncode is None:
            await proc.stop(1)
    return proc, code


async def test_server_output_is_drained_after_the_log_disk_fills(tmp_path, caplog):
    """The log write fails mid-run (ENOSPC): the server's 1 MB of output is still read to the
    end, it exits normally, wait_exit returns its code, and Siesta's own log says so once."""
    log = FullDiskLog(tmp_path / "m.log", room=200_000)
    with caplog.at_level(logging.WARNING):
        proc, code = await _run_flood(log)
    assert code == 0
    assert log.failed_writes >= 1
    assert "last line of the flood" in proc.log.tail_text()  # the tail for error messages still follows
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "m.log" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "No space left" in warnings[0].getMessage()


async def test_a_log_that_cannot_be_written_at_all_does_not_stop_the_server(tmp_path, caplog):
    """The disk is full from the start: not even the 'starting' note can be written."""
    log = FullDiskLog(tmp_path / "m.log", room=0)
    with caplog.at_level(logging.WARNING):
        proc, code = await _run_flood(log)
    assert code == 0
    assert len([r for r in caplog.records if "m.log" in r.getMessage()]) == 1


# ---- process groups: leftovers, and a group id that a reused pid now names ----------------------

def pid_gone(pid: int) -> bool:
    """True when ``pid`` has ended (a zombie has ended too)."""
    return not pid_alive(pid)


async def wait_gone(pid: int, timeout: float) -> bool:
    """Waits until ``pid`` ends (through a pidfd, which becomes readable when the process exits;
    where there are none, by polling)."""
    if not hasattr(os, "pidfd_open"):
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not pid_gone(pid) and loop.time() < end:
            await asyncio.sleep(0.02)
        return pid_gone(pid)
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    loop.add_reader(fd, lambda: ended.done() or ended.set_result(None))
    try:
        await asyncio.wait_for(ended, timeout)
        return True
    except asyncio.TimeoutError:
        return pid_gone(pid)
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _kill_quietly(pid: int | None) -> None:
    if pid is not None and not pid_gone(pid):
        try:
            kill_hard(pid)
        except ProcessLookupError:
            pass


def _printed_pid(proc: BackendProcess, label: str) -> int:
    line = next(line for line in proc.log.tail if line.startswith(label + " "))
    return int(line.split()[1])


# The server starts a child in its own process group (a worker it forgets to stop) and exits.
LEAVES_A_WORKER = r"""
import subprocess, sys
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(f"worker-pid {worker.pid}", flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs pidfd_open (Linux)")
async def test_leftover_group_is_killed_without_a_watchdog(tmp_path):
    proc = await BackendProcess.start(python_spec(LEAVES_A_WORKER), BoundedLog(tmp_path / "m.log"), reaper=None)
    worker = None
    try:
        assert await asyncio.wait_for(proc.wait_exit(), 10) == 0
        worker = _printed_pid(proc, "worker-pid")
        assert await wait_gone(worker, 3), "the server's leftover worker is still running"
    finally:
        _kill_quietly(worker)


# The server starts a helper that leaves its process group (so the group is empty once the
# server has exited) but keeps the server's output pipe open for a moment; then it exits.
# Until the pipe closes, Siesta sees the server as still running, though it has been reaped.
ESCAPES_AND_HOLDS_THE_PIPE = r"""
import subprocess, sys
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.6)"], start_new_session=True)
print(f"helper-pid {helper.pid}", flush=True)
"""

NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"


def _can_choose_pids() -> bool:
    if not LINUX:
        return False
    try:
        with open(NS_LAST_PID, "r+"):
            return True
    except OSError:
        return False


def _start_with_pid(pid: int) -> subprocess.Popen | None:
    """Starts an unrelated process, a session (and group) leader, whose pid is ``pid``:
    the kernel hands out ns_last_pid + 1 next. Retries when another fork takes it first."""
    if not LINUX:
        return None
    for _ in range(200):
        with open(NS_LAST_PID, "w") as fh:
            fh.write(str(pid - 1))
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        if other.pid == pid:
            return other
        other.kill()
        other.wait()
    return None


@pytest.mark.skipif(not _can_choose_pids() or not hasattr(os, "pidfd_open"),
                    reason="needs a writable /proc/sys/kernel/ns_last_pid to reuse a pid on purpose (root)")
async def test_a_reused_pid_is_never_killed_as_the_old_process_group(tmp_path):
    """The server exits and is reaped while its output is still held open; its pid is then
    given to an unrelated process that leads its own group. Neither the stop that follows
    (SIGTERM, then SIGKILL) nor the clean-up after the exit may signal that group."""
    reaper = ProcessReaper()
    proc = await BackendProcess.start(python_spec(ESCAPES_AND_HOLDS_THE_PIPE), BoundedLog(tmp_path / "m.log"), reaper)
    other = None
    try:
        assert await wait_gone(proc.pid, 5)
        other = _start_with_pid(proc.pid)  # succeeds once the server has been reaped
        if other is None:
            pytest.skip("could not get the reused pid (other processes forked first)")
        assert os.getpgid(other.pid) == proc.pid  # the old group id now names the unrelated group
        assert not proc._exit.done()  # the helper still holds the output: stop() takes the signalling path
        assert await asyncio.wait_for(proc.stop(0.2), 10) == 0
        with pytest.raises(subprocess.TimeoutExpired):
            other.wait(timeout=0.3)  # alive: neither a SIGTERM nor a SIGKILL reached it
    finally:
        if other is not None:
            other.kill()
            other.wait()
        reaper.close()


@pytest.mark.skipif(not _can_choose_pids(), reason="needs a writable /proc/sys/kernel/ns_last_pid (root)")
def test_watchdog_does_not_kill_a_group_id_that_a_reused_pid_now_names():
    """Siesta dies between a server's exit and its removal from the watchdog, and the pid
    has been reused meanwhile: the watchdog must leave the new owner of that id alone."""
    reaper = ProcessReaper()
    other = None
    try:
        server = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
        reaper.add(server.pid)
        server.wait()
        other = _start_with_pid(server.pid)
        if other is None:
            pytest.skip("could not get the reused pid (other processes forked first)")
        reaper.close()  # what Siesta's death does: the watchdog kills every registered group
        with pytest.raises(subprocess.TimeoutExpired):
            other.wait(timeout=0.3)
    finally:
        reaper.close()
        if other is not None:
            other.kill()
            other.wait()


@posix_only  # the watchdog kills process groups with SIGKILL
def test_watchdog_still_kills_a_registered_group_when_siesta_dies():
    reaper = ProcessReaper()
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        reaper.add(server.pid)
        reaper.close()
        assert server.wait(timeout=5) == -signal.SIGKILL
    finally:
        server.kill()
        server.wait()


# ---- the health probe must reach the server Siesta started ---------------------------------------

HEALTH_SERVER = r"""
import http.server, sys
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
try:
    server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health)
except OSError as exc:
    print("cannot listen:", exc, flush=True)
    sys.exit(1)
print("listening", flush=True)
server.serve_forever()
"""

# A wrapper that runs the real server as its child (a shell script, a launcher): the
# listening socket belongs to the leader's child, which is still Siesta's server.
WRAPPED_HEALTH_SERVER = (
    "import subprocess, sys; sys.exit(subprocess.call([sys.executable, '-c', " + repr(HEALTH_SERVER) + ", sys.argv[1]]))"
)


def health_spec(source: str, port: int) -> LaunchSpec:
    spec = python_spec(source, port)
    return LaunchSpec(argv=(*spec.argv, str(port)), env=spec.env, port=port, health_path="/health")


@pytest.fixture
async def foreign_server():
    """Another program's HTTP server, listening on a port before the model server can take it."""
    probes = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        probes.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], probes
    server.close()
    await server.wait_closed()


async def test_health_from_a_foreign_server_on_the_port_is_not_believed(tmp_path, foreign_server):
    port, probes = foreign_server
    proc = await BackendProcess.start(health_spec(HEALTH_SERVER, port), BoundedLog(tmp_path / "m.log"), reaper=None)
    try:
        with pytest.raises(BackendError) as info:
            await proc.wait_healthy(5)
        assert probes, "the probe did reach the foreign server"
        assert "exited with code 1" in str(info.value)
        assert f"port {port}" in str(info.value) and "another process" in str(info.value)
        assert "cannot listen" in info.value.log_tail
    finally:
        await proc.stop(1)


@pytest.mark.parametrize("source", [HEALTH_SERVER, WRAPPED_HEALTH_SERVER], ids=["leader", "child-of-leader"])
async def test_health_from_the_servers_own_process_tree_is_believed(tmp_path, source):
    from app.core.models.backend import free_port

    port = free_port()
    proc = await BackendProcess.start(health_spec(source, port), BoundedLog(tmp_path / "m.log"), reaper=None)
    try:
        await proc.wait_healthy(10)
    finally:
        await proc.stop(2)


# ---- health probes overlap where a refused connect is slow (Windows) ------------------------------

# The health server, once the test says so (the file argv[2] exists): until then nothing listens.
GATED_HEALTH_SERVER = r"""
import os, sys, time
while not os.path.exists(sys.argv[2]):
    time.sleep(0.005)
""" + HEALTH_SERVER


class SlowRefusals:
    """``asyncio.open_connection`` as on Windows, where a connection to a loopback port nobody
    listens on is refused only after some 2 s (the SYN is retried before the RST is believed):
    a real connection, whose refusal is held back ``delay`` seconds (``None``: a connect that
    never ends). Counts the attempts in flight, the most at once, those cancelled, and how
    many refusals were still being held back when one connected."""

    def __init__(self, delay: float | None = 2.0, full_at: int = 0) -> None:
        self.delay, self.full_at = delay, full_at
        self.started = self.in_flight = self.most = self.cancelled = self.refusing = 0
        self.refusing_at_connect: list[int] = []
        self.refused = asyncio.Event()  # an attempt met the closed port
        self.full = asyncio.Event()  # full_at attempts in flight at once

    async def __call__(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.started += 1
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        if self.in_flight == self.full_at:
            self.full.set()
        try:
            if self.delay is None:
                await asyncio.Event().wait()
            try:
                connection = await asyncio.open_connection(host, port)
            except ConnectionRefusedError:
                self.refused.set()
                self.refusing += 1
                try:
                    await asyncio.sleep(self.delay)  # the refusal as late as Windows reports it
                finally:
                    self.refusing -= 1
                raise
            self.refusing_at_connect.append(self.refusing)
            return connection
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1


async def test_a_connect_refused_after_2_s_does_not_hold_up_the_health_check(tmp_path):
    """While a probe waits out a slow refusal, later probes start: the server is found healthy
    as soon as it listens, and the probes still waiting are cancelled."""
    from app.core.models import backend

    port, go = backend.free_port(), tmp_path / "go"
    spec = LaunchSpec(argv=(sys.executable, "-c", GATED_HEALTH_SERVER, str(port), str(go)), env=dict(os.environ),
                      port=port, health_path="/health")
    proc = await BackendProcess.start(spec, BoundedLog(tmp_path / "m.log"), reaper=None)
    slow = SlowRefusals(delay=2.0)
    proc.open_connection = slow
    try:
        healthy = asyncio.create_task(proc.wait_healthy(20))
        await asyncio.wait_for(slow.refused.wait(), 10)
        go.touch()  # it listens from now on
        await asyncio.wait_for(healthy, 10)
        assert slow.refusing_at_connect and slow.refusing_at_connect[0] > 0, \
            "the probe that connected waited for the slow refusals before it"
        assert slow.in_flight == 0 and slow.refusing == 0 and 1 < slow.most <= backend.HEALTH_PROBES_IN_FLIGHT
    finally:
        await proc.stop(2)


async def test_probes_in_flight_are_bounded_and_cancelled_with_the_wait(tmp_path, monkeypatch):
    """Connects that never end: no more than HEALTH_PROBES_IN_FLIGHT at once, and every one is
    cancelled when the wait ends, by its time-out or by its own cancellation (a load given up)."""
    from app.core.models import backend

    monkeypatch.setattr(backend, "HEALTH_PROBES_IN_FLIGHT", 3)
    monkeypatch.setattr(backend, "HEALTH_OVERLAP_INTERVAL", 0.01)
    proc = await BackendProcess.start(python_spec("import time; time.sleep(60)", port=backend.free_port()),
                                      BoundedLog(tmp_path / "m.log"), reaper=None)
    try:
        hanging = SlowRefusals(delay=None, full_at=3)
        proc.open_connection = hanging
        with pytest.raises(BackendError, match="did not become healthy"):
            await proc.wait_healthy(0.3)
        assert hanging.most == 3 and hanging.in_flight == 0 and hanging.cancelled == hanging.started

        hanging = SlowRefusals(delay=None, full_at=3)
        proc.open_connection = hanging
        waiting = asyncio.create_task(proc.wait_healthy(30))
        await asyncio.wait_for(hanging.full.wait(), 10)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert hanging.most == 3 and hanging.in_flight == 0 and hanging.cancelled == hanging.started == 3
    finally:
        await proc.stop(2)


async def test_a_log_that_cannot_even_be_opened_does_not_stop_the_server(tmp_path, caplog):
    """The log folder cannot be created (a file is in the way): the server still runs, its
    output is drained and kept for error messages, and Siesta's own log says so once."""
    (tmp_path / "logs").write_text("not a folder")
    log = BoundedLog(tmp_path / "logs" / "m.log")
    with caplog.at_level(logging.WARNING):
        proc, code = await _run_flood(log)
    assert code == 0
    assert "last line of the flood" in proc.log.tail_text()
    assert len([r for r in caplog.records if "m.log" in r.getMessage()]) == 1


# llama.cpp writes its log from a thread of its own: the buffer sizes can reach the pipe after
# health answered. This server prints its first buffer line, then the rest once the test
# creates the file named by its argument.
LATE_LOG = r"""
import os, sys, time
print("CPU_Mapped model buffer size =     0.59 MiB", flush=True)
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.005)
print("CPU compute buffer size =     1.51 MiB", flush=True)
print("srv  llama_server: listening on http://127.0.0.1:1", flush=True)
time.sleep(60)
"""


async def test_the_rest_of_a_load_output_is_awaited_until_it_says_listening(tmp_path):
    from app.core.memory.gguf_estimate import load_printed, parse_buffer_sizes

    go = tmp_path / "go"
    spec = python_spec(LATE_LOG)
    spec = LaunchSpec(argv=(*spec.argv, str(go)), env=spec.env, port=spec.port, health_path="/health")
    proc = await BackendProcess.start(spec, BoundedLog(tmp_path / "m.log"), reaper=None)
    try:
        await proc.load_output_until(lambda lines: bool(lines), 10)  # the first line is in
        assert not load_printed(proc.load_output())
        waiting = asyncio.ensure_future(proc.load_output_until(load_printed, 10))
        await asyncio.sleep(0)
        assert not waiting.done()
        go.touch()
        await asyncio.wait_for(waiting, 10)
        assert parse_buffer_sizes(proc.end_load_output()) == {"ram": round(0.59 * 2**20) + round(1.51 * 2**20)}
    finally:
        await proc.stop(2)


async def test_a_load_output_that_never_says_listening_is_waited_for_at_most_the_limit(tmp_path):
    from app.core.memory.gguf_estimate import load_printed

    proc = await BackendProcess.start(python_spec(LATE_LOG.replace("go = sys.argv[1]", "go = '/nonexistent'")),
                                      BoundedLog(tmp_path / "m.log"), reaper=None)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await proc.load_output_until(load_printed, 0.2)
        assert 0.2 <= loop.time() - started < 5 and not load_printed(proc.load_output())
    finally:
        await proc.stop(2)
