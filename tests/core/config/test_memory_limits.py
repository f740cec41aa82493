"""Memory budgets and floors as users write them (app/core/config/memory_limits.py): every form,
errors that quote the value and list the forms, bytes per device, and the canonical form
settings.toml and the API store."""

from __future__ import annotations

import pytest

from app.core.config.memory_limits import (
    OFF,
    VALID_FORMS,
    DeviceLimit,
    MemoryLimit,
    MemoryLimitError,
    parse_memory_limit,
)

GB = 1024 ** 3
MB = 1024 ** 2


# ---- parsing: every form --------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("90%", DeviceLimit(percent=90.0)),
    (" 85 % ", DeviceLimit(percent=85.0)),
    ("2.5%", DeviceLimit(percent=2.5)),
    (".5%", DeviceLimit(percent=0.5)),
    ("0%", DeviceLimit(percent=0.0)),
    ("100%", DeviceLimit(percent=100.0)),
    ("20GB", DeviceLimit(size=20 * GB)),
    ("20 gb", DeviceLimit(size=20 * GB)),
    ("20GiB", DeviceLimit(size=20 * GB)),  # binary either way: 1 GB = 2**30
    ("1.5g", DeviceLimit(size=int(1.5 * GB))),
    ("512 MiB", DeviceLimit(size=512 * MB)),
    ("100 B", DeviceLimit(size=100)),
    ("1TB", DeviceLimit(size=1024 * GB)),
    ("off", OFF),
    ("OFF", OFF),
    (" Off ", OFF),
])
def test_one_value_applies_to_every_device(text, expected):
    limit = parse_memory_limit(text)
    assert limit == MemoryLimit(default=expected)
    assert not limit.is_table
    assert limit.limit_for("ram") == limit.limit_for("gpu0") == limit.limit_for("gpu7") == expected


def test_a_table_sets_each_device_and_the_others_are_off():
    limit = parse_memory_limit({"ram": "16GB", "gpu0": "90%"})
    assert limit.is_table and not limit.is_off
    assert limit.limit_for("ram") == DeviceLimit(size=16 * GB)
    assert limit.limit_for("gpu0") == DeviceLimit(percent=90.0)
    assert limit.limit_for("gpu1") == OFF  # not named: off
    assert limit.for_device("gpu1", 24 * GB) is None


def test_a_table_default_covers_the_devices_it_does_not_name():
    limit = parse_memory_limit({"gpu1": "off", "default": "80%"})
    assert limit.limit_for("gpu1") == OFF
    assert limit.limit_for("ram") == limit.limit_for("gpu0") == DeviceLimit(percent=80.0)
    assert limit.describe() == "gpu1 off, others 80%"


@pytest.mark.parametrize("written", [
    {"ram": "16GB", "gpu0": "90%"},
    {"RAM": "16 GiB", "GPU0": "90.0%"},  # keys and values in any case and spelling
    {"gpu00": "90%", "ram": "16384MB"},  # gpu00 is gpu0; order does not matter
    '{"ram": "16GB", "gpu0": "90%"}',  # JSON, as in SIESTA_MEMORY_BUDGET
    ' { "ram" : "16GB" , "gpu0" : "90%" } ',
    "ram: 16GB, gpu0: 90%",  # one line, as in the Settings dialog
    "ram=16GB; gpu0 = 90%",
    "ram: 16GB, gpu0: 90%, default: off",
    {"ram": "16GB", "gpu0": "90%", "gpu1": "off"},  # an entry equal to the default says nothing more
])
def test_every_way_of_writing_a_table_means_the_same(written):
    assert parse_memory_limit(written) == MemoryLimit(
        devices=(("ram", DeviceLimit(size=16 * GB)), ("gpu0", DeviceLimit(percent=90.0))))


def test_equal_by_value_for_changed_checks():
    assert parse_memory_limit("90%") == parse_memory_limit({"default": "90%"}) == parse_memory_limit("90.000%")
    assert parse_memory_limit("1.5GB") == parse_memory_limit("1536MB")
    assert parse_memory_limit({"ram": "off"}) == parse_memory_limit("off")
    assert parse_memory_limit({"ram": "80%", "default": "80%"}) == parse_memory_limit("80%")
    assert parse_memory_limit("90%") != parse_memory_limit("80%")
    assert parse_memory_limit("90%") != parse_memory_limit({"ram": "90%"})  # the GPUs differ: off
    assert hash(parse_memory_limit("ram: 1GB, gpu0: 2GB")) == hash(parse_memory_limit({"gpu0": "2GB", "ram": "1GB"}))
    limit = parse_memory_limit("90%")
    assert parse_memory_limit(limit) is limit


# ---- errors: they quote the value and list the forms -------------------------------------------

@pytest.mark.parametrize(("value", "reason"), [
    ("90", "a bare number is ambiguous"),
    (90, "a bare number is ambiguous"),
    (0.5, "a bare number is ambiguous"),
    ("", "is not a size"),
    ("lots", "is not a size"),
    ("20 GBs", "is not a size"),
    ("-1GB", "is not a size"),
    ("1e9", "is not a size"),
    ("101%", "between 0% and 100%"),
    ("-5%", "between 0% and 100%"),
    ("x%", "is not a share"),
    ("50%%", "is not a share"),
    (True, "is not a size"),
    (None, "is not a size"),
    (["16GB"], "is not a size"),
    ({}, "an empty table"),
    ({"vram": "16GB"}, "unknown device 'vram'"),
    ({"gpu": "16GB"}, "unknown device 'gpu'"),
    ({"gpu-1": "16GB"}, "unknown device 'gpu-1'"),
    ({1: "16GB"}, "unknown device 1"),
    ({"gpu0": "90"}, "gpu0: a bare number is ambiguous"),
    ({"ram": {"size": "1GB"}}, "ram: a device's limit is a size, a share or \"off\", not a table"),
    ({"gpu0": "1GB", "GPU0": "2GB"}, "device 'gpu0' is given twice"),
    ("ram: 1GB, ram: 2GB", "device 'ram' is given twice"),
    ("ram: 1GB, 2GB", "'2GB' names no device"),
    ("ram: lots", "ram: 'lots' is not a size"),
    ("disk: 1GB", "unknown device 'disk'"),
    ('{"ram": "1GB"', "not a valid JSON table"),
    ('{"ram": "1GB"}x', "not a valid JSON table"),
])
def test_errors_quote_the_value_and_list_the_forms(value, reason):
    with pytest.raises(MemoryLimitError) as info:
        parse_memory_limit(value)
    message = str(info.value)
    assert message.startswith(f"invalid memory limit {value!r}: ")
    assert reason in message
    assert message.endswith(f"expected {VALID_FORMS}")
    for form in ('"20GB"', '"85%"', '"off"', '{"ram": "16GB", "gpu0": "90%"}'):
        assert form in message
    assert isinstance(info.value, ValueError)


def test_a_bare_number_error_suggests_both_readings():
    with pytest.raises(MemoryLimitError, match=r'write a share \("90%"\) or a size \("90GB"\)'):
        parse_memory_limit("90")


# ---- bytes for a device ------------------------------------------------------------------------

def test_for_device_with_shares_sizes_off_and_unknown_totals():
    share = parse_memory_limit("90%")
    assert share.for_device("gpu0", 24 * GB) == round(24 * GB * 0.9)
    assert share.for_device("ram", 100) == 90
    assert share.for_device("ram", 0) == 0
    assert share.for_device("gpu0", None) is None  # a share of an unknown total
    size = parse_memory_limit("20GB")
    assert size.for_device("gpu0", 24 * GB) == 20 * GB
    assert size.for_device("gpu0", None) == 20 * GB  # a size needs no total
    assert size.for_device("ram", 8 * GB) == 20 * GB  # more than there is: the caller decides
    off = parse_memory_limit("off")
    assert off.is_off
    assert off.for_device("ram", 32 * GB) is None and off.for_device("gpu0", None) is None
    assert parse_memory_limit("2.5%").for_device("ram", 1000) == 25
    assert parse_memory_limit("33.3333333%").for_device("ram", 3 * 10 ** 6) == 1_000_000  # 999,999.99 rounded


def test_for_device_in_a_table():
    limit = parse_memory_limit({"ram": "16GB", "gpu0": "50%", "default": "1GB"})
    assert limit.for_device("ram", 64 * GB) == 16 * GB
    assert limit.for_device("GPU0", 24 * GB) == 12 * GB  # device names in any case
    assert limit.for_device("gpu0", None) is None
    assert limit.for_device("gpu1", None) == GB  # the default
    no_default = parse_memory_limit({"gpu0": "50%"})
    assert no_default.for_device("ram", 64 * GB) is None


# ---- writing: describe, to_setting, the one-line text -------------------------------------------

@pytest.mark.parametrize(("written", "setting", "text", "described"), [
    ("90%", "90%", "90%", "90%"),
    ("2.50%", "2.5%", "2.5%", "2.5%"),
    ("33.3333333%", "33.333333%", "33.333333%", "33.333333%"),
    ("20 gib", "20GB", "20GB", "20 GB"),
    ("1536MB", "1.5GB", "1.5GB", "1.5 GB"),
    ("1.3GB", "1.3GB", "1.3GB", "1.3 GB"),
    ("1000MB", "1000MB", "1000MB", "1000 MB"),
    ("2048 KB", "2MB", "2MB", "2 MB"),
    ("1TB", "1TB", "1TB", "1 TB"),
    ("100 B", "100B", "100B", "100 B"),
    ("0GB", "0B", "0B", "0 B"),
    ("Off", "off", "off", "off"),
    ({"default": "90%"}, "90%", "90%", "90%"),
    ({"GPU0": "90%", "ram": "16 GiB"}, {"ram": "16GB", "gpu0": "90%"}, "ram: 16GB, gpu0: 90%",
     "ram 16 GB, gpu0 90%, others off"),
    ({"default": "5%", "gpu10": "1GB", "gpu2": "off"}, {"gpu2": "off", "gpu10": "1GB", "default": "5%"},
     "gpu2: off, gpu10: 1GB, default: 5%", "gpu2 off, gpu10 1 GB, others 5%"),
])
def test_canonical_forms_round_trip(written, setting, text, described):
    limit = parse_memory_limit(written)
    assert limit.to_setting() == setting
    assert limit.to_text() == str(limit) == text
    assert limit.describe() == described
    assert parse_memory_limit(limit.to_setting()) == limit
    assert parse_memory_limit(limit.to_text()) == limit


def test_describe_one_device():
    limit = parse_memory_limit({"ram": "16GB", "gpu0": "90%"})
    assert (limit.describe("ram"), limit.describe("gpu0"), limit.describe("gpu1")) == ("16 GB", "90%", "off")
    assert parse_memory_limit("20GB").describe("gpu3") == "20 GB"


def test_sizes_that_no_unit_writes_exactly_stay_exact():
    odd = 20 * GB + 1
    limit = MemoryLimit(default=DeviceLimit(size=odd))
    assert limit.to_setting() == f"{odd}B"
    assert parse_memory_limit(limit.to_setting()).for_device("ram", None) == odd


def test_a_device_limit_is_a_size_or_a_share_not_both():
    with pytest.raises(ValueError):
        DeviceLimit(size=1, percent=1.0)
