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

_SNAPSHOT_KEYS_HERE_ONLY = ("log_file",)  # a path on the other machine means nothing here


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
        return [info for item in models if (info := _info(item)) is not None]

    async def load(self, model: str) -> None:
        await self.call("POST", "/api/v1/load", {"model": model}, what=f"load {model}", timeout=None)

    async def unload(self, model: str) -> None:
        await self.call("POST", "/api/v1/unload", {"model": model}, what=f"unload {model}", timeout=None)

    async def set_timeout(self, model: str, value: Any) -> None:
        wire = USE_GLOBAL.value if value is USE_GLOBAL else ("never" if value is None else value)
        await self.call("PATCH", f"/api/v1/models/{quote(model, safe='')}", {"unload_timeout": wire},
                        what=f"set the timeout of {model}")

    def events(self) -> AsyncIterator[RemoteModelInfo | None]:
        return self._events()

    async def _events(self) -> AsyncIterator[RemoteModelInfo | None]:
        """The other Siesta's ``/api/v1/events`` (its local models only; a keep-alive comment
        every 15 s), one model per event."""
        try:
            async for event in self.sse("/api/v1/events?scope=local"):
                if event.get("reason") == "removed":
                    yield None  # a model is gone: list again
                elif (info := _info(event.get("model"))) is not None:
                    yield info
        except NoEventStream:
            raise RemoteRefused(self.name, "watch events", 404, "no event stream at /api/v1/events: is it a Siesta?")


def _info(item: Any) -> RemoteModelInfo | None:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or item.get("remote"):
        return None  # a remote's remote is not listed (it should not be sent at all)
    snapshot = {k: v for k, v in item.items() if k not in _SNAPSHOT_KEYS_HERE_ONLY}
    state = item.get("state") if isinstance(item.get("state"), str) else "failed"
    unloads_in = item.get("unloads_in")
    return RemoteModelInfo(
        model=item["name"], state=state,
        memory=_int(item.get("memory")), vram=_int(item.get("vram")),
        unloads_in=float(unloads_in) if isinstance(unloads_in, int | float) else None,
        busy=bool(item.get("in_flight")), error=item.get("error") if isinstance(item.get("error"), str) else None,
        snapshot=snapshot,
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
