"""Edit one top-level key of a user's TOML file, keeping every comment and the key order.

Reading everywhere else uses the fast standard ``tomllib``; only writes go through
tomlkit, which round-trips the user's formatting.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomlkit

from .atomic_write import write_text_atomic


class TomlEditError(Exception):
    """A file that cannot be edited safely: ``kind`` is ``"invalid"`` (it does not parse,
    or is missing) or ``"io"`` (it could not be read or written)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def set_toml_key(path: Path, key: str, value: Any | None, *, create: bool = False) -> None:
    """Sets top-level ``key`` to ``value`` (``None`` removes the key) and writes atomically.

    A file that fails to parse is never rewritten. With ``create``, a missing file is
    created holding just this key.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if not create:
            raise TomlEditError(f"{path}: file not found", "invalid") from None
        text = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise TomlEditError(f"{path}: cannot read: {exc}", "io") from exc
    try:
        tomllib.loads(text)  # the same parser Siesta reads with; refuse what it rejects
        doc = tomlkit.parse(text)
    except Exception as exc:  # noqa: BLE001 - both parsers raise their own types
        raise TomlEditError(f"{path}: not valid TOML, left unchanged: {exc}", "invalid") from exc
    if value is None:
        if key in doc:
            del doc[key]
    else:
        doc[key] = value  # tomlkit puts a new top-level key before the first [table]
    new_text = tomlkit.dumps(doc)
    if new_text == text:
        return
    try:
        write_text_atomic(path, new_text)
    except OSError as exc:
        raise TomlEditError(f"{path}: cannot write ({exc.strerror or exc}); file left unchanged", "io") from exc
