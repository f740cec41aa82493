"""Where the running Siesta listens, read with the standard library only.

The CLI's client commands (``siesta ps``, ``load``, ``timeout``...) need just the host,
port and API key, and must answer fast: importing pydantic-settings alone takes about
0.18 s here, more than half of ``siesta ps``'s budget. These few values follow the same
order as :mod:`app.core.config.settings` (flag > ``SIESTA_*`` environment > settings.toml >
default) and the same defaults, which that module takes from here.

``--connect URL`` names a Siesta elsewhere instead (:func:`endpoint_for_url`): then none
of this machine's settings is read.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8777


WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "*": "127.0.0.1", "::": "::1"}
"""A wildcard bind and the loopback address a local client reaches it on (same family)."""


def connect_host(host: str) -> str:
    """Where a local client connects to reach a server bound to ``host``."""
    return WILDCARD_HOSTS.get(host, host)


def client_url(host: str, port: int | None) -> str:
    """The base URL a local client uses for a server bound to ``host:port``; the one rule
    for the CLI, the front door's own URL and the tray's "Copy API URL"."""
    host = connect_host(host)
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


class SettingsError(Exception):
    """Settings that cannot be used; the message names the file or variable and the field."""


def read_settings_file(path: Path) -> dict[str, Any]:
    """The raw table of settings.toml ({} when absent); SettingsError when it does not parse."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class Endpoint:
    """The address of a running instance and the key to use with it. ``given`` is True for
    an address named by ``--connect`` (a Siesta elsewhere), False for this machine's own."""

    host: str
    port: int
    api_key: str | None = field(default=None, repr=False)
    scheme: str = "http"
    path: str = ""  # a base path in front of /api/v1 (a Siesta behind a reverse proxy)
    given: bool = False

    @property
    def connect_host(self) -> str:
        """Where a local client connects: a wildcard bind is reached on loopback."""
        return connect_host(self.host)

    @property
    def base_url(self) -> str:
        if self.scheme == "http" and not self.path:
            return client_url(self.host, self.port)
        host = self.connect_host
        return f"{self.scheme}://{'[' + host + ']' if ':' in host else host}:{self.port}{self.path}"


def base_url(url: str) -> str:
    """``url`` without a trailing slash; ValueError unless it is an http:// or https:// URL
    with a host and without ? or #. The one check for every base URL a user gives Siesta
    (``--connect``, a remote's ``url``)."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL with a host, such as http://192.168.1.20:8777, "
                         f"got {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"expected a base URL without ? or #, got {url!r}")
    return url


def endpoint_for_url(url: str, api_key: str | None) -> Endpoint:
    """The Siesta ``--connect URL`` names. ``gpubox`` or ``gpubox:8777`` mean
    ``http://gpubox:8777`` (Siesta's port when none is given without a scheme); with a
    scheme, the scheme's port is the default. SettingsError says what is wrong."""
    bare = "://" not in url
    raw = url.strip()
    try:
        parts = urlsplit(base_url("http://" + raw if bare else raw))
        port = parts.port
    except ValueError as exc:
        raise SettingsError(f"--connect {url!r}: {exc}") from None
    if bare and port is None:
        port = DEFAULT_PORT
    port = port or (443 if parts.scheme == "https" else 80)
    return Endpoint(host=parts.hostname, port=port, api_key=api_key or None, scheme=parts.scheme,
                    path=parts.path.rstrip("/"), given=True)


def resolve_endpoint(settings_file: Path, flags: dict[str, Any]) -> Endpoint:
    """host, port and api_key as the settings would resolve them; SettingsError names the source."""
    file_data = read_settings_file(settings_file)

    def pick(field: str, default: Any) -> tuple[Any, str]:
        if flags.get(field) is not None:
            return flags[field], f"flag --{field.replace('_', '-')}"
        env = f"SIESTA_{field.upper()}"
        if env in os.environ:
            return os.environ[env], f"environment variable {env}"
        if field in file_data:
            return file_data[field], f"{settings_file}, key {field}"
        return default, "default"

    host, _ = pick("host", DEFAULT_HOST)
    raw_port, port_source = pick("port", DEFAULT_PORT)
    try:
        port = int(raw_port)
        if isinstance(raw_port, bool) or not 1 <= port <= 65535:
            raise ValueError
    except (TypeError, ValueError):
        raise SettingsError(f"invalid settings: {port_source}: expected a port number 1-65535 "
                            f"(got {raw_port!r})") from None
    api_key, _ = pick("api_key", None)
    return Endpoint(host=str(host).strip(), port=port, api_key=str(api_key) if api_key else None)
