"""Lemonade as a remote: its downloaded models (``/api/v1/models``) and the loaded ones
(``all_models_loaded`` in ``/api/v1/health``).

Lemonade loads and unloads on request (``/api/v1/load``, ``/api/v1/unload`` with
``model_name``) but has no idle clock Siesta can set, so Siesta's own countdown unloads
its models (:mod:`.remote`). It has no event stream: Siesta polls. Its OpenAI routes live
under ``/api/v1`` (default port 13305 since v10.1, 8000 before).
"""

from __future__ import annotations

from typing import Any

from app.core.remotes.engine_api import RemoteEngine, RemoteModelInfo, RemoteRefused


class LemonadeEngine(RemoteEngine):
    """Lemonade's API, every route of it (OpenAI's too) under ``/api/v1``."""

    kind = "lemonade"
    can_load = True
    siesta_counts_idle = True
    passes_keep_alive = False
    keeps_timeouts = False
    probe_path = "/api/v1/health"

    def openai_url(self, raw_path: str) -> str:
        # Lemonade serves /v1/chat/completions as /api/v1/chat/completions
        return self.config.url + "/api" + raw_path

    async def list_models(self) -> list[RemoteModelInfo]:
        """Every downloaded model (``unloaded``), with the loaded ones ``ready``."""
        data = await self.call("GET", "/api/v1/models", what="list models")
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise RemoteRefused(self.name, "list models", 502,
                                'expected {"data": [{"id": ...}, ...]} from Lemonade, got ' + repr(data)[:200])
        health = await self.call("GET", "/api/v1/health", what="list loaded models")
        if not isinstance(health, dict):
            raise RemoteRefused(self.name, "list loaded models", 502,
                                "expected a JSON object from /api/v1/health, got " + repr(health)[:200])
        entries: dict[str, dict[str, Any]] = {}
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
                entries[item["id"]] = {"name": item["id"], "state": "unloaded"}
        for name, busy in _loaded(health, self.name):
            entries[name] = {"name": name, "state": "ready", "in_flight": 1 if busy else 0}
        return self.accept(entries.values())

    async def load(self, model: str) -> None:
        # Lemonade answers once the model is loaded (or downloaded first): the remote's load_timeout
        answer = await self.call("POST", "/api/v1/load", {"model_name": model}, what=f"load {model}",
                                 timeout=self.load_timeout, action=True)
        _check_status(answer, self.name, f"load {model}")

    async def unload(self, model: str) -> None:
        answer = await self.call("POST", "/api/v1/unload", {"model_name": model}, what=f"unload {model}",
                                 timeout=self.load_timeout, action=True)
        _check_status(answer, self.name, f"unload {model}")


def _loaded(health: dict[str, Any], remote: str) -> list[tuple[str, bool]]:
    """The loaded models and whether each is busy. Versions before multi-model support name
    only one, as ``model_loaded``."""
    entries = health.get("all_models_loaded")
    if entries is None:
        single = health.get("model_loaded")
        return [(single, False)] if isinstance(single, str) and single else []
    if not isinstance(entries, list):
        raise RemoteRefused(remote, "list loaded models", 502,
                            'expected "all_models_loaded": [{"model_name": ...}, ...] in /api/v1/health, got '
                            + repr(entries)[:200])
    return [(entry["model_name"], entry.get("is_busy") is True) for entry in entries
            if isinstance(entry, dict) and isinstance(entry.get("model_name"), str) and entry["model_name"]]


def _check_status(answer: Any, remote: str, what: str) -> None:
    # Lemonade reports some failures as {"status": "error", "message": ...}
    if isinstance(answer, dict) and answer.get("status") == "error":
        message = answer.get("message")
        raise RemoteRefused(remote, what, 502, message if isinstance(message, str) else repr(answer)[:200])
    if answer is not None and not isinstance(answer, dict):
        raise RemoteRefused(remote, what, 502, f"expected a JSON object, got {answer!r:.200}")
