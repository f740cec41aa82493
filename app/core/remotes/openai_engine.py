"""Any OpenAI-compatible server as a remote: routing only. Its models come from
``GET /v1/models``; Siesta cannot load, unload or time them out."""

from __future__ import annotations

from app.core.remotes.engine_api import RemoteEngine, RemoteModelInfo, RemoteRefused


class OpenAIEngine(RemoteEngine):
    kind = "openai"
    can_load = False

    def openai_url(self, raw_path: str) -> str:
        # A URL written with its /v1 ("https://api.example.com/v1") is the same server.
        return self.config.url.removesuffix("/v1") + raw_path

    async def list_models(self) -> list[RemoteModelInfo]:
        base = "/models" if self.config.url.endswith("/v1") else "/v1/models"
        data = await self.call("GET", base, what="list models")
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise RemoteRefused(self.name, "list models", 502, 'expected {"data": [{"id": ...}]}')
        return self.accept({"name": item["id"], "state": "ready"} for item in items
                           if isinstance(item, dict) and isinstance(item.get("id"), str))
