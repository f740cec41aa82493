"""Remotes as the user writes them in settings.toml: one ``[remotes.NAME]`` table each.

```toml
[remotes.gpubox]
kind = "siesta"            # siesta | ollama | llama.cpp-router | lemonade | openai
url = "http://192.168.1.20:8777"
api_key = "..."            # optional; or SIESTA_REMOTE_GPUBOX_API_KEY in the environment
load_timeout = "10m"       # optional; longest a load or an unload there may take (default: the
                           # global load_timeout), and longest a routed request may wait for a byte

[remotes.ollama.timeouts]  # engines with no recipe here keep their models' timeouts here
"llama3.2:latest" = "10m"
```

A remote that cannot be used is left out with a message that names the file and the key;
the others still work. The API key is kept out of ``repr`` and every description; a URL
with a user name or password in it (``http://user:pass@host``) is refused, so that none
is ever shown: a key goes in ``api_key``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.config.durations import DurationError, Timeout, parse_duration
from app.core.config.endpoint import base_url
from app.core.config.recipes import is_valid_name

KINDS = ("siesta", "ollama", "llama.cpp-router", "lemonade", "openai")
"""Every kind of remote Siesta can route to and (except ``openai``) control."""

_KEYS = {"kind", "url", "api_key", "load_timeout", "timeouts"}


def api_key_env(name: str) -> str:
    """The environment variable that carries remote ``name``'s API key."""
    return "SIESTA_REMOTE_" + "".join(c if c.isalnum() else "_" for c in name).upper() + "_API_KEY"


@dataclass(frozen=True)
class RemoteConfig:
    """One remote: its name (the prefix of its models' names here), kind, base URL, key,
    the per-model timeouts Siesta keeps for it (engines with no recipe of Siesta's), and
    its own ``load_timeout`` in seconds (None: the global one applies)."""

    name: str
    kind: str
    url: str
    api_key: str | None = field(default=None, repr=False)
    timeouts: Mapping[str, Timeout] = field(default_factory=dict)
    load_timeout: float | None = None

    def describe(self) -> dict[str, Any]:
        """What the API and the GUI may show: never the key itself."""
        return {"name": self.name, "kind": self.kind, "url": self.url,
                "api_key": "(set)" if self.api_key else None}

    def same_connection(self, other: RemoteConfig) -> bool:
        """True when only the timeouts (the models' or ``load_timeout``) differ: the
        connection and what it knows can stay."""
        return (self.kind, self.url, self.api_key) == (other.kind, other.url, other.api_key)


def parse_remotes(data: Mapping[str, Any], settings_file: Path,
                  environ: Mapping[str, str] | None = None) -> tuple[dict[str, RemoteConfig], list[str]]:
    """The ``[remotes]`` of a settings file's table: the usable remotes by name, and one
    message per remote left out (naming the file, the key and what was expected)."""
    environ = os.environ if environ is None else environ
    raw = data.get("remotes", {})
    if not isinstance(raw, Mapping):
        return {}, [f"{settings_file}: key remotes: expected a table of [remotes.NAME] tables"]
    remotes: dict[str, RemoteConfig] = {}
    errors: list[str] = []
    for name, table in raw.items():
        where = f"{settings_file}, [remotes.{name}]"
        try:
            remotes[name] = _parse_one(name, table, where, environ)
        except ValueError as exc:
            errors.append(f"{where}: {exc}")
    return remotes, errors


def _parse_one(name: str, table: Any, where: str, environ: Mapping[str, str]) -> RemoteConfig:
    if not is_valid_name(name) or "/" in name:
        raise ValueError("a remote's name uses the characters of a recipe name (letters, digits, . _ -), no /")
    if not isinstance(table, Mapping):
        raise ValueError("expected a table with kind and url")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ValueError(f"unknown keys {', '.join(unknown)} (expected {', '.join(sorted(_KEYS))})")
    kind = table.get("kind")
    if kind not in KINDS:
        raise ValueError(f"key kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    url = _url(name, table.get("url"))
    key = environ.get(api_key_env(name)) or table.get("api_key")
    if key is not None and (not isinstance(key, str) or not key.strip()):
        raise ValueError("key api_key: expected a non-empty string")
    load_timeout = _load_timeout(table.get("load_timeout"))
    timeouts_raw = table.get("timeouts", {})
    if not isinstance(timeouts_raw, Mapping):
        raise ValueError('key timeouts: expected a table of model = duration, such as "llama3:8b" = "10m"')
    timeouts: dict[str, Timeout] = {}
    for model, value in timeouts_raw.items():
        try:
            timeouts[model] = parse_duration(value)
        except DurationError as exc:
            raise ValueError(f"timeouts, key {model!r}: {exc}") from None
    return RemoteConfig(name=name, kind=kind, url=url, api_key=key.strip() if key else None, timeouts=timeouts,
                        load_timeout=load_timeout)


def _url(name: str, url: Any) -> str:
    """The remote's base URL, checked. One with a user name or password is refused without
    quoting it (that would show them); any "@" is taken for one."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError('key url: expected the remote\'s base URL, such as "http://192.168.1.20:8777"')
    if "@" in url:
        raise ValueError(f"key url: a user name or password in the URL is not accepted (it has an @): put the "
                         f"remote's key in api_key, or in {api_key_env(name)} in the environment")
    try:
        return base_url(url)
    except ValueError as exc:
        raise ValueError(f"key url: {exc}") from None


def _load_timeout(value: Any) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except DurationError as exc:
        raise ValueError(f"key load_timeout: {exc}") from None
    if seconds is None or seconds <= 0:
        raise ValueError(f'key load_timeout: expected a duration above 0 such as "10m", got {value!r} '
                         "(a load must end some time: a remote that never answers would hold it forever)")
    return seconds
