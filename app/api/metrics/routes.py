"""``GET /metrics``, ``GET /api/v1/history``, and the counting of requests.

Every request is timed by one middleware (outermost: the guard's refusals count too) and
counted when its answer is prepared (the app's ``on_response_prepare`` signal: its first
byte), by status class and by the model its handler stored in ``request[MODEL_KEY]``
(:func:`model_label`: a recipe's name, ``remote:<REMOTE>`` for a remote's model, nothing for
a request that names no model or a name that is neither; a made-up name never becomes a
label). A request whose client left before any answer was prepared is not counted.

Both routes sit behind the guard like every other (Host, Origin, API key).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from app.api.errors import ApiError
from app.api.jsonio import json_response
from app.api.metrics.collector import registry_for
from app.core.errors import UnknownModel
from app.core.manager import ModelManager
from app.core.remotes import AmbiguousModel, ModelNameTooLong

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
HISTORY_PATH = "/api/v1/history"
DAY_PATTERN = r"^(today|yesterday|[0-9]{4}-[0-9]{2}-[0-9]{2})$"


def _key(name: str, kind: type) -> Any:
    """A request key (aiohttp before 3.12 has no RequestKey: a plain string there)."""
    return web.RequestKey(name, kind) if hasattr(web, "RequestKey") else name


MODEL_KEY: Any = _key("siesta_model", str)
"""Where a handler stores the model label of its request (:func:`model_label`)."""
_STARTED: Any = _key("siesta_started", float)
_COUNTED: Any = _key("siesta_counted", bool)


def model_label(manager: ModelManager, name: Any, *, local_only: bool = False) -> str | None:
    """The label a request for ``name`` is counted under: the recipe's name for a local
    model, ``remote:<REMOTE>`` for a remote's, None for anything else (a remote may list
    10,000 models, and a client may make up any number of names)."""
    if not isinstance(name, str):
        return None
    if manager.is_local(name):
        return name
    if local_only:
        return None
    try:
        remote, _ = manager.find_remote(name)
    except (UnknownModel, AmbiguousModel, ModelNameTooLong):
        return None
    return f"remote:{remote.name}"


class MetricsApi:
    """The routes, the middleware and the signal handler; one per app."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager
        self.registry = registry_for(manager)

    def routes(self) -> list[web.AbstractRouteDef]:
        return [web.get(METRICS_PATH, self.metrics), web.get(HISTORY_PATH, self.history)]

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        @web.middleware
        async def timing(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
            request[_STARTED] = time.monotonic()
            return await handler(request)

        return timing

    async def on_prepare(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        """``on_response_prepare``: the answer's first byte is going out; counts the request once."""
        started = request.get(_STARTED)
        if started is None or request.get(_COUNTED):
            return
        request[_COUNTED] = True
        self.manager.metrics.requests.observe(request.get(MODEL_KEY), response.status, time.monotonic() - started)

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus's text format (OpenMetrics when the scraper asks for it)."""
        try:
            await self.manager.memory.device_states()  # each device's total and free, read now
        except Exception:  # noqa: BLE001 - the last figures are shown then
            log.exception("reading the devices' memory for /metrics failed")
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self.registry), headers={"Content-Type": content_type})

    async def history(self, request: web.Request) -> web.Response:
        """One local day of the history file, per model (``?day=today|yesterday|YYYY-MM-DD``)."""
        day = _day(request.query.get("day", "today"), self.manager.clock.now())
        names = [m.name for m in self.manager.listed()]
        return json_response(self.manager.metrics.day(day, names))


def _day(text: str, now: float) -> dt.date:
    today = dt.datetime.fromtimestamp(now).date()
    if re.fullmatch(DAY_PATTERN, text):
        if text == "today":
            return today
        if text == "yesterday":
            return today - dt.timedelta(days=1)
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            pass
    raise ApiError(400, "invalid_day", f"GET {HISTORY_PATH}: day must be today, yesterday or YYYY-MM-DD, "
                                       f"not {text[:40]!r}")
