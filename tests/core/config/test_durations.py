"""Duration parsing and formatting: every form the issue lists, and hostile input."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.config.durations import DurationError, format_countdown, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("5m", 300), ("1h30m", 5400), ("2h", 7200), (90, 90), ("90", 90), (1.5, 1.5),
     ("0", 0), (0, 0), ("never", None), (-1, None), ("-1", None), ("-5m", None), (" 5M ", 300)],
)
def test_parses_every_documented_form(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5 minutes", "m5", "1m1h", "", "abc", "1h1h", True, None, [], {}, "nan", float("nan")])
def test_rejects_invalid_text_quoting_it_and_showing_valid_forms(bad):
    with pytest.raises(DurationError) as info:
        parse_duration(bad)
    assert repr(bad) in str(info.value)
    assert "1h30m" in str(info.value)


@pytest.mark.parametrize(("seconds", "text"), [(5400, "1h30m"), (90, "1m30s"), (300, "5m"), (0, "0s"),
                                               (None, "never"), (7200, "2h"), (1.5, "1.5s"), (3661, "1h1m1s")])
def test_writes_the_canonical_short_form(seconds, text):
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10 * 365 * 86400))
def test_round_trips(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.one_of(st.text(max_size=30), st.floats(allow_nan=True), st.integers(), st.none(), st.booleans()))
def test_never_raises_anything_but_duration_error(value):
    try:
        result = parse_duration(value)
    except DurationError:
        return
    assert result is None or (result >= 0 and math.isfinite(result))


def test_countdown_reads_like_a_clock():
    assert format_countdown(252) == "4:12"
    assert format_countdown(3723) == "1:02:03"
    assert format_countdown(-3) == "0:00"
    assert format_countdown(0.2) == "0:01"
