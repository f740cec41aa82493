"""The HTTP client of the running instance's management API."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from app.core.config.endpoint import Endpoint

if TYPE_CHECKING:
    import http.client

__all__ = ["ApiClient", "ApiError", "NotRunning"]


class NotRunning(Exception):
    """Nothing listens at the instance's address (the CLI exits 3)."""


class ApiError(Exception):
    """The instance answered with an error, or the call failed (the CLI exits 1)."""


class ApiClient:
    """A small client for the running instance's management API.

    It uses the standard library's http.client: `siesta ps` must answer in well under
    0.3 s, and creating an httpx client alone cost 0.15 s here (httpcore imports its
    async backends on first use); these are single local calls with nothing to pool.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.host, self.port = endpoint.connect_host, endpoint.port
        self.base_url = endpoint.base_url
        self.https = endpoint.scheme == "https"
        self.prefix = endpoint.path
        self.given = endpoint.given
        self.headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}

    def open(self, method: str, path: str, body: dict[str, Any] | None = None,
             timeout: float | None = 30.0) -> http.client.HTTPResponse:
        import http.client

        connection = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        conn = connection(self.host, self.port, timeout=timeout)
        headers = dict(self.headers)
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, self.prefix + path, body=payload, headers=headers)
            return conn.getresponse()
        except ConnectionRefusedError:
            if self.given:
                raise NotRunning(f"cannot reach Siesta at {self.base_url}: connection refused") from None
            raise NotRunning(f"no Siesta is running at {self.base_url} (start one with `siesta serve`)") from None
        except OSError as exc:
            raise ApiError(f"{method} {path} failed: {exc}") from exc

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float | None = 30.0) -> Any:
        resp = self.open(method, path, body, timeout)
        text = resp.read().decode("utf-8", "replace")
        try:
            data = json.loads(text)
        except ValueError:
            raise ApiError(f"{method} {path}: HTTP {resp.status}: {text[:200]}") from None
        if resp.status >= 400:
            err = data.get("error", {}) if isinstance(data, dict) else {}
            message = err.get("message", text)
            if err.get("log_tail"):
                message += "\n--- log tail ---\n" + err["log_tail"]
            raise ApiError(message)
        return data

    def running(self) -> bool:
        try:
            self.call("GET", "/api/v1/health", timeout=2.0)
            return True
        except NotRunning:
            return False
