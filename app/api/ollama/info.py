"""What an Ollama client asks before it talks to a model: ``GET /`` (is Ollama running?),
``/api/version``, the models (``/api/tags``), the loaded ones (``/api/ps``) and one model's
details (``POST /api/show``), in Ollama's shapes.

The shapes follow Ollama **0.32.15** (:data:`OLLAMA_VERSION`), the newest release tag of
ollama/ollama whose ``api/types.go`` (``ListModelResponse``, ``ProcessModelResponse``,
``ShowResponse``, ``ModelDetails``) and ``server/routes.go`` these were checked against;
``/api/version`` answers it, because clients that check a minimum version (for features
such as ``think`` or ``capabilities``) then see the API they get.

* Every model Siesta serves is listed: the local recipes, then the remotes' models as
  ``REMOTE/MODEL``, each under Ollama's ``NAME:latest`` when its name has no tag. A request
  from another Siesta (its hop header) sees local models only.
* A local model's facts come from its GGUF file and its recipe
  (:mod:`app.core.model_facts`): size and modification time are the file's, the digest a
  sha256 of the file's path, size and modification time (never of its contents), details
  and ``model_info`` from the header, read without loading the model. A remote's model is
  shown with what its remote says: its name and state.
* ``/api/ps`` shows ``expires_at`` as Siesta's unload time: the countdown of an idle model,
  ``now + timeout`` for a busy one (its countdown starts when its requests end), and for a
  model that never unloads the far future Ollama shows, now plus Go's longest duration
  (about 292 years, ``time.Duration(math.MaxInt64)``). ``size`` is the RAM and VRAM Siesta
  measured (the estimate until the first measurement), ``size_vram`` the VRAM.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from app.api.bodies import parse_object, read_body, request_name
from app.api.errors import ApiError
from app.api.jsonio import json_response
from app.api.ollama.common import model_not_found, ollama_error, ollama_name, resolve
from app.core.errors import UnknownModel
from app.core.manager import ModelManager
from app.core.model_facts import ModelFacts, model_facts
from app.core.models.model import ModelState
from app.core.remotes import HOP_HEADER, AmbiguousModel

OLLAMA_VERSION = "0.32.15"
"""The Ollama release whose API shapes these routes follow (see the module's docstring)."""

SHOW_MAX_BODY = 64 * 1024
"""The largest ``/api/show`` body: a model's name and a few flags."""

NEVER_SECONDS = (2**63 - 1) / 1e9
"""How far ahead Ollama puts ``expires_at`` for a model kept loaded: Go's longest duration."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def rfc3339(unix_time: float) -> str:
    """``unix_time`` as RFC 3339 in UTC (``2026-01-02T03:04:05.678901Z``), as Go writes a
    ``time.Time``; any year up to 9999, on every OS (no local-time conversion)."""
    moment = _EPOCH + timedelta(seconds=unix_time)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def expires_at(snapshot: dict[str, Any], now: float) -> float:
    """When a loaded model will be unloaded, as Unix time: its countdown's end; for a model
    not counting down (busy, or kept loaded), ``now`` plus its timeout, or plus
    :data:`NEVER_SECONDS` when it never unloads."""
    if snapshot.get("unload_at") is not None:
        return float(snapshot["unload_at"])
    timeout = snapshot.get("unload_timeout")
    return now + (NEVER_SECONDS if timeout is None else float(timeout))


def details(facts: ModelFacts | None) -> dict[str, Any]:
    """Ollama's ``details`` of a model: what its GGUF header says; empty strings for what is
    not known (a ``command`` model without a GGUF file, a remote's model)."""
    gguf = facts.gguf if facts is not None else None
    if gguf is None:
        return {"parent_model": "", "format": "", "family": "", "families": None, "parameter_size": "",
                "quantization_level": ""}
    return {"parent_model": "", "format": "gguf", "family": gguf.family,
            "families": [gguf.family] if gguf.family else None, "parameter_size": gguf.parameter_size,
            "quantization_level": gguf.quantization_level}


def _remote_digest(name: str) -> str:
    """A remote model's id: the sha256 of its ``REMOTE/MODEL`` name (its file is not ours to see)."""
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()


class OllamaInfo:
    """The handlers of this module's routes, over one manager."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    async def root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running", content_type="text/plain")

    async def version(self, request: web.Request) -> web.Response:
        return json_response({"version": OLLAMA_VERSION})

    async def _local_facts(self) -> list[ModelFacts]:
        """Every local model with a valid recipe, read in a worker thread (stat calls, and
        GGUF headers the first time)."""
        recipes = [m.recipe for m in self.manager.listed() if m.recipe is not None]
        return await asyncio.to_thread(lambda: [model_facts(r) for r in recipes])

    def _remote_snapshots(self, request: web.Request) -> list[dict[str, Any]]:
        return [] if HOP_HEADER in request.headers else self.manager.remotes.snapshots()

    async def tags(self, request: web.Request) -> web.Response:
        """``GET /api/tags``: every model, local ones first."""
        models = []
        for facts in await self._local_facts():
            listed = facts.listed
            name = ollama_name(facts.name)
            models.append({
                "name": name, "model": name,
                "modified_at": rfc3339(listed.modified if listed is not None else self.manager.started_at),
                "size": facts.file.size if facts.file is not None else 0,
                "digest": listed.digest if listed is not None else _remote_digest(facts.name),
                "details": details(facts), "capabilities": list(facts.capabilities),
            })
        for snapshot in self._remote_snapshots(request):
            name = ollama_name(snapshot["name"])
            models.append({"name": name, "model": name, "modified_at": rfc3339(self.manager.started_at), "size": 0,
                           "digest": _remote_digest(snapshot["name"]), "details": details(None)})
        return json_response({"models": models})

    async def ps(self, request: web.Request) -> web.Response:
        """``GET /api/ps``: the loaded models, the one unloaded last listed first (as Ollama sorts)."""
        now = time.time()
        loaded = [m for m in self.manager.listed() if m.state is ModelState.READY and m.recipe is not None]
        snapshots = [self.manager.snapshot_of(m) for m in loaded]
        recipes = [m.recipe for m in loaded]
        facts = await asyncio.to_thread(lambda: [model_facts(r) for r in recipes if r is not None])  # all of them
        entries: list[tuple[float, dict[str, Any]]] = []
        for snapshot, fact in zip(snapshots, facts, strict=True):
            listed = fact.listed
            entries.append(self._process(snapshot, now, fact, listed.digest if listed else _remote_digest(fact.name)))
        for snapshot in self._remote_snapshots(request):
            if snapshot.get("state") == ModelState.READY.value:
                entries.append(self._process(snapshot, now, None, _remote_digest(snapshot["name"])))
        entries.sort(key=lambda entry: -entry[0])
        return json_response({"models": [entry for _, entry in entries]})

    @staticmethod
    def _process(snapshot: dict[str, Any], now: float, facts: ModelFacts | None,
                 digest: str) -> tuple[float, dict[str, Any]]:
        """(expires_at as Unix time, for sorting; the ``/api/ps`` entry) of a loaded model."""
        ram, vram = snapshot.get("memory"), snapshot.get("vram")
        size = (ram or 0) + (vram or 0) if ram is not None or vram is not None else snapshot.get("memory_estimate")
        expires = expires_at(snapshot, now)
        name = ollama_name(snapshot["name"])
        return expires, {
            "name": name, "model": name, "size": int(size or 0), "digest": digest, "details": details(facts),
            "expires_at": rfc3339(expires), "size_vram": int(vram or 0),
            "context_length": (facts.context_length if facts is not None else None) or 0,
        }

    async def show(self, request: web.Request) -> web.Response:
        """``POST /api/show`` ``{"model": NAME}`` (or Ollama's older ``"name"``)."""
        what = request_name(request)
        hop = HOP_HEADER in request.headers
        try:
            data = parse_object(await read_body(request, SHOW_MAX_BODY), what)
            field = "model" if data.get("model") else "name"
            requested = data.get(field)
            if not isinstance(requested, str) or not requested:
                raise ApiError(400, "missing_model", f'{what}: model is required: {{"model": "NAME"}}')
            name = resolve(self.manager, requested, hop=hop, what=what, field=field)
        except ApiError as exc:
            return ollama_error(exc.status, exc.message)
        recipe = self.manager.recipe_of(name)
        if recipe is not None:
            facts = await asyncio.to_thread(model_facts, recipe)
            return json_response(self._show_local(facts))
        if hop:
            return model_not_found(requested)
        try:
            snapshot = self.manager.snapshot_by_name(name)
        except UnknownModel:
            return model_not_found(requested)
        except AmbiguousModel as exc:
            return ollama_error(409, f"{what}: {exc}")
        # remote_model: the remote's own name for it (Ollama's remote_host, a URL, is left out:
        # a remote's URL may carry its credentials)
        return json_response({"details": details(None), "model_info": {}, "capabilities": ["completion"],
                              "modified_at": rfc3339(self.manager.started_at),
                              "remote_model": snapshot.get("remote_model")})

    @staticmethod
    def _show_local(facts: ModelFacts) -> dict[str, Any]:
        gguf = facts.gguf
        listed = facts.listed
        source = facts.file.path if facts.file is not None else None
        answer: dict[str, Any] = {
            "parameters": facts.parameters,
            "template": gguf.chat_template if gguf is not None else "",
            "details": details(facts),
            "model_info": dict(gguf.model_info) if gguf is not None else {},
            "capabilities": list(facts.capabilities),
            "modified_at": rfc3339(listed.modified) if listed is not None else None,
            "modelfile": f"# Modelfile of Siesta's model {facts.name}\n" + (f"FROM {source}\n" if source else ""),
        }
        if gguf is not None and gguf.context_length is not None:
            answer["details"]["context_length"] = gguf.context_length
        return {key: value for key, value in answer.items() if value is not None}


def routes(manager: ModelManager) -> list[web.RouteDef]:
    """The routes of this module; each ``GET`` answers ``HEAD`` too, as Ollama's do."""
    info = OllamaInfo(manager)
    return [
        web.get("/", info.root),
        web.get("/api/version", info.version),
        web.get("/api/tags", info.tags),
        web.get("/api/ps", info.ps),
        web.post("/api/show", info.show),
    ]
