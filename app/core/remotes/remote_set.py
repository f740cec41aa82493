"""Every configured remote, kept in step with ``[remotes]`` in settings.toml, and how a
model's name finds one.

Names: ``REMOTE/MODEL`` is split on the first ``/`` (``ollama/hf.co/org/m:Q4`` is remote
``ollama``, model ``hf.co/org/m:Q4``). A bare name reaches a remote model only when no
local recipe has it and exactly one remote lists it; two remotes that list it make it
ambiguous (:class:`AmbiguousModel`, answered 409 with the qualified names). A model
name longer than :data:`~.limits.MAX_NAME_CHARS` is refused (:class:`ModelNameTooLong`).

Remotes start in the background: one that does not answer never slows start-up or a
local request. Edits to ``[remotes]`` apply without a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from app.core.config.atomic_write import in_order
from app.core.config.clock import Clock
from app.core.config.durations import USE_GLOBAL, ModelTimeout, Timeout, format_duration
from app.core.config.toml_edit import set_toml_nested
from app.core.errors import UnknownModel
from app.core.remotes.config import RemoteConfig
from app.core.remotes.engine_api import CONNECT_TIMEOUT, DEFAULT_LOAD_TIMEOUT
from app.core.remotes.kinds import engine_for
from app.core.remotes.limits import MAX_NAME_CHARS
from app.core.remotes.remote import EmitRemote, Remote

log = logging.getLogger(__name__)


class AmbiguousModel(Exception):
    """A bare model name that more than one remote has (and no local recipe)."""

    def __init__(self, name: str, candidates: list[str]) -> None:
        super().__init__(f"model {name!r} is on more than one remote: ask for one of {', '.join(candidates)}")
        self.name, self.candidates = name, candidates


class ModelNameTooLong(UnknownModel):
    """A remote model's name longer than :data:`~.limits.MAX_NAME_CHARS`: refused before
    anything is kept of it (a request's mistake: the API answers 400)."""

    def __init__(self, remote: str, length: int) -> None:
        super().__init__(f"{remote}/...")
        self.remote, self.length = remote, length

    def __str__(self) -> str:
        return (f"a model name of remote {self.remote!r} has {self.length} characters: "
                f"at most {MAX_NAME_CHARS} are accepted")


class RemoteModelNotListed(UnknownModel):
    """An action for a model its remote does not list (a timeout: nothing is written)."""

    def __init__(self, remote: str, model: str) -> None:
        super().__init__(f"{remote}/{model}")
        self.remote, self.model = remote, model

    def __str__(self) -> str:
        return f"remote {self.remote!r} does not list model {self.model!r}: nothing was changed"


class RemoteSet:
    """The remotes of one Siesta instance, by name."""

    def __init__(self, settings_file: Path, clock: Clock, global_timeout: Callable[[], Timeout],
                 emit: EmitRemote, load_timeout: Callable[[], float] = lambda: DEFAULT_LOAD_TIMEOUT) -> None:
        self.settings_file = settings_file
        self.clock = clock
        self._global_timeout = global_timeout
        self._load_timeout = load_timeout  # the global load_timeout: each remote's default
        self._emit = emit
        self.remotes: dict[str, Remote] = {}
        self.errors: list[str] = []
        self._http: aiohttp.ClientSession | None = None
        self._pending: dict[str, RemoteConfig] = {}  # applied before start(): started by it
        self._closing = False

    # ---- configuration -----------------------------------------------------------------------

    def apply(self, configs: Mapping[str, RemoteConfig], errors: list[str]) -> None:
        """Brings the remotes in step with ``configs``: new ones start watching, removed ones
        stop (their models leave the list), changed ones reconnect; a change of timeouts
        only moves the countdowns."""
        for message in errors:
            if message not in self.errors:
                log.warning("%s", message)
        self.errors = list(errors)
        if self._closing or self._http is None:
            self._pending = dict(configs)
            return
        for name in [n for n in self.remotes if n not in configs]:
            self._drop(name)
        for name, config in configs.items():
            current = self.remotes.get(name)
            if current is not None and current.config.same_connection(config):
                if current.config != config:
                    current.timeouts_changed(config)
                continue
            if current is not None:
                self._drop(name)
            remote = Remote(config, engine_for(config, self._http, self._load_timeout), self.clock,
                            self._global_timeout, self._emit)
            self.remotes[name] = remote
            remote.start()
            log.info("remote %s: %s at %s", name, config.kind, config.url)

    def _drop(self, name: str) -> None:
        remote = self.remotes.pop(name)
        for model in sorted(remote.views):
            self._emit({**remote.snapshot(model), "state": "unloaded"}, "removed")
        task = asyncio.create_task(remote.close(), name=f"close remote {name}")
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def global_timeout_changed(self) -> None:
        for remote in self.remotes.values():
            remote.global_timeout_changed()

    # ---- start and stop ----------------------------------------------------------------------

    def start(self) -> None:
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
        )
        pending, self._pending = self._pending, {}
        self.apply(pending, self.errors)

    async def close(self) -> None:
        self._closing = True
        remotes, self.remotes = list(self.remotes.values()), {}
        await asyncio.gather(*(r.close() for r in remotes), return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    # ---- names -------------------------------------------------------------------------------

    def split(self, name: str) -> tuple[Remote, str] | None:
        """``REMOTE/MODEL`` for a configured remote: that remote and the model as it calls it."""
        prefix, sep, model = name.partition("/")
        remote = self.remotes.get(prefix) if sep else None
        return (remote, model) if remote is not None and model else None

    def find(self, name: str) -> tuple[Remote, str] | None:
        """The remote model a name means (the caller has ruled out a local recipe);
        ModelNameTooLong for a ``REMOTE/MODEL`` whose model part is too long."""
        qualified = self.split(name)
        if qualified is not None:
            remote, model = qualified
            if len(model) > MAX_NAME_CHARS:
                raise ModelNameTooLong(remote.name, len(model))
            return qualified
        owners = [remote for remote in self.remotes.values() if name in remote.views]
        if len(owners) > 1:
            raise AmbiguousModel(name, sorted(r.qualified(name) for r in owners))
        return (owners[0], name) if owners else None

    # ---- what the API and the GUI see ---------------------------------------------------------

    def snapshots(self) -> list[dict[str, Any]]:
        return [s for name in sorted(self.remotes) for s in self.remotes[name].snapshots()]

    def describe(self) -> list[dict[str, Any]]:
        """Each remote's settings (never its key) and whether it answers."""
        return [self.remotes[name].describe() for name in sorted(self.remotes)]

    # ---- timeouts ----------------------------------------------------------------------------

    async def set_timeout(self, remote: Remote, model: str, value: ModelTimeout) -> None:
        """Another Siesta writes it into its own recipe; any other engine's is written to
        ``[remotes.NAME.timeouts]`` in settings.toml (comments kept) and applies now. Only for
        a model the remote lists: RemoteModelNotListed otherwise, and nothing is written."""
        view = remote.views.get(model)
        if view is None or not view.listed:
            raise RemoteModelNotListed(remote.name, model)
        if remote.engine.keeps_timeouts:
            await remote.set_timeout(model, value)
            return
        if not remote.engine.can_load:
            await remote.set_timeout(model, value)  # raises RemoteUnsupported with the reason
            return
        stored = None if value is USE_GLOBAL else format_duration(value)
        await in_order(set_toml_nested, self.settings_file, ["remotes", remote.name, "timeouts"], model, stored,
                       create=True)
        timeouts = dict(remote.config.timeouts)
        if value is USE_GLOBAL:
            timeouts.pop(model, None)
        else:
            timeouts[model] = value
        remote.timeouts_changed(dataclasses.replace(remote.config, timeouts=timeouts))
