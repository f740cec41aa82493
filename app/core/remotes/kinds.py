"""Which :class:`~.engine_api.RemoteEngine` speaks to each kind of remote."""

from __future__ import annotations

import aiohttp

from .config import RemoteConfig
from .engine_api import RemoteEngine
from .lemonade_engine import LemonadeEngine
from .ollama_engine import OllamaEngine
from .openai_engine import OpenAIEngine
from .router_engine import RouterEngine
from .siesta_engine import SiestaEngine

ENGINES: dict[str, type[RemoteEngine]] = {
    engine.kind: engine for engine in (SiestaEngine, OllamaEngine, RouterEngine, LemonadeEngine, OpenAIEngine)
}


def engine_for(config: RemoteConfig, http: aiohttp.ClientSession) -> RemoteEngine:
    return ENGINES[config.kind](config, http)
