"""``POST /api/embed`` and the older ``POST /api/embeddings``: Ollama's embeddings, from the
model's ``/v1/embeddings``.

``/api/embed`` takes ``input``, a string or a list of strings, and answers ``embeddings``
(one vector per input, unit length as Ollama makes them; ``dimensions`` keeps each vector's
first N values, made unit length again) with ``total_duration``, ``load_duration`` (the
load the request waited for) and ``prompt_eval_count``. ``/api/embeddings`` takes ``prompt``
and answers ``embedding``, as the model's server gives it. No input loads the model and
answers no vectors. Requests are read, routed and refused as ``/api/chat``'s are
(:mod:`.generate`): the model through a lease taken with the request's ``keep_alive``, or
through its remote. A model whose llama-server was not started with embeddings answers 400
naming the recipe argument that turns them on (``--embeddings``; ``--pooling`` for a model
that has no pooling of its own).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from app.api.jsonio import json_response, loads
from app.api.ollama.common import ollama_error
from app.api.ollama.generate import (
    MAX_ANSWER,
    MAX_ERROR_BODY,
    OllamaRequest,
    Refused,
    UpstreamUnreadable,
    load_model,
    ollama_shaped,
    read_limited,
    read_request,
    upstream_error,
    upstream_failed,
)
from app.api.ollama.translate import TranslationError, nanoseconds
from app.api.openai_proxy import OpenAIProxy
from app.core.config.durations import NOT_GIVEN
from app.core.manager import ModelManager
from app.core.models.model import Lease
from app.core.remotes import RemoteLease

EMBEDDINGS_PATH = "/v1/embeddings"

Shape = Callable[[list[list[float]], int, float, float], dict[str, Any]]
"""An answer from the vectors, the prompt's token count, the total and load seconds."""


def embed_inputs(value: object) -> list[str]:
    """``/api/embed``'s ``input`` as a list of texts (``""`` or none: no texts)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(text, str) for text in value):
        return value
    raise TranslationError("invalid input type")  # Ollama's words


def dimensions_of(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TranslationError("dimensions must be an integer")
    return value if value > 0 else None


def unit_length(vector: list[float]) -> list[float]:
    """``vector`` scaled to length 1, as Ollama's ``normalize`` does (a zero vector stays zero)."""
    norm = math.sqrt(sum(v * v for v in vector))
    scale = 1.0 / max(norm, 1e-12)
    return [v * scale for v in vector]


def vectors_of(payload: object, count: int) -> tuple[list[list[float]], int]:
    """OpenAI's embeddings answer as ``count`` vectors in input order, and its prompt tokens;
    ValueError when it is not one."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list) or len(data) != count:
        raise ValueError(f"expected {count} embeddings, got {len(data) if isinstance(data, list) else 'none'}")
    ordered = sorted(data, key=lambda item: item.get("index", 0) if isinstance(item, dict) else 0)
    vectors = []
    for item in ordered:
        vector = item.get("embedding") if isinstance(item, dict) else None
        if not isinstance(vector, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   for v in vector):
            raise ValueError("an embedding is not a list of numbers (base64 embeddings are not read)")
        vectors.append([float(v) for v in vector])
    usage = payload.get("usage") if isinstance(payload, dict) else None
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return vectors, tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0 else 0


def embeddings_hint(name: str, status: int, raw: bytes) -> str:
    """What to change in the recipe, after a server's refusal to embed: ``--embeddings``, or a
    pooling for a model without one."""
    text = raw.decode("utf-8", errors="replace").lower()
    if status == 501 and "embedding" in text:
        return (f"; model '{name[:200]}' answers embeddings when its recipe's args include \"--embeddings\" "
                "(llama-server's switch for them)")
    if "pooling" in text:
        return (f"; model '{name[:200]}' has no pooling of its own: add \"--pooling\", \"mean\" (or cls, last) "
                "to its recipe's args")
    return ""


class _EmbedReply:
    """Answers one embeddings request from its upstream answer (an
    :data:`~app.api.openai_proxy.Relay`)."""

    def __init__(self, req: OllamaRequest, count: int, shape: Shape) -> None:
        self.req = req
        self.count = count
        self.shape = shape

    async def __call__(self, request: web.Request, opening: Any, name: str,
                       lease: Lease | RemoteLease) -> web.StreamResponse:
        local = lease if isinstance(lease, Lease) else None
        try:
            async with opening as upstream:
                if upstream.status >= 400:
                    raw = await read_limited(upstream, MAX_ERROR_BODY, cut=True)
                    return upstream_error(upstream.status, raw, embeddings_hint(name, upstream.status, raw))
                raw = await read_limited(upstream, MAX_ANSWER)
        except (aiohttp.ClientError, asyncio.TimeoutError, UpstreamUnreadable) as exc:
            if local is not None and not isinstance(exc, UpstreamUnreadable):
                local.mark_upstream_failed()
            return ollama_error(502, upstream_failed(self.req.requested, exc))
        except ConnectionResetError:
            return web.Response(status=499)  # the client went away
        try:
            vectors, tokens = vectors_of(loads(raw), self.count)
        except (ValueError, UnicodeDecodeError) as exc:
            return ollama_error(502, f"model '{self.req.requested[:200]}': its server's embeddings could not be "
                                     f"read: {exc}")
        load = local.load_wait if local is not None else 0.0
        return json_response(self.shape(vectors, tokens, self.req.elapsed(), load))


class OllamaEmbed:
    """Handlers for ``/api/embed`` and ``/api/embeddings``; one per app, bound to the manager."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager
        self.proxy = OpenAIProxy(manager)

    def routes(self) -> list[web.AbstractRouteDef]:
        return [web.post("/api/embed", self.embed), web.post("/api/embeddings", self.embeddings)]

    async def embed(self, request: web.Request) -> web.StreamResponse:
        try:
            req = await read_request(self.manager, request)
            inputs = embed_inputs(req.data.get("input"))
            dimensions = dimensions_of(req.data.get("dimensions"))
        except Refused as exc:
            return exc.response
        except TranslationError as exc:
            return ollama_error(400, str(exc))
        if not inputs:
            return await self._load(req, {"model": req.requested, "embeddings": []})

        def shape(vectors: list[list[float]], tokens: int, total: float, load: float) -> dict[str, Any]:
            vectors = [unit_length(v) for v in vectors]
            if dimensions is not None:
                vectors = [unit_length(v[:dimensions]) if dimensions < len(v) else v for v in vectors]
            return {"model": req.requested, "embeddings": vectors, "total_duration": nanoseconds(total),
                    "load_duration": nanoseconds(load), "prompt_eval_count": tokens}

        return await self._send(request, req, {"input": inputs}, _EmbedReply(req, len(inputs), shape))

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        try:
            req = await read_request(self.manager, request)
        except Refused as exc:
            return exc.response
        prompt = req.data.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            return ollama_error(400, "prompt must be a string")
        if not prompt:
            return await self._load(req, {"embedding": []})

        def shape(vectors: list[list[float]], tokens: int, total: float, load: float) -> dict[str, Any]:
            return {"embedding": vectors[0]}

        # as the model gives it, as Ollama's older route does (llama-server's own switch; others ignore it)
        fields = {"input": [prompt], "embd_normalize": -1}
        return await self._send(request, req, fields, _EmbedReply(req, 1, shape))

    async def _load(self, req: OllamaRequest, answer: dict[str, Any]) -> web.Response:
        refused = await load_model(self.manager, req)
        return refused if refused is not None else json_response(answer)

    async def _send(self, request: web.Request, req: OllamaRequest, fields: dict[str, Any],
                    reply: _EmbedReply) -> web.StreamResponse:
        body: dict[str, Any] = {"model": req.name, **fields, "encoding_format": "float"}
        if req.keep_alive is not NOT_GIVEN:  # for another Siesta; route() keeps it from llama-server
            body["keep_alive"] = -1 if req.keep_alive is None else req.keep_alive
        return ollama_shaped(await self.proxy.route(request, req.name, EMBEDDINGS_PATH, body, req.keep_alive,
                                                    relay=reply))
