"""What every Ollama route shares: Ollama's error shape and its model names.

Ollama answers an error as ``{"error": "message"}`` with the status, and its clients
(the official ``ollama`` libraries) raise ``ResponseError(error, status_code)`` from it.
Ollama names a model ``NAME:TAG``; a name without a tag means ``NAME:latest``, and
Ollama's clients often send the ``:latest`` themselves. Siesta's names carry no tag, so a
requested name is resolved to the one Siesta knows before any lookup
(:meth:`~app.core.manager.ModelManager.canonical_name`, which ``/v1`` uses too).
"""

from __future__ import annotations

from aiohttp import web

from app.api.jsonio import json_response
from app.api.names import check_model_name
from app.core.manager import LATEST_TAG, ModelManager


def ollama_error(status: int, message: str) -> web.Response:
    """An error as Ollama answers it: ``{"error": message}`` with ``status``."""
    return json_response({"error": message}, status=status)


def model_not_found(name: str) -> web.Response:
    """404 ``model 'NAME' not found``, Ollama's words for a model it does not have."""
    return ollama_error(404, f"model '{name[:200]}' not found")


def ollama_name(name: str) -> str:
    """``name`` as Ollama would list it: ``NAME:latest`` when its last path segment has no
    tag (``tiny`` -> ``tiny:latest``, ``box/qwen`` -> ``box/qwen:latest``), else unchanged
    (``box/llama3:8b``)."""
    return name if ":" in name.rsplit("/", 1)[-1] else name + LATEST_TAG


def resolve(manager: ModelManager, name: str, *, hop: bool, what: str = "the request", field: str = "model") -> str:
    """The name Siesta knows the requested model by: ``name`` itself, else ``name`` without a
    trailing ``:latest``; unchanged when neither names a model (the caller's lookup answers
    404). ``hop``: the request comes from another Siesta, which sees local models only.
    ApiError 400 ``name_too_long`` for a name over the caps of :mod:`app.api.names`, naming
    the request ``what`` (``POST /api/show``) and its ``field``."""
    check_model_name(name, what, field)
    return manager.canonical_name(name, local_only=hop)
