"""The memory rules on their own, over figures (fast, deterministic): does a load fit, and
which devices are below the floor."""

from __future__ import annotations

from dataclasses import dataclass

from app.core.memory.fit import DeviceState, device_label, place_total, placed, shortfall, under_floor
from app.core.memory.gguf_estimate import MemoryEstimate

GB = 2**30


@dataclass(frozen=True)
class Share:
    """A limit that is a share of each device's total (as "90%")."""

    share: float

    def for_device(self, device: str, total: int | None) -> int | None:
        return int(total * self.share) if total is not None else None


@dataclass(frozen=True)
class Size:
    size: int

    def for_device(self, device: str, total: int | None) -> int | None:
        return self.size


DEVICES = {"ram": DeviceState(total=32 * GB, free=20 * GB), "gpu0": DeviceState(total=24 * GB, free=14 * GB)}


def test_a_load_that_fits_everywhere() -> None:
    assert shortfall("a", {"ram": 1 * GB, "gpu0": 6 * GB}, DEVICES, {"gpu0": 8 * GB}, {}, Share(0.9), Share(0.05)) is None


def test_over_the_budget_with_what_siesta_already_uses_waits() -> None:
    short = shortfall("qwen", {"gpu0": 8 * GB}, DEVICES, {"gpu0": 6 * GB}, {}, Size(12 * GB), None)
    assert short is not None and short.device == "gpu0" and not short.never
    assert "needs 8.0 GB on GPU 0" in short.message and "6.0 GB of its 12.0 GB budget" in short.message


def test_larger_than_the_budget_never_fits() -> None:
    short = shortfall("big", {"gpu0": 7.9 * GB}, DEVICES, {}, {}, Size(6 * GB), None)
    assert short is not None and short.never
    assert short.message == "model 'big' needs 7.9 GB, more than the memory budget of 6.0 GB on GPU 0"


def test_larger_than_the_device_never_fits_even_without_a_budget() -> None:
    short = shortfall("huge", {"gpu0": 30 * GB}, DEVICES, {}, {}, None, None)
    assert short is not None and short.never and "more than GPU 0 has (24.0 GB)" in short.message


def test_the_floor_keeps_memory_free_for_other_programs() -> None:
    # 14 GB free, 5% of 24 GB (1.2 GB) kept free: 12.8 GB of room
    assert shortfall("a", {"gpu0": 12 * GB}, DEVICES, {}, {}, None, Share(0.05)) is None
    short = shortfall("a", {"gpu0": 13 * GB}, DEVICES, {}, {}, None, Share(0.05))
    assert short is not None and not short.never and "kept free for other programs" in short.message


def test_loads_admitted_but_not_yet_measured_count_against_free_memory() -> None:
    assert shortfall("a", {"gpu0": 8 * GB}, DEVICES, {}, {"gpu0": 7 * GB}, None, None) is not None
    assert shortfall("a", {"gpu0": 7 * GB}, DEVICES, {}, {"gpu0": 7 * GB}, None, None) is None


def test_unknown_figures_never_refuse() -> None:
    unknown = {"gpu0": DeviceState(total=None, free=None)}
    assert shortfall("a", {"gpu0": 100 * GB}, unknown, {}, {}, Share(0.9), Share(0.05)) is None


def test_devices_below_the_floor() -> None:
    devices = {"ram": DeviceState(32 * GB, 1 * GB), "gpu0": DeviceState(24 * GB, 10 * GB),
               "gpu1": DeviceState(None, None)}
    assert under_floor(devices, Size(2 * GB)) == {"ram": 1 * GB}
    assert under_floor(devices, None) == {}


def test_a_total_without_a_split_goes_to_the_first_gpu_or_ram() -> None:
    assert place_total(5, DEVICES) == {"gpu0": 5}
    assert place_total(5, {"ram": DEVICES["ram"]}) == {"ram": 5}
    assert device_label("gpu1") == "GPU 1" and device_label("ram") == "RAM"


def test_an_estimate_is_placed_by_its_own_split_else_by_its_total() -> None:
    split = MemoryEstimate(total=7 * GB, by_device={"ram": 1 * GB, "gpu0": 6 * GB}, source="gguf")
    assert placed(split, DEVICES) == {"ram": 1 * GB, "gpu0": 6 * GB}
    assert placed(split, {}) == {"ram": 1 * GB, "gpu0": 6 * GB}  # its own split, whatever the devices
    total = MemoryEstimate(total=6 * GB, by_device={}, source="recipe")
    assert placed(total, DEVICES) == {"gpu0": 6 * GB}
    assert placed(total, {"ram": DEVICES["ram"]}) == {"ram": 6 * GB}
