"""Errors in OpenAI's JSON shape: ``{"error": {"message", "type", "code"}}``."""

from __future__ import annotations

from aiohttp import web

from app.api.jsonio import json_response
from app.core.models.model import ModelUnavailable

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    502: "server_error",
    503: "server_error",
    500: "server_error",
}


def error_response(status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                   **extra: object) -> web.Response:
    body: dict[str, object] = {"message": message, "type": _TYPES.get(status, "server_error"), "code": code}
    body.update({k: v for k, v in extra.items() if v})
    return json_response({"error": body}, status=status, headers=headers)


class ApiError(Exception):
    """An error answer raised from anywhere under a management handler; the error
    middleware (:mod:`app.api.error_mapping`) turns it into :func:`error_response`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message)


def unavailable_response(exc: ModelUnavailable) -> web.Response:
    return error_response(503, exc.code, str(exc), headers={"Retry-After": str(exc.retry_after)},
                          log_tail=exc.log_tail)
