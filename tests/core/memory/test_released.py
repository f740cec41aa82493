"""The credit for memory whose processes have exited but which a device does not show yet."""

from __future__ import annotations

from app.core.memory.fit import DeviceState
from app.core.memory.released import SHOWS_WITHIN, ReleasedMemory

GB = 2**30


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_gpu_counts_the_exited_bytes_until_it_shows_them_or_the_window_ends() -> None:
    clock = Clock()
    released = ReleasedMemory(clock)
    released.record("gpu0", 4 * GB, free_before=1 * GB)
    assert released.credit("gpu0", 1 * GB) == 4 * GB  # the driver shows nothing yet
    assert released.credit("gpu0", 3 * GB) == 2 * GB  # half of it shows
    assert released.credit("gpu0", 6 * GB) == 0  # all of it shows
    assert released.adjust({"gpu0": DeviceState(24 * GB, 2 * GB)}) == {"gpu0": DeviceState(24 * GB, 5 * GB)}
    clock.t += SHOWS_WITHIN
    assert released.credit("gpu0", 1 * GB) == 0  # at most SHOWS_WITHIN seconds


def test_ram_gets_no_credit_since_the_kernel_shows_an_exit_at_once() -> None:
    released = ReleasedMemory(Clock())
    released.record("ram", 4 * GB, free_before=1 * GB)
    assert released.credit("ram", 1 * GB) == 0
    released.record("gpu0", 4 * GB, free_before=None)  # nothing read before: nothing credited
    assert released.credit("gpu0", 0) == 0
