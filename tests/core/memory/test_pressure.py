"""The mechanism that gives memory back (app/core/memory/pressure.py): reading MemAvailable, the
watch that calls the policy's check (its timer, its PSI trigger and its fallback), and the wait
for freed memory to show. Short injected intervals; every wait is for a condition."""

from __future__ import annotations

import asyncio
import logging
import os
import select
import socket
from pathlib import Path

import pytest

from app.core.memory.pressure import DeviceFree, PressureWatch, read_ram, wait_until_freed
from tests.portable import LINUX
from tests.waiting import until
from tests.waiting import until

pytestmark = pytest.mark.timeout(30)

TICK = 0.05
PSI = Path("/proc/pressure/memory")


class Checks:
    """A fake policy check: counts its calls, can block on a gate, can fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.running = 0
        self.most_at_once = 0
        self.gate: asyncio.Event | None = None
        self.fail = 0
        self.cancelled = 0

    async def __call__(self) -> None:
        self.calls += 1
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail:
                self.fail -= 1
                raise RuntimeError("check broke")
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1


def psi_usable() -> bool:
    if not LINUX:
        return False  # PSI is Linux's
    try:
        fd = os.open(PSI, os.O_RDWR | os.O_NONBLOCK)
    except OSError:
        return False
    os.close(fd)
    return hasattr(select, "epoll")


def open_fds() -> set[str]:
    """The descriptors this process has open, as /proc lists them; none elsewhere (the checks
    on them are then empty)."""
    if not LINUX:
        return set()
    return set(os.listdir("/proc/self/fd"))


# ---- read_ram ---------------------------------------------------------------------------------


def test_read_ram_gives_memtotal_and_memavailable_in_bytes(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "meminfo").write_text(
        "MemTotal:       16318712 kB\nMemFree:          812340 kB\nMemAvailable:    9876543 kB\n"
        "Buffers:          123456 kB\nCached:          4567890 kB\n")
    assert read_ram(tmp_path) == DeviceFree("ram", 16318712 * 1024, 9876543 * 1024)


def test_read_ram_without_memavailable_or_file_gives_none(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "meminfo").write_text("MemTotal:  2048 kB\nMemFree:  1024 kB\n")
    assert read_ram(tmp_path) == DeviceFree("ram", 2048 * 1024, None)  # MemFree is not a stand-in
    assert read_ram(tmp_path / "nowhere") == DeviceFree("ram", None, None)


def test_read_ram_of_this_machine() -> None:
    if not LINUX or not Path("/proc/meminfo").exists():
        pytest.skip("no /proc/meminfo")
    ram = read_ram()
    assert ram.total and ram.free is not None and 0 < ram.free <= ram.total


# ---- polling ----------------------------------------------------------------------------------


async def test_checks_every_interval_while_active(tmp_path: Path) -> None:
    checks = Checks()
    watch = PressureWatch(checks, lambda: True, interval=TICK, psi_path=tmp_path / "no-psi")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    watch.start()
    try:
        await until(lambda: checks.calls >= 6)
        elapsed = loop.time() - t0
        assert elapsed >= 5 * TICK  # one per interval, not a busy loop
        calls, t1 = checks.calls, loop.time()
        await asyncio.sleep(10 * TICK)
        ticks = (loop.time() - t1) / TICK
        assert 0.3 * ticks <= checks.calls - calls <= ticks + 1  # late ticks under load, never extra ones
        assert checks.most_at_once == 1
    finally:
        await watch.stop()


async def test_nothing_while_inactive_and_wake_starts_it(tmp_path: Path) -> None:
    checks = Checks()
    active = False
    watch = PressureWatch(checks, lambda: active, interval=TICK, psi_path=tmp_path / "no-psi")
    watch.start()
    try:
        await asyncio.sleep(6 * TICK)
        assert checks.calls == 0 and not watch.polling and not watch.listening
        active = True  # a model loaded, but nobody said so: still nothing
        await asyncio.sleep(4 * TICK)
        assert checks.calls == 0 and not watch.polling
        watch.wake()
        assert watch.polling
        await until(lambda: checks.calls >= 2)
        watch.wake()  # again: no second timer
        calls = checks.calls
        await asyncio.sleep(6 * TICK)
        assert checks.calls - calls <= 8

        active = False  # the last model unloaded: the next tick ends the polling
        await until(lambda: not watch.polling)
        calls = checks.calls
        await asyncio.sleep(6 * TICK)
        assert checks.calls == calls and not watch.polling
    finally:
        await watch.stop()


async def test_a_tick_during_a_running_check_is_skipped(tmp_path: Path) -> None:
    checks = Checks()
    checks.gate = asyncio.Event()
    watch = PressureWatch(checks, lambda: True, interval=TICK, psi_path=tmp_path / "no-psi")
    watch.start()
    try:
        await until(lambda: checks.calls == 1)
        await asyncio.sleep(8 * TICK)  # eight ticks come and go while the check runs
        assert checks.calls == 1 and checks.running == 1
        checks.gate.set()
        await until(lambda: checks.calls >= 3)
        assert checks.most_at_once == 1
    finally:
        await watch.stop()


async def test_a_failing_check_is_logged_and_polling_goes_on(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    checks = Checks()
    checks.fail = 2
    watch = PressureWatch(checks, lambda: True, interval=TICK, psi_path=tmp_path / "no-psi")
    with caplog.at_level(logging.ERROR, logger="app.core.memory.pressure"):
        watch.start()
        try:
            await until(lambda: checks.calls >= 4)
        finally:
            await watch.stop()
    failures = [r for r in caplog.records if "memory pressure check failed" in r.getMessage()]
    assert len(failures) == 2 and failures[0].exc_info is not None


async def test_stop_cancels_the_timer_the_running_check_and_the_psi_fd() -> None:
    checks = Checks()
    checks.gate = asyncio.Event()  # never set: the check runs until cancelled
    watch = PressureWatch(checks, lambda: True, interval=TICK)
    fds_before = open_fds()
    watch.start()
    await until(lambda: checks.calls == 1)
    await watch.stop()
    assert checks.cancelled == 1 and checks.running == 0
    assert not watch.polling and not watch.listening and not watch.psi_registered
    await asyncio.sleep(6 * TICK)
    assert checks.calls == 1
    if fds_before:
        assert open_fds() <= fds_before | {"0", "1", "2"}
    watch.wake()  # after stop: nothing
    assert not watch.polling


async def test_wait_until_freed_sees_memory_reported_late() -> None:
    loop = asyncio.get_running_loop()
    freed_at = loop.time() + 0.2  # the driver shows the freed memory 200 ms after the unload
    reads: list[float] = []

    async def read() -> int | None:
        reads.append(loop.time())
        if len(reads) == 1:
            return None  # unknown once
        return 8 * 2**30 if loop.time() >= freed_at else 2 * 2**30

    assert await wait_until_freed(read, 6 * 2**30, timeout=2.0, poll=TICK)
    assert reads[-1] >= freed_at and len(reads) < 2.0 / TICK
    assert reads[-1] - freed_at < 3 * TICK  # seen within a poll or so

    reads.clear()
    t0 = loop.time()
    assert not await wait_until_freed(read, 64 * 2**30, timeout=0.3, poll=TICK)
    assert 0.3 <= loop.time() - t0 < 1.0 and len(reads) <= 0.3 / TICK + 2


# ---- the kernel's pressure notifications -------------------------------------------------------


@pytest.mark.skipif(not LINUX or not psi_usable(), reason="/proc/pressure/memory missing or not writable here")
async def test_psi_trigger_registers_on_this_machine() -> None:
    checks = Checks()
    active = True
    watch = PressureWatch(checks, lambda: active, interval=TICK)
    watch.start()
    try:
        assert watch.psi_registered and watch.listening and watch.psi_unavailable is None
        fd = watch._psi_fd
        assert fd is not None and os.readlink(f"/proc/self/fd/{fd}") == str(PSI)
        await until(lambda: checks.calls >= 2)  # the timer runs beside it
        active = False
        await until(lambda: not watch.polling)
        assert not watch.listening and watch.psi_registered  # idle: no reader, the trigger kept
        active = True
        watch.wake()
        assert watch.listening and watch.polling
    finally:
        await watch.stop()
    assert not watch.psi_registered and watch._psi_fd is None


async def test_no_psi_file_falls_back_to_polling_logged_once(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    checks = Checks()
    active = True
    watch = PressureWatch(checks, lambda: active, interval=TICK, psi_path=tmp_path / "pressure" / "memory")
    with caplog.at_level(logging.DEBUG, logger="app.core.memory.pressure"):
        watch.start()
        try:
            assert not watch.psi_registered and not watch.listening
            assert watch.psi_unavailable is not None and "ENOENT" in watch.psi_unavailable
            await until(lambda: checks.calls >= 3)
            active = False
            await until(lambda: not watch.polling)
            active = True
            watch.wake()
            await until(lambda: checks.calls >= 5)
        finally:
            await watch.stop()
    notes = [r for r in caplog.records if "no PSI notifications" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.DEBUG


async def test_a_file_that_is_not_psi_falls_back_to_polling(tmp_path: Path) -> None:
    fake = tmp_path / "memory"
    fake.write_text("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    fds_before = open_fds()
    checks = Checks()
    watch = PressureWatch(checks, lambda: True, interval=TICK, psi_path=fake)
    watch.start()
    try:
        # writing the trigger into a regular file works, but epoll refuses a regular file (EPERM)
        assert not watch.psi_registered and watch.psi_unavailable is not None
        assert open_fds() == fds_before  # the refused fd was closed
        await until(lambda: checks.calls >= 3)
    finally:
        await watch.stop()


async def test_a_refused_trigger_falls_back_to_polling() -> None:
    if not psi_usable():
        pytest.skip("/proc/pressure/memory missing or not writable here")
    checks = Checks()
    watch = PressureWatch(checks, lambda: True, interval=TICK, psi_trigger="some 150000 1234567")  # not 2 s x n
    watch.start()
    try:
        if watch.psi_registered:  # a privileged process may use any window from 500 ms to 10 s
            pytest.skip("this process may use any PSI window (privileged)")
        assert "EINVAL" in (watch.psi_unavailable or "")
        await until(lambda: checks.calls >= 2)
    finally:
        await watch.stop()


async def test_a_garbled_trigger_falls_back_to_polling() -> None:
    if not psi_usable():
        pytest.skip("/proc/pressure/memory missing or not writable here")
    checks = Checks()
    watch = PressureWatch(checks, lambda: True, interval=TICK, psi_trigger="often 1 2")
    watch.start()
    try:
        assert not watch.psi_registered and "EINVAL" in (watch.psi_unavailable or "")
        await until(lambda: checks.calls >= 2)
    finally:
        await watch.stop()


class UrgentDataWatch(PressureWatch):
    """The watch with its PSI fd replaced by a TCP socket that receives out-of-band data: the
    kernel signals both with POLLPRI, so this drives the same epoll-in-the-loop path as a real
    pressure notification, on demand (edge-triggered: a poll clears it, as it clears a PSI event)."""

    def __init__(self, receiver: socket.socket, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.receiver = receiver

    def _open_psi(self) -> None:
        if self._psi_tried:
            return
        self._psi_tried = True
        self._epoll = select.epoll()
        self._epoll.register(self.receiver.fileno(), select.EPOLLPRI | select.EPOLLET)


@pytest.fixture
def urgent_pair():  # noqa: ANN201
    with socket.create_server(("127.0.0.1", 0)) as server:
        sender = socket.create_connection(server.getsockname())
        receiver, _ = server.accept()
    yield sender, receiver
    sender.close()
    receiver.close()


@pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll is Linux only")
async def test_a_pressure_notification_runs_the_check_at_once(urgent_pair) -> None:  # noqa: ANN001
    sender, receiver = urgent_pair
    checks = Checks()
    active = True
    watch = UrgentDataWatch(receiver, checks, lambda: active, interval=60.0)  # the timer cannot explain a check
    watch.start()
    try:
        assert watch.listening
        await asyncio.sleep(0.1)
        assert checks.calls == 0
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        sender.send(b"!", socket.MSG_OOB)
        await until(lambda: checks.calls == 1, timeout=2.0)
        assert loop.time() - t0 < 0.5 and watch.pressure_events == 1
        await asyncio.sleep(0.1)
        assert checks.calls == 1  # drained: no second call for the same notification

        # pressure while a check runs: that check is not doubled, one more runs after it
        checks.gate = asyncio.Event()
        sender.send(b"!", socket.MSG_OOB)
        await until(lambda: checks.calls == 2)
        sender.send(b"!", socket.MSG_OOB)
        await until(lambda: watch.pressure_events == 3)
        assert checks.calls == 2 and checks.running == 1
        checks.gate.set()
        await until(lambda: checks.calls == 3)
        await asyncio.sleep(0.1)
        assert checks.calls == 3 and checks.most_at_once == 1

        # inactive: the reader is off the loop, and a notification meanwhile is discarded on wake
        active = False
        watch._sleep()  # what the next tick would do (the timer is 60 s away)
        assert not watch.listening
        sender.send(b"!", socket.MSG_OOB)
        await asyncio.sleep(0.1)
        assert checks.calls == 3
        active = True
        watch.wake()
        await asyncio.sleep(0.1)
        assert checks.calls == 3 and watch.listening
    finally:
        await watch.stop()


async def test_look_now_runs_a_check_at_once_while_active_and_nothing_while_inactive() -> None:
    checks: list[float] = []
    active = [True]

    async def check() -> None:
        checks.append(asyncio.get_running_loop().time())

    watch = PressureWatch(check, lambda: active[0], interval=60.0, psi_path=Path("/nonexistent/psi"), signal=None)
    watch.start()
    try:
        watch.look_now()
        await until(lambda: len(checks) == 1, 5)
        active[0] = False
        watch.look_now()
        await asyncio.sleep(0)
        assert len(checks) == 1
    finally:
        await watch.stop()


async def test_an_interval_that_shortens_after_a_check_brings_the_next_tick_forward() -> None:
    """The policy polls every 0.25 s near the floor: a check that asks for a shorter interval
    moves the tick already set (here 60 s away) to that interval."""
    checks: list[float] = []
    interval = [60.0]

    async def check() -> None:
        checks.append(asyncio.get_running_loop().time())
        interval[0] = 0.05  # e.g. free memory came near the floor

    watch = PressureWatch(check, lambda: True, interval=lambda: interval[0], psi_path=Path("/nonexistent/psi"),
                          signal=None)
    watch.start()  # the first tick is 60 s away
    try:
        watch.look_now()
        await until(lambda: len(checks) >= 2, 5)  # the second came 0.05 s later, not 60 s
        assert watch.interval == 0.05
    finally:
        await watch.stop()
