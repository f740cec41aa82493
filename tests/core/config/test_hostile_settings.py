"""Every setting the API may change refuses hostile values with a short ValueError naming
it, or takes them as values settings.toml can hold and give back (issue 26, defect 9)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from app.core.config.durations import format_duration
from app.core.config.memory_limits import MemoryLimit
from app.core.config.settings import RUNTIME_SETTABLE, TOML_INT_MAX, load_settings, validate_setting
from app.core.config.toml_edit import set_toml_key

HOSTILE: list[Any] = [
    10**400, -(10**400), "1" * 400, "-" + "1" * 400, math.nan, math.inf, -math.inf, -0.0, 0.0, 1e-05, 1e300,
    2**63, True, False, None, [[1]], {"a": {"b": {"c": {}}}}, {"ram": 10**400}, {"ram": "1" * 400 + "GB"},
    "1" * 400 + "%", "9" * 200 + "GB", '{"ram": ' + "[" * 50_000, "",
]


def _stored(value: Any) -> Any:
    """The form the manager writes to settings.toml (ModelManager.set_setting)."""
    if isinstance(value, MemoryLimit):
        return value.to_setting()
    return value


@pytest.mark.parametrize("field", RUNTIME_SETTABLE)
@pytest.mark.parametrize("raw", HOSTILE, ids=lambda value: repr(value)[:24])
def test_a_hostile_value_is_refused_naming_the_field_or_read_back_unchanged(field, raw, tmp_path: Path):
    try:
        value = validate_setting(field, raw)
    except ValueError as exc:
        message = str(exc)
        assert message.startswith(f"{field}: ")
        assert len(message) < 1000, "the value is not repeated whole"
        return
    if isinstance(value, int) and not isinstance(value, bool):
        assert 0 <= value <= TOML_INT_MAX
    stored = format_duration(value) if field == "global_unload_timeout" else _stored(value)
    settings_file = tmp_path / "settings.toml"
    set_toml_key(settings_file, field, stored, create=True)
    assert getattr(load_settings(settings_file).values, field) == value


@pytest.mark.parametrize("raw", [True, False, 10**400, 2**63, -1, 1.5, math.nan])
def test_max_loaded_models_takes_only_a_whole_number_toml_can_hold(raw):
    with pytest.raises(ValueError, match="^max_loaded_models: "):
        validate_setting("max_loaded_models", raw)


def test_max_loaded_models_still_reads_text_and_whole_floats():
    assert validate_setting("max_loaded_models", "4") == 4  # as SIESTA_MAX_LOADED_MODELS gives it
    assert validate_setting("max_loaded_models", 2.0) == 2
    assert validate_setting("max_loaded_models", TOML_INT_MAX) == TOML_INT_MAX
