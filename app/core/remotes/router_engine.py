"""llama.cpp's own router as a remote: ``llama-server --models-dir DIR`` (or
``--models-preset``) started with no model, which starts one child ``llama-server`` per
model on demand.

What the router offers, and how Siesta uses it:

- ``GET /models``: every model it knows, each with ``status.value`` (``unloaded``,
  ``loading``, ``loaded``, ``sleeping``); a load that failed, or a child that died, shows
  as ``unloaded`` with ``failed: true`` and the child's ``exit_code``.
- ``POST /models/load`` and ``POST /models/unload`` answer ``{"success": true}`` at once,
  before the work is done, so :meth:`RouterEngine.load` and :meth:`RouterEngine.unload`
  list the models again until the work is done. Loading a model that is loading or
  loaded, or unloading one that is not running, is answered 400.
- ``GET /models/sse``: a ``status_change`` event for every change (not in every build:
  without it Siesta lists every few seconds).

The router has an idle clock Siesta cannot set per model (``--sleep-idle-seconds`` is
one value for all, and a sleeping child keeps its process), so Siesta's own countdown
unloads its models through ``/models/unload`` (see :mod:`.remote`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from app.core.remotes.config import RemoteConfig
from app.core.remotes.engine_api import (
    DEFAULT_LOAD_TIMEOUT,
    NoEventStream,
    RemoteEngine,
    RemoteModelInfo,
    RemoteRefused,
)

POLL_INTERVAL = 0.15
"""Seconds between listings while a load or an unload is under way."""

_STATES = {
    "loaded": "ready",
    # A sleeping child has freed its weights but keeps its process and answers the next
    # request after a short wake-up: for a client it is loaded, and Siesta's countdown
    # (which unloads it fully) must keep running.
    "sleeping": "ready",
    "loading": "loading",
    "downloading": "loading",
    "unloading": "unloading",
    "unloaded": "unloaded",
    "failed": "failed",
}

_NOT_A_ROUTER = "is this a llama.cpp router (llama-server started with --models-dir or --models-preset, no model)?"


class RouterEngine(RemoteEngine):
    kind = "llama.cpp-router"
    siesta_counts_idle = True
    probe_path = "/health"

    def __init__(self, config: RemoteConfig, http: aiohttp.ClientSession,
                 global_load_timeout: Callable[[], float] = lambda: DEFAULT_LOAD_TIMEOUT) -> None:
        super().__init__(config, http, global_load_timeout)
        self._has_events = True  # until /models/sse turns out to be missing

    # ---- listing -----------------------------------------------------------------------------

    async def list_models(self) -> list[RemoteModelInfo]:
        data = await self.call("GET", "/models", what="list models")
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise RemoteRefused(self.name, "list models", 502,
                                f'expected {{"data": [...]}} from GET /models, got {_short(data)}; {_NOT_A_ROUTER}')
        return self.accept(self._entry(item) for item in items)

    def _entry(self, item: Any) -> dict[str, Any]:
        """One model of ``GET /models`` in Siesta's words; RemoteRefused when it is not in
        the router's shape at all."""
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            raise RemoteRefused(self.name, "list models", 502,
                                f"expected each model of GET /models to have an \"id\", got {_short(item)}")
        model = item["id"]
        status = item.get("status")
        if isinstance(status, str):
            status = {"value": status}
        if not isinstance(status, dict) or not isinstance(status.get("value"), str):
            raise RemoteRefused(self.name, "list models", 502,
                                f"model {model!r} of GET /models has no status.value; {_NOT_A_ROUTER}")
        value = status["value"]
        exit_code = status.get("exit_code")
        if status.get("failed") is True or value == "failed":
            how = f"exited with code {exit_code}" if isinstance(exit_code, int) else "failed"
            return {"name": model, "state": "failed", "error": f"the router's llama-server for {model} {how}"}
        state = _STATES.get(value)
        if state is None:
            return {"name": model, "state": "failed",
                    "error": f"the router reports status {value[:64]!r}, which Siesta does not know"}
        return {"name": model, "state": state}

    async def _state_of(self, model: str, what: str) -> RemoteModelInfo:
        for info in await self.list_models():
            if info.model == model:
                return info
        raise RemoteRefused(self.name, what, 404, f"the router does not list {model!r}")

    # ---- load and unload ---------------------------------------------------------------------

    async def load(self, model: str) -> None:
        """Asks the router to load ``model`` and returns once it is loaded; RemoteRefused
        when the load fails, the model goes away, or it is not ready in time."""
        what = f"load {model}"
        try:
            await self.call("POST", "/models/load", {"model": model}, what=what)
        except RemoteRefused as exc:
            if exc.status != 400:
                raise
            # 400 is the router's answer for a model already loading or loaded
            info = await self._state_of(model, what)
            if info.state not in ("ready", "loading"):
                raise
        await self._wait(model, what, self._load_done, "loaded")

    async def unload(self, model: str) -> None:
        """Asks the router to unload ``model`` and returns once its process has stopped."""
        what = f"unload {model}"
        try:
            await self.call("POST", "/models/unload", {"model": model}, what=what)
        except RemoteRefused as exc:
            if exc.status != 400:
                raise
            # 400 is the router's answer for a model that is not running: nothing to do
            info = await self._state_of(model, what)
            if info.state in ("unloaded", "failed"):
                return
            raise
        await self._wait(model, what, self._unload_done, "unloaded")

    def _load_done(self, info: RemoteModelInfo, what: str) -> bool:
        if info.state == "ready":
            return True
        if info.state == "failed":
            raise RemoteRefused(self.name, what, 502, info.error or "the load failed")
        if info.state == "unloaded":
            # The router sets "loading" before it answers the load, so this one is over:
            # unloaded again (by --models-max or another client) before Siesta saw it ready.
            raise RemoteRefused(self.name, what, 502, f"{info.model} was unloaded again before it was ready")
        return False

    @staticmethod
    def _unload_done(info: RemoteModelInfo, what: str) -> bool:
        # The router shows the model loaded until its process has exited; anything else
        # (even "loading": a request after the unload loaded it again) means it is done.
        return info.state != "ready"

    async def _wait(self, model: str, what: str, done: Callable[[RemoteModelInfo, str], bool], goal: str) -> None:
        """Lists the router's models every :data:`POLL_INTERVAL` until ``done`` says the
        model got where it should (its own listing of the router, a separate process:
        there is no event to await that every build has), for at most the remote's
        ``load_timeout``."""
        limit = self.load_timeout
        deadline = time.monotonic() + limit
        while True:
            if done(await self._state_of(model, what), what):
                return
            if time.monotonic() >= deadline:
                raise RemoteRefused(self.name, what, 504,
                                    f"{model} was still not {goal} after {limit:g} s (the load_timeout of remote "
                                    f"{self.name!r}; set load_timeout in [remotes.{self.name}] to allow more)")
            await asyncio.sleep(POLL_INTERVAL)

    # ---- events ------------------------------------------------------------------------------

    def events(self) -> AsyncIterator[RemoteModelInfo | None] | None:
        return self._events() if self._has_events else None

    async def _events(self) -> AsyncIterator[RemoteModelInfo | None]:
        """``GET /models/sse``: None ("list again") for each model's status change. A router
        without the stream is polled from then on."""
        try:
            async for event in self.sse("/models/sse"):
                if "model" in event:
                    yield None
        except NoEventStream:
            self._has_events = False


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
