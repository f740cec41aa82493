"""The exceptions a request to the manager can end in, shared by the manager, the client of
a Siesta elsewhere (which raises the same ones from its HTTP answers) and the API (which maps
them to status codes)."""

from __future__ import annotations

__all__ = ["PersistError", "SettingFixed", "UnknownModel"]


class UnknownModel(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"model {self.name!r} not found: no recipe of that name"


class SettingFixed(Exception):
    """A run-time change to a setting that a flag or an environment variable pins."""


class PersistError(Exception):
    """A change that could not be written; ``kind`` is ``invalid`` (bad file) or ``io``."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind
