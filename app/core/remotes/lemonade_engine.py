"""Placeholder: lemonade remotes (being written)."""

from __future__ import annotations

from .engine_api import RemoteEngine, RemoteModelInfo


class LemonadeEngine(RemoteEngine):
    kind = "lemonade"

    async def list_models(self) -> list[RemoteModelInfo]:
        return []
