"""Another Siesta as a remote: everything works as for local models, through its
management API (``/api/v1``) and its event stream.

The other Siesta keeps its models' lifecycle, countdowns and recipes; this side shows
them and asks it to act. Timeouts set here are written into the recipe on that machine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from app.core.config.durations import USE_GLOBAL
from app.core.remotes.engine_api import NoEventStream, RemoteEngine, RemoteModelInfo, RemoteRefused


class SiestaEngine(RemoteEngine):
    kind = "siesta"
    passes_keep_alive = True
    keeps_timeouts = True
    probe_path = "/api/v1/health"

    async def list_models(self) -> list[RemoteModelInfo]:
        data = await self.call("GET", "/api/v1/models?scope=local", what="list models")
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, list):
            raise RemoteRefused(self.name, "list models", 502, "expected {\"models\": [...]}")
        return self.accept((item for item in models if _local(item)), snapshot=True)

    async def load(self, model: str) -> None:
        await self.call("POST", "/api/v1/load", {"model": model}, what=f"load {model}", timeout=self.load_timeout,
                        action=True)

    async def unload(self, model: str) -> None:
        await self.call("POST", "/api/v1/unload", {"model": model}, what=f"unload {model}",
                        timeout=self.load_timeout, action=True)

    async def set_timeout(self, model: str, value: Any) -> None:
        wire = USE_GLOBAL.value if value is USE_GLOBAL else ("never" if value is None else value)
        await self.call("PATCH", f"/api/v1/models/{quote(model, safe='')}", {"unload_timeout": wire},
                        what=f"set the timeout of {model}")

    def events(self) -> AsyncIterator[RemoteModelInfo | None]:
        return self._events()

    async def _events(self) -> AsyncIterator[RemoteModelInfo | None]:
        """The other Siesta's ``/api/v1/events`` (its local models only; a keep-alive comment
        every 15 s), one model per event, checked as a listing's are."""
        try:
            async for event in self.sse("/api/v1/events?scope=local"):
                if event.get("reason") == "removed":
                    yield None  # a model is gone: list again
                elif _local(model := event.get("model")) and (info := self.accept_one(model, snapshot=True)):
                    yield info
        except NoEventStream:
            raise RemoteRefused(self.name, "watch events", 404, "no event stream at /api/v1/events: is it a Siesta?")


def _local(item: Any) -> bool:
    """A model of the other Siesta's own; a remote's remote is not taken (it should not be
    sent at all: every call carries the hop header)."""
    return isinstance(item, dict) and not item.get("remote")
