"""Memory budgets and floors as users write them: ``memory_budget`` and ``free_memory_floor``.

One vocabulary for both settings, in settings.toml, the environment, the CLI flags, the
HTTP API and the Settings dialog. A limit is, for each device (``"ram"``, ``"gpu0"``,
``"gpu1"``, ...):

* a size: ``"20GB"``, ``"512 MiB"``, ``"1.5g"`` (binary units, :func:`app.core.config.sizes.parse_size`;
  1 GB = 2**30 bytes);
* a share of that device's total: ``"85%"``, ``"2.5%"`` (0 to 100);
* ``"off"`` (any case): no limit there.

A single value applies to RAM and to every GPU. A table sets it per device::

    [memory_budget]
    ram = "16GB"
    gpu0 = "90%"
    default = "80%"    # optional: every device not named; without it those are off

Devices a table does not name are **off**, unless the table has a ``default`` key. A bare
number (``90``, ``"90"``) is refused, since it could mean a share or a size.

The same table can be written on one line, for an environment variable, a CLI flag or the
dialog's text field: as JSON (``{"ram": "16GB", "gpu0": "90%"}``) or as
``ram: 16GB, gpu0: 90%`` (``=`` works too).

Values compare by meaning: a table entry equal to the table's ``default`` is dropped, and a
table with nothing but a ``default`` is that plain value, so ``{"default": "90%"}`` equals
``"90%"``. :meth:`MemoryLimit.to_setting` gives the canonical form that settings.toml and the
API store: ``"90%"``, ``"20GB"``, ``"off"``, or a table of those. No Qt.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from app.core.config.durations import short_repr
from app.core.config.sizes import SizeError, SizeTooLarge, parse_size

__all__ = ["DeviceLimit", "MemoryLimit", "MemoryLimitError", "OFF", "VALID_FORMS", "parse_memory_limit"]

VALID_FORMS = ('a size ("20GB"), a share of the device\'s total ("85%"), "off", or a table per device '
               '({"ram": "16GB", "gpu0": "90%"}, or "ram: 16GB, gpu0: 90%")')

DEFAULT_KEY = "default"
_GPU_KEY = re.compile(r"gpu(\d+)")
_NUMBER = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)")
_PERCENT_DECIMALS = 6  # "33.333333%" is plenty; the stored text reads back to the same value


class MemoryLimitError(ValueError):
    """A memory limit that cannot be read; the message quotes it and lists the valid forms."""


@dataclass(frozen=True)
class DeviceLimit:
    """One device's limit: ``size`` bytes, or ``percent`` (0-100) of its total, or
    neither (off)."""

    size: int | None = None
    percent: float | None = None

    def __post_init__(self) -> None:
        if self.size is not None and self.percent is not None:
            raise ValueError("a device limit is a size or a share, not both")

    @property
    def off(self) -> bool:
        return self.size is None and self.percent is None

    def for_total(self, total: int | None) -> int | None:
        """Bytes; None when off, or when it is a share and ``total`` is unknown."""
        if self.size is not None:
            return self.size
        if self.percent is None or total is None:
            return None
        return int(round(total * self.percent / 100))

    def to_text(self) -> str:
        """The canonical text: ``"90%"``, ``"20GB"``, ``"1.5GB"``, ``"off"``."""
        if self.size is not None:
            return _size_text(self.size, "")
        if self.percent is not None:
            return _percent_text(self.percent)
        return "off"

    def describe(self) -> str:
        """For people: ``"90%"``, ``"20 GB"``, ``"off"``."""
        if self.size is not None:
            return _size_text(self.size, " ")
        return self.to_text()


OFF = DeviceLimit()


def _device_order(device: str) -> tuple[int, int, str]:
    if device == "ram":
        return (0, 0, device)
    match = _GPU_KEY.fullmatch(device)
    return (1, int(match.group(1)), device) if match else (2, 0, device)


@dataclass(frozen=True)
class MemoryLimit:
    """A memory budget or floor: for each device (``"ram"``, ``"gpu0"``, ...) a size in
    bytes, a share of that device's total, or off.

    ``default`` applies to every device that ``devices`` does not name. Built through
    :func:`parse_memory_limit` (or directly; the constructor normalises), so that two limits
    that mean the same are equal: entries equal to ``default`` are dropped and the rest are
    kept in device order (``ram``, ``gpu0``, ``gpu1``, ...).
    """

    default: DeviceLimit = OFF
    devices: tuple[tuple[str, DeviceLimit], ...] = field(default=())

    def __post_init__(self) -> None:
        entries = {name.lower(): limit for name, limit in dict(self.devices).items() if limit != self.default}
        object.__setattr__(self, "devices", tuple(sorted(entries.items(), key=lambda kv: _device_order(kv[0]))))

    # ---- reading ---------------------------------------------------------------------------

    def limit_for(self, device: str) -> DeviceLimit:
        """That device's limit (the table's entry, else ``default``)."""
        return dict(self.devices).get(device.lower(), self.default)

    def for_device(self, device: str, total: int | None) -> int | None:
        """Bytes for that device; None when off, or when it is a share and the total is unknown."""
        return self.limit_for(device).for_total(total)

    @property
    def is_off(self) -> bool:
        """Off on every device."""
        return self.default.off and not self.devices

    @property
    def is_table(self) -> bool:
        """Set per device (written as a table)."""
        return bool(self.devices)

    # ---- writing ---------------------------------------------------------------------------

    def describe(self, device: str | None = None) -> str:
        """For messages and the dialog: that device's ``"90%"``, ``"20 GB"`` or ``"off"``;
        without a device, the whole limit (``"90%"``, ``"ram 16 GB, gpu0 90%, others off"``)."""
        if device is not None:
            return self.limit_for(device).describe()
        if not self.devices:
            return self.default.describe()
        parts = [f"{name} {limit.describe()}" for name, limit in self.devices]
        return ", ".join(parts + [f"others {self.default.describe()}"])

    def to_setting(self) -> str | dict[str, str]:
        """What settings.toml and the API store: ``"90%"``, ``"20GB"``, ``"off"``, or a table
        ``{"ram": "16GB", "gpu0": "90%"}`` (with ``"default"`` last when it is not off)."""
        if not self.devices:
            return self.default.to_text()
        table = {name: limit.to_text() for name, limit in self.devices}
        if not self.default.off:
            table[DEFAULT_KEY] = self.default.to_text()
        return table

    def to_text(self) -> str:
        """One line that :func:`parse_memory_limit` reads back: ``"90%"``, or for a table
        ``"ram: 16GB, gpu0: 90%"`` (the form of the dialog's text field)."""
        setting = self.to_setting()
        if isinstance(setting, str):
            return setting
        return ", ".join(f"{name}: {text}" for name, text in setting.items())

    def __str__(self) -> str:
        return self.to_text()


def parse_memory_limit(value: object) -> MemoryLimit:
    """A memory limit from any form a user writes (see the module); raises
    :class:`MemoryLimitError`, whose message quotes the value and lists the forms."""
    if isinstance(value, MemoryLimit):
        return value
    if isinstance(value, Mapping):
        return _table(value, value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise _error(value, f"not a valid JSON table ({exc})") from None
            except RecursionError:  # "{" and then thousands of "["
                raise _error(value, "not a valid JSON table (nested too deeply)") from None
            if not isinstance(data, dict):
                raise _error(value, "not a table")
            return _table(data, value)
        if ":" in text or "=" in text:
            return _table(_inline_table(text, value), value)
    return MemoryLimit(default=_device_limit(value, value))


def _inline_table(text: str, original: object) -> dict[str, str]:
    """``"ram: 16GB, gpu0: 90%"`` (or with ``=``) as a dict; duplicates are refused."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in re.split(r"[,;]", text)):
        if not part:
            continue
        key, sep, item = re.split(r"\s*([:=])\s*", part, maxsplit=1) if re.search(r"[:=]", part) else (part, "", "")
        if not sep:
            raise _error(original, f"{short_repr(part)} names no device: write it like \"ram: 16GB\"")
        key = key.strip()
        if key in out:
            raise _error(original, f"device {short_repr(key)} is given twice")
        out[key] = item.strip()
    return out


def _table(data: Mapping[object, object], original: object) -> MemoryLimit:
    if not data:
        raise _error(original, 'an empty table sets nothing; write "off" to turn the limit off')
    default = OFF
    devices: dict[str, DeviceLimit] = {}
    for raw_key, raw_value in data.items():
        key = _device_key(raw_key, original)
        if key in devices or (key == DEFAULT_KEY and default is not OFF):
            raise _error(original, f"device {key!r} is given twice")
        if isinstance(raw_value, Mapping):
            raise _error(original, f"{key}: a device's limit is a size, a share or \"off\", not a table")
        limit = _device_limit(raw_value, original, key=key)
        if key == DEFAULT_KEY:
            default = limit
        else:
            devices[key] = limit
    return MemoryLimit(default=default, devices=tuple(devices.items()))


def _device_key(raw: object, original: object) -> str:
    if isinstance(raw, str):
        key = raw.strip().lower()
        if key in ("ram", DEFAULT_KEY):
            return key
        match = _GPU_KEY.fullmatch(key)
        if match:
            return f"gpu{int(match.group(1))}"
    raise _error(original, f"unknown device {short_repr(raw)}: a table's keys are \"ram\", \"gpu0\", \"gpu1\", ... "
                           f"and \"default\" for the devices not named")


def _device_limit(value: object, original: object, *, key: str | None = None) -> DeviceLimit:
    where = f"{key}: " if key else ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _error(original, f"{where}{short_repr(value)} is not a size, a share or \"off\"")
    if isinstance(value, (int, float)):
        raise _error(original, _ambiguous(where, short_repr(value)))
    text = value.strip()
    if text.lower() == "off":
        return OFF
    if text.endswith("%"):
        number = text[:-1].strip()
        if number.startswith("-") and _NUMBER.fullmatch(number[1:]):
            raise _error(original, f"{where}a share is between 0% and 100% (got {short_repr(text)})")
        if not _NUMBER.fullmatch(number):
            raise _error(original, f"{where}{short_repr(text)} is not a share: write it like \"85%\" or \"2.5%\"")
        percent = round(float(number), _PERCENT_DECIMALS)
        if percent > 100:
            raise _error(original, f"{where}a share is between 0% and 100% (got {short_repr(text)})")
        return DeviceLimit(percent=percent)
    if _NUMBER.fullmatch(text):
        raise _error(original, _ambiguous(where, text))
    try:
        return DeviceLimit(size=parse_size(text))
    except SizeTooLarge as exc:
        raise _error(original, f"{where}{exc}") from None
    except SizeError:
        raise _error(original, f"{where}{short_repr(text)} is not a size, a share or \"off\"") from None


def _ambiguous(where: str, number: str) -> str:
    shown = number if len(number) <= 20 else "85"  # a 400-digit number is no example
    return f'{where}a bare number is ambiguous: write a share ("{shown}%") or a size ("{shown}GB")'


def _error(value: object, reason: str) -> MemoryLimitError:
    return MemoryLimitError(f"invalid memory limit {short_repr(value)}: {reason}; expected {VALID_FORMS}")


def _percent_text(percent: float) -> str:
    text = f"{percent:.{_PERCENT_DECIMALS}f}".rstrip("0").rstrip(".")
    return f"{text}%"


_UNITS = (("TB", 1024 ** 4), ("GB", 1024 ** 3), ("MB", 1024 ** 2), ("KB", 1024))


def _size_text(size: int, space: str) -> str:
    """The shortest text in the largest unit that reads back to exactly ``size`` bytes:
    ``"20GB"``, ``"1.5GB"``, ``"1536MB"``; bytes when nothing else is exact."""
    for unit, factor in _UNITS:
        amount = size / factor
        if amount < 1:
            continue
        for decimals in range(3):
            number = f"{amount:.{decimals}f}"
            if decimals:
                number = number.rstrip("0").rstrip(".")
            if parse_size(number + unit) == size:
                return f"{number}{space}{unit}"
    return f"{size}{space}B"
