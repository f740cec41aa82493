"""Placeholder: ollama remotes (being written)."""

from __future__ import annotations

from .engine_api import RemoteEngine, RemoteModelInfo


class OllamaEngine(RemoteEngine):
    kind = "ollama"

    async def list_models(self) -> list[RemoteModelInfo]:
        return []
