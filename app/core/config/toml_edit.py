"""Edit one top-level key of a user's TOML file, keeping every comment and the key order.

A value may be a table (a dict): a new one is written as a ``[key]`` section, after the
top-level keys; one that already exists (a section, an inline table, dotted keys) is
updated entry by entry in its own form, so the comments of the entries that stay are kept.

Reading everywhere else uses the fast standard ``tomllib``; only writes go through
tomlkit, which round-trips the user's formatting. The file is read and written without
newline translation, so its line endings are kept: in a file that uses CRLF throughout
(written on Windows), a line tomlkit adds gets CRLF too.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import Array

from app.core.config.atomic_write import write_text_atomic


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


_TRAILING_NEWLINES = re.compile(r"(?:\r?\n)+\Z")


def _trailing_newlines(text: str) -> int:
    match = _TRAILING_NEWLINES.search(text)
    return match.group(0).count("\n") if match else 0


def _keep_file_end(old: str, new: str) -> str:
    """``new`` without the blank lines tomlkit leaves at the end when a trailing table is
    replaced by a plain value: at most as many final newlines as ``old`` had (at least one)."""
    keep = max(_trailing_newlines(old), 1)
    if _trailing_newlines(new) <= keep:
        return new
    newline = "\r\n" if new.endswith("\r\n") else "\n"
    return _TRAILING_NEWLINES.sub("", new) + newline * keep


def _update_table(table: MutableMapping[str, Any], value: Mapping[str, Any]) -> None:
    """Makes an existing table hold ``value``, entry by entry: entries that stay the same
    keep their comments and place."""
    for name in [k for k in table if k not in value]:
        del table[name]
    for name, item in value.items():
        if name not in table or table[name] != item:
            table[name] = item


def _update_array(array: Any, value: Sequence[Any]) -> None:
    """Makes an existing array hold ``value`` by editing only the items that change, so a
    multi-line array keeps its layout and the comments beside the items that stay."""
    old = [str(item) for item in array]
    new = [str(item) for item in value]
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, i1, i2, j1, j2 in reversed(matcher.get_opcodes()):
        if tag == "equal":
            continue
        if tag == "replace" and i2 - i1 == j2 - j1:
            for k in range(i2 - i1):
                array[i1 + k] = value[j1 + k]
            continue
        del array[i1:i2]
        for k, item in enumerate(value[j1:j2]):
            array.insert(i1 + k, item)


def set_toml_key(path: Path, key: str, value: Any | None, *, create: bool = False) -> None:
    """Sets top-level ``key`` to ``value`` (``None`` removes the key) and writes atomically.
    A dict value is written as a table (see the module); a list replacing an existing array
    is edited item by item (see :func:`set_toml_keys`).

    A file that fails to parse is never rewritten. With ``create``, a missing file is
    created holding just this key.
    """
    set_toml_keys(path, {key: value}, create=create)


def set_toml_keys(path: Path, values: Mapping[str, Any | None], *, create: bool = False) -> None:
    """Sets several top-level keys in one atomic write, each as :func:`set_toml_key` would
    (``None`` removes a key). A list value replacing an existing array changes only the
    items that differ, keeping the array's layout and its comments."""
    _edit(path, lambda doc: _set_top_level(doc, values), create=create)


def set_toml_nested(path: Path, tables: Sequence[str], key: str, value: Any | None, *,
                    create: bool = False) -> None:
    """Sets ``key`` inside the nested table ``tables`` (``["remotes", "ollama", "timeouts"]``
    is ``[remotes.ollama.timeouts]``), creating the tables it needs; ``None`` removes the
    key, and a table it leaves empty. Everything else keeps its comments and place."""

    def change(doc: Any) -> None:
        chain = [doc]
        for name in tables:
            table = chain[-1].get(name)
            if table is None:
                if value is None:
                    return
                table = tomlkit.table(is_super_table=len(chain) < len(tables))
                chain[-1][name] = table
            elif not isinstance(table, MutableMapping):
                raise TomlEditError(f"{path}: {'.'.join(tables)} is not a table, left unchanged", "invalid")
            chain.append(table)
        if value is not None:
            chain[-1][key] = value
            return
        if key in chain[-1]:
            del chain[-1][key]
        for parent, name, table in reversed(list(zip(chain, tables, chain[1:]))):
            if len(table) == 0:
                del parent[name]

    _edit(path, change, create=create)


def _set_top_level(doc: Any, values: Mapping[str, Any | None]) -> None:
    for key, value in values.items():
        if value is None:
            if key in doc:
                del doc[key]
        elif isinstance(value, Mapping) and isinstance(doc.get(key), MutableMapping):
            _update_table(doc[key], value)
        elif isinstance(value, (list, tuple)) and isinstance(doc.get(key), Array):
            _update_array(doc[key], list(value))
        else:
            doc[key] = value  # tomlkit puts a new top-level key before the first [table], a new table last


def _edit(path: Path, change: Any, *, create: bool) -> None:
    """Reads ``path``, applies ``change(doc)`` to its tomlkit document and writes it back
    atomically when the text changed; a file that does not parse is never rewritten."""
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
    change(doc)
    new_text = _keep_line_endings(text, _keep_file_end(text, tomlkit.dumps(doc)))
    if new_text == text:
        return
    try:
        write_text_atomic(path, new_text)
    except OSError as exc:
        raise TomlEditError(f"{path}: cannot write ({exc.strerror or exc}); file left unchanged", "io") from exc
