"""What a command runs with: its parsed arguments, the paths, and (read only when the
command asks) the settings, the running instance's address and a client for it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, NoReturn

from app.core.endpoint import Endpoint, resolve_endpoint
from app.core.paths import Paths

from .client import ApiClient
from .parser import flags

if TYPE_CHECKING:
    from app.core.settings import LoadedSettings


@dataclass
class Context:
    parser: argparse.ArgumentParser
    args: argparse.Namespace
    paths: Paths

    @cached_property
    def settings(self) -> LoadedSettings:
        """Every setting, from flags, environment and settings.toml (SettingsError if bad)."""
        from app.core.settings import load_settings

        return load_settings(self.paths.settings_file, flags(self.args))

    @cached_property
    def endpoint(self) -> Endpoint:
        """Only host, port and key: fast, for the commands that talk to a running instance."""
        return resolve_endpoint(self.paths.settings_file, flags(self.args))

    @cached_property
    def client(self) -> ApiClient:
        return ApiClient(self.endpoint)

    def usage_error(self, message: str) -> NoReturn:
        """Exits 2 with the usage line, as argparse does for a bad option."""
        self.parser.error(message)
