"""Remotes: models served by another Siesta, Ollama, llama.cpp's router, Lemonade or any
OpenAI-compatible server, routed through this Siesta's front door and shown beside its
own models. Each machine keeps its own engine that owns its processes; Siesta routes,
shows and asks. See :mod:`.remote_set` for names, :mod:`.remote` for whose clock unloads
what."""

from app.core.remotes.config import KINDS, RemoteConfig, api_key_env, parse_remotes
from app.core.remotes.engine_api import HOP_HEADER, RemoteRefused, RemoteUnreachable, RemoteUnsupported
from app.core.remotes.remote import Remote, RemoteLease
from app.core.remotes.remote_set import AmbiguousModel, ModelNameTooLong, RemoteModelNotListed, RemoteSet

__all__ = ["KINDS", "RemoteConfig", "api_key_env", "parse_remotes", "HOP_HEADER", "RemoteRefused",
           "RemoteUnreachable", "RemoteUnsupported", "Remote", "RemoteLease", "AmbiguousModel", "ModelNameTooLong",
           "RemoteModelNotListed", "RemoteSet"]
