"""One place that turns the management API's errors into HTTP answers.

Handlers under ``/api/v1/`` raise; :func:`management_errors` answers. Each exception has
one answer wherever it comes from:

* :class:`ApiError` (a body, field or duration the handler refused): its own status and
  code (``invalid_json``, ``body_too_large``, ``missing_model``, ...);
* :class:`UnknownModel`: 404 ``model_not_found``;
* :class:`ModelUnavailable`: 503 with its own code and ``Retry-After``;
* :class:`SettingFixed`: 409 ``setting_fixed``;
* :class:`PersistError`: 409 ``recipe_invalid`` for a file that does not parse, otherwise
  500 ``persist_failed``;
* the remotes' errors (:func:`remote_answer`): 409 ``ambiguous_model``, 502
  ``remote_unreachable`` naming the remote and its address, the remote's own 4xx, or 502
  ``remote_error``; 400 ``not_supported`` for an action the remote's kind does not offer.

The OpenAI-compatible routes (``/v1/...``) keep their own answers: the middleware passes
them through untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from app.api.errors import ApiError, error_response, unavailable_response
from app.core.errors import PersistError, SettingFixed, UnknownModel
from app.core.models.model import ModelUnavailable
from app.core.remotes import AmbiguousModel, ModelNameTooLong, RemoteRefused, RemoteUnreachable, RemoteUnsupported

MANAGEMENT_PREFIX = "/api/v1/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def answer_for(exc: Exception) -> web.Response | None:
    """The HTTP answer for an error a management handler raised; None when it has none."""
    if isinstance(exc, ApiError):
        return exc.response()
    if isinstance(exc, ModelNameTooLong):  # (an UnknownModel too)
        return error_response(400, "name_too_long", str(exc))
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
    return remote_answer(exc)


def remote_answer(exc: Exception) -> web.Response | None:
    """The answer for a remote's error, the same on ``/v1`` and ``/api/v1``."""
    if isinstance(exc, AmbiguousModel):
        return error_response(409, "ambiguous_model", str(exc), candidates=exc.candidates)
    if isinstance(exc, RemoteUnreachable):
        return error_response(502, "remote_unreachable", str(exc), remote=exc.name)
    if isinstance(exc, RemoteRefused):
        if exc.status in (400, 404, 409, 422):
            return error_response(exc.status, "remote_refused", str(exc), remote=exc.name)
        return error_response(502, "remote_error", str(exc), remote=exc.name)
    if isinstance(exc, RemoteUnsupported):
        return error_response(400, "not_supported", str(exc))
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
