"""The shape of ``siesta doctor``'s report: sections of items, each with its value and where
it came from, or why it is missing; as plain text for a bug report and as JSON for tools.

A probe never raises: :func:`guarded` turns whatever it raised into one missing item that
says so, and the rest of the report goes on. Every string of the report passes through
:func:`app.core.config.redact.redact_text` (and every structured value through
:func:`~app.core.config.redact.redact_mapping`) when it is made, so a secret that a probe
let through is still not shown.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from app.core.config.redact import redact_mapping, redact_text

log = logging.getLogger(__name__)

__all__ = ["Item", "Section", "Report", "guarded", "FORMAT"]

FORMAT = 1
"""The JSON report's ``format``: raised when a key changes meaning."""

WIDTH = 110
"""The plain report's lines: a source that would make a line longer goes on a line of its own."""


@dataclass(frozen=True)
class Item:
    """One fact: ``value`` (JSON-like) read from ``source``, or ``missing`` saying why there is none.

    ``text`` is how the value reads in the plain report (default: ``str(value)``); ``notes``
    are more lines under it. ``key`` names the item in the JSON report."""

    key: str
    label: str
    value: Any = None
    source: str | None = None
    missing: str | None = None
    text: str | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("label", "source", "missing", "text"):
            current = getattr(self, name)
            if current is not None:
                object.__setattr__(self, name, redact_text(str(current)))
        object.__setattr__(self, "value", redact_mapping(self.value))
        object.__setattr__(self, "notes", tuple(redact_text(str(n)) for n in self.notes))

    @property
    def found(self) -> bool:
        return self.missing is None

    def shown(self) -> str:
        """The value as the plain report shows it."""
        if self.missing is not None:
            return f"missing: {self.missing}"
        if self.text is not None:
            return self.text
        if isinstance(self.value, (list, tuple)):
            return ", ".join(str(v) for v in self.value) or "(none)"
        return "(none)" if self.value is None else str(self.value)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label}
        if self.missing is not None:
            out["missing"] = self.missing
        else:
            out["value"] = self.value
            if self.text is not None:
                out["text"] = self.text
        if self.source is not None:
            out["source"] = self.source
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def found(key: str, label: str, value: Any, source: str | None, *, text: str | None = None,
          notes: Iterable[str] = ()) -> Item:
    """An item with a value."""
    return Item(key, label, value=value, source=source, text=text, notes=tuple(notes))


def missing(key: str, label: str, why: str, source: str | None = None, *, notes: Iterable[str] = ()) -> Item:
    """An item without a value, saying why."""
    return Item(key, label, missing=why, source=source, notes=tuple(notes))


@dataclass(frozen=True)
class Section:
    """A family of items under a heading (``key`` names it in the JSON report)."""

    key: str
    title: str
    items: tuple[Item, ...] = ()


def guarded(key: str, title: str, probe: Callable[[], Iterable[Item]]) -> Section:
    """The section of the items ``probe()`` gives; if it raises, the items it gave before and a
    missing one that says what failed (logged with its traceback at debug level)."""
    items: list[Item] = []
    try:
        for item in probe():
            items.append(item)
    except Exception as exc:  # noqa: BLE001 - a probe that fails is reported, never raised
        log.debug("doctor: the %s probe failed", key, exc_info=True)
        items.append(missing("probe_failed", "(probe)", f"the {title} probe failed: {type(exc).__name__}: {exc}"))
    return Section(key, title, tuple(items))


def one(key: str, label: str, probe: Callable[[], Item]) -> Item:
    """The item ``probe()`` gives, or a missing one saying what it raised."""
    try:
        return probe()
    except Exception as exc:  # noqa: BLE001 - a probe that fails is reported, never raised
        log.debug("doctor: the %s probe failed", key, exc_info=True)
        return missing(key, label, f"the probe failed: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class Report:
    """The whole report: when it was made and its sections, in order."""

    generated: str  # ISO 8601, local time with its offset
    sections: tuple[Section, ...] = field(default_factory=tuple)

    def section(self, key: str) -> Section:
        return next(s for s in self.sections if s.key == key)

    def item(self, section: str, key: str) -> Item:
        return next(i for i in self.section(section).items if i.key == key)

    def to_json(self) -> dict[str, Any]:
        """``{"format", "generated", SECTION: {"title", "items": {KEY: {"label", "value" or
        "missing", "text"?, "source"?, "notes"?}}}}``, sections and items in report order."""
        out: dict[str, Any] = {"format": FORMAT, "generated": self.generated}
        for section in self.sections:
            out[section.key] = {"title": section.title, "items": {i.key: i.to_json() for i in section.items}}
        return out

    def json_text(self) -> str:
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False)

    def text(self) -> str:
        """The plain report: one heading per section, one line per item (``label  value
        [source]``; the source on a line of its own under the value when the line would pass
        :data:`WIDTH`), notes indented under the value."""
        lines = [f"Siesta diagnostics, {self.generated}",
                 "Each item says where it came from [in brackets], or why it is missing. Secrets are shown as ***."]
        for section in self.sections:
            lines += ["", section.title]
            width = min(max((len(i.label) for i in section.items), default=0), 24)
            for item in section.items:
                line = f"  {item.label:<{width}}  {item.shown()}"
                if item.source and len(line) + len(item.source) + 4 <= WIDTH:
                    lines.append(f"{line}  [{item.source}]")
                else:
                    lines.append(line)
                    if item.source:
                        lines.append(f"  {'':<{width}}  [{item.source}]")
                lines += [f"  {'':<{width}}    {note}" for note in item.notes]
        return "\n".join(lines) + "\n"
