"""Placeholder: llama.cpp-router remotes (being written)."""

from __future__ import annotations

from .engine_api import RemoteEngine, RemoteModelInfo


class RouterEngine(RemoteEngine):
    kind = "llama.cpp-router"

    async def list_models(self) -> list[RemoteModelInfo]:
        return []
