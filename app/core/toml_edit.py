"""Edit one top-level key of a user's TOML file, keeping every comment and the key order.

Reading everywhere else uses the fast standard ``tomllib``; only writes go through
tomlkit, which round-trips the user's formatting. The file is read and written without
newline translation, so its line endings are kept: in a file that uses CRLF throughout
(written on Windows), a line tomlkit adds gets CRLF too.
"""

from __future__ import annotations

import re
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


_LONE_LF = re.compile(r"(?<!\r)\n")


def _keep_line_endings(old: str, new: str) -> str:
    """``new`` with the line endings of ``old``: tomlkit keeps every existing line as it
    was but ends the lines it writes with LF, so in a file that used CRLF for every line
    those become CRLF. A file with mixed endings keeps each existing line as it was."""
    crlf = old.count("\r\n")
    if crlf and crlf == old.count("\n"):
        return _LONE_LF.sub("\r\n", new)
    return new


def set_toml_key(path: Path, key: str, value: Any | None, *, create: bool = False) -> None:
    """Sets top-level ``key`` to ``value`` (``None`` removes the key) and writes atomically.

    A file that fails to parse is never rewritten. With ``create``, a missing file is
    created holding just this key.
    """
    try:
        text = path.read_bytes().decode("utf-8")  # no newline translation: CRLF stays CRLF
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
    new_text = _keep_line_endings(text, tomlkit.dumps(doc))
    if new_text == text:
        return
    try:
        write_text_atomic(path, new_text)
    except OSError as exc:
        raise TomlEditError(f"{path}: cannot write ({exc.strerror or exc}); file left unchanged", "io") from exc
