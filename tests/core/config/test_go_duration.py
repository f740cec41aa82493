"""Go's time.ParseDuration grammar, and ``keep_alive`` read as Ollama reads it."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.config.durations import NOT_GIVEN, DurationError, parse_duration
from app.core.config.go_duration import ollama_keep_alive, parse_go_duration

# Values checked against Go's own time.ParseDuration (its tests in src/time/time_test.go).
GO_CASES = [
    ("0", 0.0), ("-0", 0.0), ("+0", 0.0), ("5s", 5.0), ("30s", 30.0), ("1478s", 1478.0), ("-5s", -5.0),
    ("+5s", 5.0), ("-0s", 0.0), ("+0s", 0.0), ("5.0s", 5.0), ("5.6s", 5.6), ("5.s", 5.0), (".5s", 0.5),
    ("1.0s", 1.0), ("1.00s", 1.0), ("1.004s", 1.004), ("1.0040s", 1.004), ("100.00100s", 100.001),
    ("10ns", 10e-9), ("11us", 11e-6), ("12µs", 12e-6), ("12μs", 12e-6), ("13ms", 0.013), ("14s", 14.0),
    ("15m", 900.0), ("16h", 57600.0), ("3h30m", 12600.0), ("10.5s4m", 250.5), ("-2m3.4s", -123.4),
    ("1h2m3s4ms5us6ns", 3723.004005006), ("39h9m14.425s", 140_954.425), ("52763797000ns", 52.763797),
    ("0.3333333333333333333h", 1200.0), ("9007199254740993ns", 9007199.254740993),
    ("9223372036s854ms775us807ns", 9223372036.854775807), ("-9223372036854775808ns", -9223372036.854775808),
    ("0.100000000000000000000h", 360.0), ("0.830103483285477580700h", 2988.372539827),
    ("30m1h", 5400.0), ("1h1h", 7200.0), ("500ms", 0.5), ("1.5h", 5400.0), ("-1m", -60.0),
]

GO_ERRORS = ["", "3", "-", "s", ".", "-.", ".s", "+.s", "1d", "\x85\x85", "\xffff", "hello \xffff world",
             "9223372036854775810ns", "9223372036854775808ns", "-9223372036854775809ns",
             "9223372036854775.808us", "9223372036854ms775us808ns", " 5s", "5s ", "5 s", "1h.", "１s", "5S",
             "0.5", "1e3s", "--5s", "+-5s"]


@pytest.mark.parametrize(("text", "seconds"), GO_CASES)
def test_reads_what_go_reads(text, seconds):
    assert parse_go_duration(text) == pytest.approx(seconds, rel=1e-15, abs=1e-12)


@pytest.mark.parametrize("text", GO_ERRORS)
def test_refuses_what_go_refuses_quoting_it(text):
    with pytest.raises(DurationError) as info:
        parse_go_duration(text)
    assert "Go duration" in str(info.value)
    assert repr(text)[:40] in str(info.value)


def test_names_an_unknown_unit_and_a_missing_one():
    with pytest.raises(DurationError, match="unknown unit 'd'"):
        parse_go_duration("1d")
    with pytest.raises(DurationError, match="missing unit"):
        parse_go_duration("90")


def test_a_hostile_string_is_refused_quickly_and_shown_short():
    with pytest.raises(DurationError) as info:
        parse_go_duration("9" * 100_000 + "s")
    assert len(str(info.value)) < 300


@given(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["h", "m", "s", "ms", "us", "ns"])),
                min_size=1, max_size=6),
       st.sampled_from(["", "+", "-"]))
def test_the_sum_of_its_parts(parts, sign):
    ns = {"h": 3600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
    text = sign + "".join(f"{n}{unit}" for n, unit in parts)
    total = sum(n * ns[unit] for n, unit in parts)
    assert parse_go_duration(text) == (-total if sign == "-" else total) / 1e9


@given(st.text(max_size=20))
def test_any_text_gives_a_number_or_a_duration_error(text):
    try:
        seconds = parse_go_duration(text)
    except DurationError:
        return
    assert math.isfinite(seconds)


# ---- keep_alive ------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (None, NOT_GIVEN), (0, 0.0), (0.0, 0.0), ("0", 0.0), ("0s", 0.0), ("-0s", 0.0), (300, 300.0), (1.5, 1.5),
    ("5m", 300.0), ("1h30m", 5400.0), ("30m1h", 5400.0), ("500ms", 0.5), ("1.5h", 5400.0),
    ("300", 300.0), ("-1", None), (" 5m ", 300.0), (-1, None), (-0.5, None), ("-1m", None), ("-1ns", None),
    (-1e300, None), ("-9223372036854775808ns", None), (0.001, 0.001), ("1ms", 0.001),
    (11 * 365 * 86400, None),  # past ten years Siesta means never, as parse_duration does
])
def test_keep_alive_as_ollama_reads_it(value, expected):
    assert ollama_keep_alive(value) == expected


@pytest.mark.parametrize("value", [
    True, False, float("nan"), float("inf"), float("-inf"), 1e300, 10**400, -10**400, "1e3", "5 minutes", "",
    "never", "１２", [], {}, "1us", "999us", 0.0005, "0.0005", "9223372036854775808ns", "abc", "1" * 5000,
])
def test_keep_alive_refuses_what_it_cannot_read_naming_the_field(value):
    with pytest.raises(DurationError) as info:
        ollama_keep_alive(value)
    assert "keep_alive" in str(info.value)
    assert len(str(info.value)) < 400


@given(st.one_of(st.integers(-10**12, 10**9), st.floats(-1e9, 1e9, allow_nan=False)))
def test_keep_alive_numbers_land_where_parse_duration_puts_them(seconds):
    try:
        expected = parse_duration(seconds)
    except DurationError:
        with pytest.raises(DurationError):
            ollama_keep_alive(seconds)
        return
    assert ollama_keep_alive(seconds) == expected


@given(st.integers(0, 2 * 10**6), st.sampled_from(["h", "m", "s", "ms"]))  # within Go's 292 years
def test_keep_alive_go_durations_land_where_parse_duration_puts_the_seconds(n, unit):
    seconds = n * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    assert ollama_keep_alive(f"{n}{unit}") == parse_duration(seconds)
