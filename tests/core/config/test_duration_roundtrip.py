"""What Siesta writes as a duration, it reads back as the same value (issue 26, defects 1 and 9).

A PATCH of ``global_unload_timeout = 0.00001`` once wrote ``"1e-05s"``, which the parser
refuses, so the next start failed; the same value made a recipe an error and a remote
disappear. Durations are kept to the millisecond, the one formatter is exact on that grid,
and what cannot be written (NaN, infinities, under a millisecond, integers too large for a
float) is refused when it is read.
"""

from __future__ import annotations

import math
import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.config.durations import (
    MAX_SECONDS,
    DurationError,
    format_duration,
    format_model_timeout,
    parse_duration,
    parse_model_timeout,
)
from app.core.config.recipes import read_recipe, write_recipe_timeout
from app.core.config.settings import load_settings
from app.core.config.toml_edit import set_toml_key, set_toml_nested
from app.core.remotes.config import parse_remotes

MAX_MILLIS = int(MAX_SECONDS * 1000)
on_the_grid = st.integers(min_value=0, max_value=MAX_MILLIS).map(lambda millis: millis / 1000)


@given(on_the_grid)
def test_every_millisecond_value_is_written_exactly(seconds):
    text = format_duration(seconds)
    assert "e" not in text  # no exponent: the parser reads none
    assert parse_duration(seconds) == seconds
    assert parse_duration(text) == seconds
    assert parse_model_timeout(format_model_timeout(seconds)) == seconds


@given(st.floats(min_value=0, max_value=MAX_SECONDS * 2) | st.integers(min_value=-(10**30), max_value=10**30))
def test_whatever_is_accepted_reads_back_as_itself(value):
    try:
        seconds = parse_duration(value)
    except DurationError:
        assert 0 < value < 0.001  # only under a millisecond is refused here
        return
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(("seconds", "text"), [
    (61.029, "1m1.029s"), (3723.001, "1h2m3.001s"), (0.001, "0.001s"), (3600.5, "1h0.5s"),
    (0.25, "0.25s"), (-3, "never"), (MAX_SECONDS + 1, "never"), (-0.0, "0s"),
])
def test_the_short_form_keeps_every_millisecond(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("value", [
    1e-05, 0.0005, 0.000999, 5e-324, "0.0005", "0.0005s", "0h0m0.0001s",
    math.nan, math.inf, -math.inf,
    10**400, -(10**400), "1" * 400, "-" + "1" * 400, "1" * 400 + "s", "1" * 400 + "h30m",
], ids=lambda value: repr(value)[:24])
def test_what_cannot_be_written_back_is_refused_with_a_short_message(value):
    with pytest.raises(DurationError) as info:
        parse_duration(value)
    message = str(info.value)
    assert message.startswith("invalid duration ") and "1h30m" in message
    assert len(message) < 300  # a 400-digit value is not repeated whole
    with pytest.raises(DurationError):
        parse_model_timeout(value)
    if isinstance(value, float):
        with pytest.raises(DurationError):
            format_duration(value)


@pytest.mark.parametrize("value", [-1, -1e300, "-5m", "-0.0001s", 1e300, MAX_SECONDS + 1, "1" * 300 + "h", "never"])
def test_negative_and_huge_still_mean_never(value):
    assert parse_duration(value) is None


@pytest.mark.parametrize("value", [-0.0, "-0", "-0s", "0.0000"])
def test_minus_zero_is_zero(value):
    seconds = parse_duration(value)
    assert seconds == 0 and math.copysign(1, seconds) == 1


def test_a_value_between_milliseconds_is_rounded_to_one():
    assert parse_duration(0.0015) == 0.002
    assert parse_duration("1.0004s") == 1.0


@settings(max_examples=40, deadline=None)
@given(on_the_grid.filter(lambda s: s > 0))
def test_every_writer_of_a_timeout_writes_what_its_reader_takes(seconds):
    """settings.toml's global timeout, a recipe's timeout and a remote's timeouts table."""
    with tempfile.TemporaryDirectory() as folder:
        settings_file = Path(folder) / "settings.toml"
        set_toml_key(settings_file, "global_unload_timeout", format_duration(seconds), create=True)
        assert load_settings(settings_file).values.global_unload_timeout == seconds

        recipe = Path(folder) / "m.toml"
        recipe.write_text('backend = "command"\ncommand = ["x", "{port}"]\n')
        write_recipe_timeout(recipe, seconds)
        assert read_recipe(recipe).unload_timeout == seconds

        set_toml_nested(settings_file, ["remotes", "box"], "kind", "ollama", create=True)
        set_toml_nested(settings_file, ["remotes", "box"], "url", "http://127.0.0.1:11434", create=True)
        set_toml_nested(settings_file, ["remotes", "box", "timeouts"], "llama3", format_duration(seconds),
                        create=True)
        remotes, errors = parse_remotes(tomllib.loads(settings_file.read_text()), settings_file, environ={})
        assert errors == []
        assert remotes["box"].timeouts["llama3"] == seconds
