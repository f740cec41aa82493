"""What a command runs with: its parsed arguments, the paths, and (read only when the
command asks) the settings, the running instance's address and a client for it. With
``--connect URL`` the address is that URL, and this machine's settings are not read for it."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, NoReturn

from app.cli.client import ApiClient
from app.cli.parser import flags
from app.core.config.endpoint import Endpoint, endpoint_for_url, resolve_endpoint
from app.core.config.paths import Paths

if TYPE_CHECKING:
    from app.core.config.settings import LoadedSettings


@dataclass
class Context:
    parser: argparse.ArgumentParser
    args: argparse.Namespace
    paths: Paths

    @cached_property
    def settings(self) -> LoadedSettings:
        """Every setting, from flags, environment and settings.toml (SettingsError if bad)."""
        from app.core.config.settings import load_settings

        return load_settings(self.paths.settings_file, flags(self.args))

    @cached_property
    def endpoint(self) -> Endpoint:
        """Only host, port and key: fast, for the commands that talk to a running instance.
        ``--connect URL`` names it (its key: ``--api-key``, else ``SIESTA_API_KEY``)."""
        key = getattr(self.args, "api_key", None)
        url = getattr(self.args, "connect", None)
        if url is not None:
            return endpoint_for_url(url, key or os.environ.get("SIESTA_API_KEY"))
        endpoint = resolve_endpoint(self.paths.settings_file, flags(self.args))
        return replace(endpoint, api_key=key) if key else endpoint

    @cached_property
    def client(self) -> ApiClient:
        return ApiClient(self.endpoint)

    def usage_error(self, message: str) -> NoReturn:
        """Exits 2 with the usage line, as argparse does for a bad option."""
        self.parser.error(message)
