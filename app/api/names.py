"""What a request names: the model it asks for, and the upstream path it is forwarded to.

Model names are capped wherever one comes in (a ``/v1`` body, a path, a management
body): a local model's name by the recipe rules (:data:`LOCAL_NAME_MAX`: a recipe's file
name), a remote's (``REMOTE/MODEL``, any name with a ``/``) by length only
(:data:`REMOTE_NAME_MAX`, :mod:`app.core.remotes.limits`). A longer name can name nothing, and would be
copied into every event, log line and error that mentions it.

A ``/v1`` request goes upstream (a model's server, a remote) only by a path whose
decoded segments are plain names: letters, digits, ``-``, ``_``, ``~`` and ``.``, never
only dots, never empty; the path is rebuilt from those segments. An encoded ``..``
(``/v1/%2e%2e/admin``), ``/`` or ``\\`` would otherwise be decoded on the way out and
reach the upstream server's other routes (llama-server's ``/slots``, Ollama's
``/api/pull``) with the remote's API key.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from aiohttp import web

from app.api.errors import ApiError, error_response
from app.core.config.recipes import NAME_MAX as LOCAL_NAME_MAX
from app.core.remotes.limits import MAX_NAME_CHARS as REMOTE_NAME_MAX

_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")


def check_model_name(name: str, what: str, field: str = "model") -> str:
    """``name`` when it is short enough to name a model; ApiError 400 ``name_too_long``
    otherwise (naming the request ``what`` and the ``field``, not repeating the name)."""
    limit = REMOTE_NAME_MAX if "/" in name else LOCAL_NAME_MAX
    if len(name) > limit:
        raise ApiError(400, "name_too_long",
                       f"{what}: {field} is {len(name)} characters long; a model's name has at most "
                       f"{LOCAL_NAME_MAX} characters (a remote's, REMOTE/MODEL, at most {REMOTE_NAME_MAX})")
    return name


def forward_path(request: web.Request) -> str:
    """The path (and query) a ``/v1/...`` request goes upstream by, rebuilt from its decoded
    segments; ApiError 400 ``invalid_path`` when a segment is not a plain name."""
    url = request.rel_url  # never the absolute form a request line may carry
    segments = url.raw_path.split("/")[1:]
    decoded = [unquote(segment, errors="replace") if "%" in segment else segment for segment in segments]
    for segment in decoded:
        if not _PLAIN_SEGMENT.fullmatch(segment) or not segment.strip("."):
            raise ApiError(400, "invalid_path",
                           f"{request.method} {url.raw_path[:200]}: each part of the path must be a plain name "
                           "(letters, digits, '-', '_', '.', '~'; not '.', '..' or empty; no encoded '/' or '\\')")
    path = "/" + "/".join(decoded)
    query = url.raw_query_string
    return f"{path}?{query}" if query else path


@web.middleware
async def path_names(request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Refuses a route's ``{name}`` (``/v1/models/{name}``, ``/api/v1/models/{name}``) that
    is too long to name a model, before any handler sees it."""
    name = request.match_info.get("name")
    if name is not None:
        try:
            check_model_name(name, f"{request.method} {request.path[:200]}", "the name in the path")
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message)
    return await handler(request)
