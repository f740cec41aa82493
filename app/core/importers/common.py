"""What every importer shares: the result, the errors, and reading a configuration file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_CONFIG_BYTES = 4 * 1024 * 1024


@dataclass
class ImportResult:
    """What an import did: the recipe files it created, and ``"name: reason"`` lines for
    what it could not carry over (``"name: not imported: ..."`` for a whole model)."""

    created: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "name: reason"
    kind: str = ""  # "llama-swap" | "lemonade"


class ImportConfigError(Exception):
    """The configuration cannot be read at all: missing, unreadable, or not a known format."""


class NotImported(Exception):
    """One model cannot be imported; the message is the reason."""


def read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ImportConfigError(f"{path}: file is {size} bytes; too large for a configuration")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ImportConfigError(f"{path}: not a text file (expected UTF-8)") from None
    except OSError as exc:
        raise ImportConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def parse_yaml(path: Path, text: str) -> Any:
    import yaml  # PyYAML; only needed for llama-swap

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ImportConfigError(f"{path}: not valid YAML: {exc}") from exc


def load_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except ValueError as exc:
        raise ImportConfigError(f"{path}: not valid JSON: {exc}") from exc
