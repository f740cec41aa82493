"""The slider scale: every stop reachable exactly, any value mapped to its nearest stop."""

from __future__ import annotations

import pytest

from app.ui import timeout_scale as scale


def test_stops_are_the_documented_ones() -> None:
    assert scale.STOPS == (0, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, None)


@pytest.mark.parametrize("index", range(len(scale.STOPS)))
def test_every_stop_round_trips(index: int) -> None:
    value = scale.seconds_at(index)
    assert scale.nearest_index(value) == index
    assert scale.is_on_scale(value)


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), (-1, 0), (0, 0), (5, 0), (14.9, 0), (15, 30), (40, 30), (45, 60), (7 * 60, 300),
    (8 * 60, 600), (20 * 60, 900), (22 * 60, 1800), (50 * 60, 3600), (3 * 3600, 14400),
    (12 * 3600, 28800), (10 * 24 * 3600, 28800),
])
def test_nearest_stop_on_a_log_scale(value: float | None, expected: float | None) -> None:
    assert scale.seconds_at(scale.nearest_index(value)) == expected


def test_out_of_range_positions_are_clamped() -> None:
    assert scale.seconds_at(-3) == 0
    assert scale.seconds_at(99) is None


def test_off_scale_values_are_reported() -> None:
    assert not scale.is_on_scale(420.0)
    assert not scale.is_on_scale(5400.0)


@pytest.mark.parametrize(("value", "label"), [
    (None, "never"), (0, "at once"), (30, "30 s"), (60, "1 min"), (300, "5 min"), (900, "15 min"),
    (3600, "1 h"), (28800, "8 h"), (420, "7 min"), (5400, "1h30m"), (90, "1m30s"),
])
def test_short_labels(value: float | None, label: str) -> None:
    assert scale.short_label(value) == label


def test_menu_presets_are_on_the_scale() -> None:
    assert scale.MENU_PRESETS == (60, 300, 900, 3600)
    assert all(scale.is_on_scale(v) for v in scale.MENU_PRESETS)
