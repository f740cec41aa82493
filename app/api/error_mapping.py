"""One place that turns the management API's errors into HTTP answers.

Handlers under ``/api/v1/`` raise; :func:`management_errors` answers. Each exception has
one answer wherever it comes from:

* :class:`ApiError` (a body, field or duration the handler refused): its own status and
  code (``invalid_json``, ``body_too_large``, ``missing_model``, ...);
* :class:`UnknownModel`: 404 ``model_not_found``;
* :class:`ModelUnavailable`: 503 with its own code and ``Retry-After``;
* :class:`SettingFixed`: 409 ``setting_fixed``;
* :class:`PersistError`: 409 ``recipe_invalid`` for a file that does not parse, otherwise
  500 ``persist_failed``.

The OpenAI-compatible routes (``/v1/...``) keep their own answers: the middleware passes
them through untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from app.core.manager import PersistError, SettingFixed, UnknownModel
from app.core.model import ModelUnavailable

from .errors import ApiError, error_response, unavailable_response

MANAGEMENT_PREFIX = "/api/v1/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def answer_for(exc: Exception) -> web.Response | None:
    """The HTTP answer for an error a management handler raised; None when it has none."""
    if isinstance(exc, ApiError):
        return exc.response()
    if isinstance(exc, UnknownModel):
        return error_response(404, "model_not_found", str(exc))
    if isinstance(exc, ModelUnavailable):
        return unavailable_response(exc)
    if isinstance(exc, SettingFixed):
        return error_response(409, "setting_fixed", str(exc))
    if isinstance(exc, PersistError):
        if exc.kind == "invalid":
            return error_response(409, "recipe_invalid", str(exc))
        return error_response(500, "persist_failed", str(exc))
    return None


@web.middleware
async def management_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(MANAGEMENT_PREFIX):
        return await handler(request)
    try:
        return await handler(request)
    except Exception as exc:
        response = answer_for(exc)
        if response is None:
            raise
        return response
