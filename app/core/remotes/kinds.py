"""Which :class:`~.engine_api.RemoteEngine` speaks to each kind of remote."""

from __future__ import annotations

import aiohttp

from app.core.remotes.config import RemoteConfig
from app.core.remotes.engine_api import RemoteEngine
from app.core.remotes.lemonade_engine import LemonadeEngine
from app.core.remotes.ollama_engine import OllamaEngine
from app.core.remotes.openai_engine import OpenAIEngine
from app.core.remotes.router_engine import RouterEngine
from app.core.remotes.siesta_engine import SiestaEngine

ENGINES: dict[str, type[RemoteEngine]] = {
    engine.kind: engine for engine in (SiestaEngine, OllamaEngine, RouterEngine, LemonadeEngine, OpenAIEngine)
}


def engine_for(config: RemoteConfig, http: aiohttp.ClientSession) -> RemoteEngine:
    return ENGINES[config.kind](config, http)
