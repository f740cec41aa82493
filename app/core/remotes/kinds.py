"""Which :class:`~.engine_api.RemoteEngine` speaks to each kind of remote."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from app.core.remotes.config import RemoteConfig
from app.core.remotes.engine_api import DEFAULT_LOAD_TIMEOUT, RemoteEngine
from app.core.remotes.lemonade_engine import LemonadeEngine
from app.core.remotes.ollama_engine import OllamaEngine
from app.core.remotes.openai_engine import OpenAIEngine
from app.core.remotes.router_engine import RouterEngine
from app.core.remotes.siesta_engine import SiestaEngine

ENGINES: dict[str, type[RemoteEngine]] = {
    engine.kind: engine for engine in (SiestaEngine, OllamaEngine, RouterEngine, LemonadeEngine, OpenAIEngine)
}


def engine_for(config: RemoteConfig, http: aiohttp.ClientSession,
               global_load_timeout: Callable[[], float] = lambda: DEFAULT_LOAD_TIMEOUT) -> RemoteEngine:
    """The engine of ``config``'s kind; ``global_load_timeout`` gives the global setting in
    force, which applies where the remote sets no ``load_timeout`` of its own."""
    return ENGINES[config.kind](config, http, global_load_timeout)
