"""Builds the aiohttp application and runs it on the loop Siesta was started with."""

from __future__ import annotations

import asyncio
import logging
import socket

from aiohttp import web

from app.api import openapi
from app.api.bodies import MAX_V1_BODY
from app.api.error_mapping import management_errors
from app.api.guard import add_cors_headers, make_guard
from app.api.listen import bind_listeners, port_taken
from app.api.management import ManagementApi
from app.api.metrics.routes import MetricsApi
from app.api.names import path_names
from app.api.ollama import info as ollama_info
from app.api.ollama.embed import OllamaEmbed
from app.api.ollama.generate import OllamaGenerate
from app.api.ollama.manage import OllamaManage
from app.api.ollama.pull import OllamaPull
from app.api.openai_proxy import OpenAIProxy
from app.core.config.endpoint import client_url
from app.core.manager import ModelManager

log = logging.getLogger(__name__)

MAX_REQUEST_BODY = MAX_V1_BODY  # the largest body aiohttp itself reads (the /v1 limit)


class PortInUse(Exception):
    """The port Siesta is configured to listen on is taken."""


def build_app(manager: ModelManager, ports: set[int] | None = None) -> web.Application:
    """The front door's routes and middlewares; ``ports``, filled once the sockets are bound,
    are those Siesta listens on (an Origin on one of them is Siesta's own)."""
    # Request timing first (for /metrics: the guard's refusals count too), then the guard (it
    # refuses before anything runs), then names in paths, then the management API's error answers.
    metrics = MetricsApi(manager)
    middlewares = [metrics.middleware(), make_guard(manager, set() if ports is None else ports), path_names,
                   management_errors]
    app = web.Application(middlewares=middlewares, client_max_size=MAX_REQUEST_BODY)
    app.on_response_prepare.append(add_cors_headers)
    app.on_response_prepare.append(metrics.on_prepare)  # a request is counted at its first byte
    app.add_routes(OpenAIProxy(manager).routes())
    app.add_routes(ManagementApi(manager).routes())
    app.add_routes(ollama_info.routes(manager))  # Ollama's API: /, /api/version, /api/tags, /api/ps, /api/show
    app.add_routes([*OllamaGenerate(manager).routes(), *OllamaEmbed(manager).routes()])  # /api/chat, generate, embed
    app.add_routes([*OllamaPull(manager).routes(), *OllamaManage(manager).routes()])  # pull, delete; create... 501
    app.add_routes(metrics.routes())  # GET /metrics, GET /api/v1/history
    app.add_routes(openapi.routes())  # GET /api/v1/openapi.json: the document of these routes
    return app


class ApiServer:
    """The front door listening on ``host:port``, and on ``host:ollama_port`` too when that
    setting is set (the same routes; a taken port there is logged, not fatal: Ollama itself
    may hold it); :meth:`stop` closes it."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager
        self._runner: web.AppRunner | None = None
        self.host: str | None = None
        self.port: int | None = None
        self.ports: set[int] = set()  # every port bound (the guard reads it)
        self.ollama_port: int | None = None  # the second listener's port, once bound
        self.ollama_problem: str | None = None  # why it is not listening, when ollama_port is set

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        settings = self.manager.settings
        host = host or settings.host
        port = settings.port if port is None else port
        # handler_cancellation: a client that disconnects cancels its handler, which closes
        # the upstream request (so the backend stops generating) and ends the request's lease.
        # HeaderTimeoutRunner closes connections that do not send complete headers in time,
        # and cuts off bodies that arrive slower than a minimum rate.
        from app.api import slow_clients

        slow_clients.raise_open_files_limit()
        self._runner = slow_clients.HeaderTimeoutRunner(build_app(self.manager, self.ports), handler_cancellation=True,
                                                        access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        try:
            sockets = await self._listen(host, port)
        except BaseException as exc:
            await self._runner.cleanup()
            if isinstance(exc, OSError) and port_taken(exc):
                source = self.manager.loaded_settings.sources.get("port", "default")
                raise PortInUse(
                    f"port {port} on {host} is already in use (setting 'port', from {source}); "
                    f"is another Siesta running? Choose another with --port or SIESTA_PORT"
                ) from exc
            raise
        self.host = host
        self.port = sockets[0].getsockname()[1] if sockets else port
        self.ports.update(sock.getsockname()[1] for sock in sockets)
        if settings.ollama_port and settings.ollama_port != self.port:
            await self._listen_for_ollama(host, settings.ollama_port)
        if host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
            log.warning("LISTENING ON %s WITHOUT AN API KEY: anyone who can reach this address can use "
                        "your models. Set SIESTA_API_KEY.", host)

    async def _listen_for_ollama(self, host: str, port: int) -> None:
        """Listens on Ollama's port as well; when it cannot (taken, most likely by Ollama
        itself, or refused), says so in one line and in ``loaded_settings.problems`` (the
        Settings dialog shows it), and Siesta goes on with its main port."""
        try:
            sockets = await self._listen(host, port)
        except OSError as exc:
            source = self.manager.loaded_settings.sources.get("ollama_port", "default")
            why = "is already in use (is Ollama running?)" if port_taken(exc) else f"cannot be listened on ({exc})"
            self.ollama_problem = (f"Ollama's port {port} on {host} {why}: Siesta answers on port {self.port} only "
                                   f"(setting 'ollama_port', from {source})")
            self.manager.loaded_settings.problems["ollama_port"] = self.ollama_problem
            log.warning("%s", self.ollama_problem)
            return
        self.ollama_port = sockets[0].getsockname()[1] if sockets else port
        self.ports.update(sock.getsockname()[1] for sock in sockets)
        self.manager.loaded_settings.problems.pop("ollama_port", None)
        log.info("also answering on Ollama's port: %s", client_url(host, self.ollama_port))

    async def _listen(self, host: str | None, port: int) -> list[socket.socket]:
        """Binds ``host:port`` (every address it resolves to) and serves the app there. The
        sockets are made here, not by aiohttp's TCPSite, for their options: one listener per
        port on every OS (see app/api/listen.py). On failure, the sockets no site has taken
        over yet are closed and the error is raised."""
        assert self._runner is not None
        sockets: list[socket.socket] = []
        try:
            addresses = await asyncio.get_running_loop().getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            sockets = bind_listeners(addresses)
            for sock in sockets:
                await web.SockSite(self._runner, sock, backlog=512).start()
        except BaseException:
            for sock in sockets:
                sock.close()  # (closing one a site took over as well is harmless)
            raise
        return sockets

    @property
    def url(self) -> str:
        """The base URL clients use: the address actually bound (a wildcard shows as loopback)."""
        return client_url(self.host or self.manager.settings.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
