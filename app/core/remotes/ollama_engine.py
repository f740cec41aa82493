"""Ollama as a remote: its installed models (``/api/tags``) and the loaded ones
(``/api/ps``), with Ollama's own countdown (``expires_at``).

Ollama has no load or unload endpoint: ``POST /api/generate`` with a model and no prompt
loads it, and the same with ``keep_alive: 0`` unloads it. Ollama keeps its own idle clock
per model, which ``keep_alive`` sets; it ignores ``keep_alive`` on its ``/v1`` routes, so
after each request through Siesta the model's ``keep_alive`` is set to Siesta's timeout
for it with one more ``/api/generate`` (:meth:`OllamaEngine.after_request`).
"""

from __future__ import annotations

import math
import re
import time
from datetime import datetime
from typing import Any

from app.core.config.durations import MAX_SECONDS, Timeout
from app.core.remotes.engine_api import RemoteEngine, RemoteModelInfo, RemoteRefused

# Go writes up to nine digits of a second; six are kept, which every datetime parser reads.
_FRACTION = re.compile(r"(\.\d{6})\d+")


class OllamaEngine(RemoteEngine):
    """Ollama's own API (``/api/...``); its OpenAI routes are the front door's (``/v1/...``)."""

    kind = "ollama"
    can_load = True
    siesta_counts_idle = False
    passes_keep_alive = False
    keeps_timeouts = False
    probe_path = "/api/version"

    async def list_models(self) -> list[RemoteModelInfo]:
        """Every installed model (``unloaded``), with the loaded ones ``ready``."""
        installed = _models(await self.call("GET", "/api/tags", what="list models"), self.name, "list models")
        loaded = _models(await self.call("GET", "/api/ps", what="list loaded models"), self.name,
                         "list loaded models")
        now = time.time()
        entries: dict[str, dict[str, Any]] = {}
        for item in installed:
            name = _name(item)
            if name is not None:
                entries[name] = {"name": name, "state": "unloaded"}
        for item in loaded:  # a loaded model Ollama did not list as installed (a cloud model) is shown too
            name = _name(item)
            if name is None:
                continue
            expires_at = item.get("expires_at")
            # Ollama's size is the whole model in memory, size_vram the part of it on the GPU.
            size, vram = _int(item.get("size")), _int(item.get("size_vram"))
            ram = max(0, size - vram) if size is not None and vram is not None else size
            entries[name] = {"name": name, "state": "ready", "memory": ram, "vram": vram,
                             "unloads_in": seconds_until(expires_at, now) if isinstance(expires_at, str) else None}
        return self.accept(entries.values())

    async def load(self, model: str) -> None:
        # a large model can take minutes to load: the remote's load_timeout, not the quick calls' limit
        answer = await self.call("POST", "/api/generate", {"model": model}, what=f"load {model}",
                                 timeout=self.load_timeout, action=True)
        _check_generate(answer, self.name, f"load {model}")

    async def unload(self, model: str) -> None:
        answer = await self.call("POST", "/api/generate", {"model": model, "keep_alive": 0},
                                 what=f"unload {model}", timeout=self.load_timeout, action=True)
        _check_generate(answer, self.name, f"unload {model}")

    async def after_request(self, model: str, timeout: Timeout) -> None:
        """Sets Ollama's idle clock for ``model`` to Siesta's timeout (-1: never unload), if
        it is still loaded: a ``keep_alive`` for a model Ollama has unloaded would load it."""
        loaded = _models(await self.call("GET", "/api/ps", what="list loaded models"), self.name,
                         "list loaded models")
        if not any(_name(item) == model for item in loaded):
            return
        keep_alive = -1 if timeout is None else math.ceil(timeout)
        answer = await self.call("POST", "/api/generate", {"model": model, "keep_alive": keep_alive},
                                 what=f"set keep_alive of {model}")
        _check_generate(answer, self.name, f"set keep_alive of {model}")


def seconds_until(expires_at: str, now: float) -> float | None:
    """Seconds from ``now`` (Unix time) until Ollama's ``expires_at`` (RFC 3339, with up to
    nine digits of a second). None when it cannot be read or lies so far ahead that it
    means "never" (a negative ``keep_alive`` makes Ollama write a year near 2318)."""
    text = _FRACTION.sub(r"\1", expires_at.strip())
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None or moment.year <= 1:
        return None  # no offset: not RFC 3339; year 1: Go's zero time, "not known yet"
    try:
        remaining = moment.timestamp() - now
    except (OverflowError, OSError, ValueError):
        return None
    if remaining > MAX_SECONDS:
        return None
    return max(0.0, remaining)


def _models(data: Any, remote: str, what: str) -> list[dict[str, Any]]:
    items = data.get("models") if isinstance(data, dict) else None
    if items is None and isinstance(data, dict) and "models" in data:
        return []  # Ollama writes null for "none"
    if not isinstance(items, list):
        raise RemoteRefused(remote, what, 502, 'expected {"models": [{"name": ...}, ...]} from Ollama, got '
                            + repr(data)[:200])
    return [item for item in items if isinstance(item, dict)]


def _name(item: dict[str, Any]) -> str | None:
    for key in ("name", "model"):
        value = item.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _check_generate(answer: Any, remote: str, what: str) -> None:
    if not isinstance(answer, dict):
        raise RemoteRefused(remote, what, 502, f"expected one JSON object from /api/generate, got {answer!r:.200}")
    if isinstance(answer.get("error"), str):
        raise RemoteRefused(remote, what, 502, answer["error"])


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
