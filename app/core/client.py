"""A Siesta on another machine, offered to the GUI as if it were a model manager:
:class:`ManagerClient`.

``siesta --connect URL`` runs the tray app with no manager of its own. The bridge
(:mod:`app.ui.bridge`) is built on a ManagerClient instead, which offers the part of
:class:`~app.core.manager.ModelManager` the GUI uses (snapshots, events, load, unload,
timeouts, settings, memory figures) through that Siesta's management API (``/api/v1``).
So the GUI has one code path for both, and hides only what means something on this
machine alone (see :attr:`ManagerClient.paths`).

What it keeps in step, and how:

* **The models.** One task holds ``GET /api/v1/events`` open. Each time it connects, it
  reads the list (``GET /api/v1/models``) and the settings after the stream is open, so
  no change falls between the two; every event then updates the list before subscribers
  hear of it, as the manager's own events do. Memory figures change without events: they
  are re-read (at most every :data:`REFRESH_SECONDS`) when the GUI asks for fresh figures,
  and so are the served Siesta's own remotes and whether they answer (:attr:`ManagerClient.remotes`).
* **Countdowns.** The other machine's clock may differ from this one's. A model's
  ``unload_at`` is made local from the ``unloads_in`` the server sends (now + seconds
  left), and ``idle_since`` / ``loading_since`` are moved by the offset between the two
  clocks (measured from each event's ``time``), so every countdown is right here.
* **The connection.** A server that cannot be reached (or refuses the key) is retried with
  back-off (:data:`RETRY_SECONDS`); meanwhile :attr:`ManagerClient.connection` says why,
  its models are forgotten (as ``removed`` events), and actions fail with
  :class:`Unreachable`. Nothing here raises into the GUI's loop.
* **Errors** the server answers come back as the core's own exceptions (UnknownModel,
  ModelUnavailable, SettingFixed, PersistError, or ValueError with the server's message),
  so the GUI handles them as it does a local manager's.

The API key goes in ``Authorization`` on every call and is never logged or shown.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from app.core.config.clock import Clock
from app.core.config.durations import ModelTimeout, format_model_timeout
from app.core.config.endpoint import base_url
from app.core.config.settings import FIELD_NAMES, RUNTIME_SETTABLE, Settings, validate_setting
from app.core.errors import PersistError, SettingFixed, UnknownModel
from app.core.models.model import ModelUnavailable

log = logging.getLogger(__name__)

EventCallback = Callable[[dict[str, Any]], None]

RETRY_SECONDS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
"""Back-off between attempts to reach a server that did not answer."""

CONNECT_TIMEOUT = 5.0
"""Seconds the server gets to accept a connection before it counts as unreachable."""

CALL_TIMEOUT = 30.0
"""Seconds a call may take as a whole (a load has no limit: it may take minutes)."""

READ_TIMEOUT = 50.0
"""Silence on the event stream after which it counts as broken (the server sends a
keep-alive comment every 15 s)."""

REFRESH_SECONDS = 2.0
"""At most one re-read of the memory figures and settings per this many seconds."""

_MEMORY_KEYS = ("memory", "vram", "memory_by_device", "memory_estimate", "memory_estimate_source", "given_back")


class ClientError(Exception):
    """The served Siesta could not be asked, or answered with an error of no other kind."""


class Unreachable(ClientError, ConnectionError):
    """Nothing answers at the URL (refused, timed out, name not found), or the connection broke."""


class Refused(ClientError):
    """The server answered with an error status the core has no exception for (a wrong API
    key, a Host it does not accept, a server error); ``status`` and ``code`` are its own."""

    def __init__(self, message: str, status: int, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class Connection:
    """Where the client stands with the server: ``connecting``, ``connected``,
    ``unreachable`` or ``refused`` (it answered with an error, such as a wrong key)."""

    state: str = "connecting"
    reason: str = ""
    retry_at: float | None = None  # on the client's clock

    @property
    def ok(self) -> bool:
        return self.state == "connected"


@dataclass(frozen=True)
class Target:
    """The Siesta a client talks to: its base URL and a short name for its machine (the
    URL's host name, or what a reverse lookup of its address gives)."""

    url: str
    machine: str

    @property
    def label(self) -> str:
        """``gpubox (http://192.168.1.20:8777)``, or just the URL when the name is its host."""
        host = urlsplit(self.url).hostname or ""
        return self.url if self.machine == host else f"{self.machine} ({self.url})"


class RemoteSettings:
    """The served Siesta's settings, as ``GET /api/v1/settings`` describes them, in the
    shape of :class:`~app.core.config.settings.LoadedSettings`: ``values`` (a Settings), where
    each came from, and which a flag or variable pins there. ``values.api_key`` is the key
    this client sends (the server never tells its own)."""

    def __init__(self, described: Mapping[str, Any] | None = None, api_key: str | None = None) -> None:
        self._described: dict[str, Any] = dict(described or {})
        self.sources: dict[str, str] = {}
        values: dict[str, Any] = {}
        for field, entry in self._described.items():
            if field not in FIELD_NAMES or not isinstance(entry, Mapping):
                continue  # a newer server's setting this version does not know
            self.sources[field] = str(entry.get("source", "default"))
            if field == "api_key":
                continue
            try:
                values[field] = validate_setting(field, entry.get("value"))
            except ValueError as exc:
                log.warning("the server's setting %s: %s", field, exc)
        values["api_key"] = api_key
        self.values = Settings.model_construct(**values)

    def fixed_by(self, field: str) -> str | None:
        """The flag or environment variable that pins ``field`` on the server, if any."""
        source = self.sources.get(field, "default")
        if source.startswith(("flag ", "env ")):
            return source.split(" ", 1)[1]
        return None

    def describe(self) -> dict[str, Any]:
        return dict(self._described)


class ServedRemotes:
    """The remotes of the served Siesta as its last ``GET /api/v1/models`` described them,
    with :meth:`describe` in the shape of the manager's ``remotes.describe()``."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._remotes: list[tuple[dict[str, Any], float | None]] = []  # (description, retry at on this clock)

    def update(self, described: Any) -> None:
        """Keeps what the server said (a list of remotes; anything else: none)."""
        now = self._clock.now()
        self._remotes = []
        for r in described if isinstance(described, list) else []:
            if isinstance(r, dict) and isinstance(r.get("name"), str):
                retry_in = r.get("retry_in")
                self._remotes.append((dict(r), now + retry_in if isinstance(retry_in, int | float) else None))

    def describe(self) -> list[dict[str, Any]]:
        """Each remote by name: ``name``, ``kind``, ``url``, ``api_key`` ("(set)" or None),
        ``status``, ``error``, ``retry_in`` (counted on this clock), ``models``."""
        now = self._clock.now()
        return [{**r, "retry_in": max(0.0, at - now) if at is not None else r.get("retry_in")}
                for r, at in sorted(self._remotes, key=lambda item: item[0]["name"])]


class ManagerClient:
    """A model manager's interface to the GUI, served by a Siesta elsewhere over HTTP."""

    paths = None
    """No folder on this machine belongs to the served Siesta: its recipes, logs and engine
    are the other machine's. The GUI hides what needs them (Find models, Import, Download,
    Install llama-server, logs, Model settings, Start at login)."""

    def __init__(self, url: str, api_key: str | None = None, *, clock: Clock | None = None,
                 retry_seconds: tuple[float, ...] = RETRY_SECONDS) -> None:
        self.url = base_url(url)
        self._api_key = api_key or None
        self.clock = clock or Clock()
        self.closing = False
        self.target = Target(self.url, urlsplit(self.url).hostname or self.url)
        self.connection = Connection()
        self.loaded_settings = RemoteSettings(api_key=self._api_key)
        self.remotes = ServedRemotes(self.clock)
        """The served Siesta's own remotes (its other machines and engines) and whether they answer."""
        self._retry_seconds = retry_seconds
        self._models: dict[str, dict[str, Any]] = {}
        self._subscribers: list[EventCallback] = []
        self._connection_watchers: list[Callable[[], None]] = []
        self._offset: float | None = None  # this clock minus the server's
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._refreshed_at = 0.0
        self._first_attempt: asyncio.Event | None = None
        self._given_back: dict[str, Any] | None = None  # GET /api/v1/models' given_back, as last read

    def __repr__(self) -> str:  # never the key
        return f"ManagerClient({self.url!r}, {self.connection.state})"

    # ---- start and stop ------------------------------------------------------------------

    async def start(self, wait: float = 2 * CONNECT_TIMEOUT) -> None:
        """Starts following the server and waits (at most ``wait`` seconds) for the first
        attempt: connected with its models and settings read, or not reachable (then
        :attr:`connection` says why, and it keeps trying)."""
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT))
        self._first_attempt = asyncio.Event()
        self._task = asyncio.create_task(self._follow(), name=f"siesta client {self.url}")
        _name_machine_later(self)
        try:
            async with asyncio.timeout(wait):
                await self._first_attempt.wait()
        except TimeoutError:
            pass

    async def close(self) -> None:
        """Stops following the server. Nothing on the server changes: its models stay as they are."""
        if self.closing:
            return
        self.closing = True
        tasks = [t for t in (self._task, self._refresh_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    # ---- what the GUI reads ---------------------------------------------------------------

    def snapshots(self) -> list[dict[str, Any]]:
        """Every model the server lists, by name, with local countdowns. Asking also re-reads
        the memory figures and settings in the background, at most every few seconds."""
        self._refresh_soon()
        return [dict(self._models[name]) for name in sorted(self._models)]

    def listed_snapshot(self, name: str) -> dict[str, Any] | None:
        """The model listed under exactly ``name`` now; None when none is."""
        found = self._models.get(name)
        return dict(found) if found is not None else None

    def recipe_of(self, name: str) -> None:
        """Recipes are files on the other machine: none is readable here."""
        return None

    def reload_recipes(self) -> None:
        """The served Siesta watches its own recipe folder; nothing to do here."""

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Calls ``callback(event)`` for every event the server sends, after :meth:`snapshots`
        shows it; returns the function that unsubscribes."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def watch_connection(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Calls ``callback()`` whenever :attr:`connection` changes; returns the unsubscriber."""
        self._connection_watchers.append(callback)

        def unwatch() -> None:
            if callback in self._connection_watchers:
                self._connection_watchers.remove(callback)

        return unwatch

    def given_back_summary(self) -> dict[str, Any] | None:
        """What that Siesta's idle and memory-pressure unloads gave back (``{"today", "total",
        "since", ...}``, byte-seconds, its clock), as its list last said; None before it said
        (or from a Siesta too old to count it)."""
        return dict(self._given_back) if self._given_back is not None else None

    async def history(self, day: str = "today") -> dict[str, Any]:
        """``GET /api/v1/history?day=DAY``: each model's loads and shares of that local day there."""
        data = await self._call("GET", f"/api/v1/history?day={quote(day)}", what="read its history")
        if not isinstance(data, dict):
            raise Refused(f"{self.url} answered GET /api/v1/history without a day", 502)
        return data

    async def system_memory(self) -> dict[str, Any]:
        """``GET /api/v1/system``: the served machine's RAM and GPUs."""
        return await self._call("GET", "/api/v1/system", what="read the memory figures")

    # ---- actions ---------------------------------------------------------------------------

    async def load(self, name: str) -> dict[str, Any]:
        """Loads a model there; returns once it is ready (its snapshot)."""
        data = await self._call("POST", "/api/v1/load", {"model": name}, what=f"load {name}", name=name,
                                timeout=None)
        return self._localize(data)

    async def unload(self, name: str) -> dict[str, Any]:
        data = await self._call("POST", "/api/v1/unload", {"model": name}, what=f"unload {name}", name=name,
                                timeout=None)
        return self._localize(data)

    async def unload_all(self) -> list[str]:
        data = await self._call("POST", "/api/v1/unload", {"all": True}, what="unload all models", timeout=None)
        return list(data.get("unloaded", [])) if isinstance(data, dict) else []

    async def set_model_timeout(self, name: str, value: ModelTimeout) -> dict[str, Any]:
        """Written into the model's recipe there (:data:`USE_GLOBAL` removes it); ``value`` is
        seconds, None (never) or USE_GLOBAL, as for the manager."""
        wire = format_model_timeout(value)
        data = await self._call("PATCH", f"/api/v1/models/{quote(name, safe='/:')}", {"unload_timeout": wire},
                                what=f"set the timeout of {name}", name=name)
        return self._localize(data)

    async def set_setting(self, field: str, raw: Any) -> Any:
        """Changes a run-time setting there (written to its settings.toml). Only
        :data:`~app.core.config.settings.RUNTIME_SETTABLE` settings can be changed from here."""
        if field not in RUNTIME_SETTABLE:
            raise ValueError(f"{field} is set on the machine that runs Siesta ({self.target.label}), "
                             "not from here")
        described = await self._call("PATCH", "/api/v1/settings", {field: raw}, what=f"change {field}")
        self.loaded_settings = RemoteSettings(described, self._api_key)
        return getattr(self.loaded_settings.values, field)

    async def set_model_settings(self, name: str, **_changes: Any) -> None:
        """A recipe's arguments and model file are paths and options of the other machine."""
        raise ValueError(f"the settings of {name} are edited on the machine that runs it ({self.target.label})")

    # ---- calls -----------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    async def _call(self, method: str, path: str, body: Any = None, *, what: str, name: str | None = None,
                    timeout: float | None = CALL_TIMEOUT, following: bool = False) -> Any:
        """One JSON call. Unreachable when nothing answers; the server's errors as the core's
        exceptions (:func:`error_for`), or all as Refused while ``following`` (what answers
        there is not a Siesta that lets this client in)."""
        if self._http is None or self.closing:
            raise Unreachable(f"not connected to Siesta at {self.url}")
        limits = aiohttp.ClientTimeout(total=timeout, sock_connect=CONNECT_TIMEOUT)
        try:
            async with self._http.request(method, self.url + path, json=body, headers=self._headers(),
                                          timeout=limits) as resp:
                text = await resp.text(errors="replace")
                self._clock_from_date(resp.headers.get("Date"))
                if resp.status >= 400 and following:
                    raise refused(resp.status, text)
                if resp.status >= 400:
                    raise error_for(resp.status, text, name=name, retry_after=resp.headers.get("Retry-After"))
        except ClientError:
            raise
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError) as exc:
            raise Unreachable(f"cannot reach Siesta at {self.url}: {_reason(exc)}") from None
        try:
            return json.loads(text) if text.strip() else None
        except ValueError:
            raise Refused(f"{what}: {self.url} answered with something that is not JSON: {text[:200]!r}",
                          502) from None

    # ---- following the server ---------------------------------------------------------------

    async def _follow(self) -> None:
        """Holds the event stream open; connects again with back-off whenever it breaks."""
        failures = 0
        while not self.closing:
            try:
                await self._stream()
                failures = 0
                delay = self._retry_seconds[0]  # the stream ended (a restart?): look again shortly
            except asyncio.CancelledError:
                raise
            except ClientError as exc:
                delay = self._retry_seconds[min(failures, len(self._retry_seconds) - 1)]
                failures += 1
                self._lost(exc, delay)
            except Exception:  # a bug must not end the following: log it and keep trying
                log.exception("following %s failed; trying again", self.url)
                delay = self._retry_seconds[-1]
                self._lost(ClientError("an internal error (see the log)"), delay)
            if self._first_attempt is not None:
                self._first_attempt.set()
            await asyncio.sleep(delay)

    async def _stream(self) -> None:
        assert self._http is not None
        limits = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT)
        try:
            async with self._http.get(self.url + "/api/v1/events", headers=self._headers(),
                                      timeout=limits) as resp:
                if resp.status >= 400:
                    raise refused(resp.status, await resp.text(errors="replace"))
                await self._resync()  # after the stream is open: no change falls in between
                if self._first_attempt is not None:
                    self._first_attempt.set()
                async for line in resp.content:
                    if line.startswith(b"data:"):
                        self._on_line(line[5:])
        except ClientError:
            raise
        except aiohttp.ClientPayloadError:
            return  # the stream broke off mid-event: connect again
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError) as exc:
            raise Unreachable(f"cannot reach Siesta at {self.url}: {_reason(exc)}") from None

    async def _resync(self) -> None:
        """Reads the settings and the list anew; models that are gone are forgotten."""
        described = await self._call("GET", "/api/v1/settings", what="read its settings", following=True)
        listed = await self._call("GET", "/api/v1/models", what="list its models", following=True)
        models = listed.get("models") if isinstance(listed, dict) else None
        if not isinstance(models, list):
            raise Refused(f"{self.url} answered GET /api/v1/models without a list of models", 502)
        self.loaded_settings = RemoteSettings(described, self._api_key)
        self.remotes.update(listed.get("remotes"))
        self._keep_given_back(listed)
        self._measure_offset_from(models)
        fresh = {m["name"]: self._localize(m) for m in models if isinstance(m, dict) and isinstance(m.get("name"), str)}
        self._refreshed_at = time.monotonic()
        for name in [n for n in self._models if n not in fresh]:
            self._forget(name)
        for name, snapshot in fresh.items():
            self._models[name] = snapshot
            self._emit({"reason": "snapshot", "model": snapshot, "time": self.clock.now()})
        if not self.connection.ok:
            log.info("connected to Siesta at %s: %d models", self.url, len(fresh))
            self._set_connection(Connection("connected"))

    def _on_line(self, raw: bytes) -> None:
        try:
            event = json.loads(raw)
        except ValueError:
            return
        model = event.get("model") if isinstance(event, dict) else None
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            return
        now = self.clock.now()
        if isinstance(event.get("time"), int | float):
            self._offset = now - event["time"]  # this clock minus the server's (plus a little latency)
        reason = str(event.get("reason", ""))
        name = model["name"]
        model = self._localize(model)
        if reason == "removed":
            self._models.pop(name, None)
        else:
            self._models[name] = model
        if reason == "timeout_changed" and model.get("timeout_source") == "global":
            self._refreshed_at = 0.0  # the global timeout may have changed there: read the settings again
        self._emit({"reason": reason, "model": model, "time": now})

    def _lost(self, exc: Exception, delay: float) -> None:
        """The server cannot be reached (or refuses): say so, forget its models, retry later."""
        state = "refused" if isinstance(exc, Refused) else "unreachable"
        reason = f"{self.url} answered {exc}" if state == "refused" else str(exc)
        if self.connection.state != state or self.connection.reason != reason:
            log.warning("%s; trying again with back-off", reason)
        for name in list(self._models):
            self._forget(name)
        self.remotes.update([])  # what they are now is not known here
        self._set_connection(Connection(state, reason, self.clock.now() + delay))

    def _forget(self, name: str) -> None:
        gone = self._models.pop(name)
        self._emit({"reason": "removed", "model": {**gone, "state": "unloaded"}, "time": self.clock.now()})

    def _set_connection(self, connection: Connection) -> None:
        self.connection = connection
        for callback in list(self._connection_watchers):
            try:
                callback()
            except Exception:
                log.exception("connection watcher failed")

    def _emit(self, event: dict[str, Any]) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # a broken observer must not stop the stream
                log.exception("event subscriber failed")

    def _refresh_soon(self) -> None:
        """Re-reads memory figures and settings in the background, when it is time."""
        if (self.closing or not self.connection.ok or time.monotonic() - self._refreshed_at < REFRESH_SECONDS
                or (self._refresh_task is not None and not self._refresh_task.done())):
            return
        try:
            self._refresh_task = asyncio.get_running_loop().create_task(self._refresh(), name="siesta client refresh")
        except RuntimeError:
            return  # no loop running (a test reading it synchronously)
        self._refreshed_at = time.monotonic()

    async def _refresh(self) -> None:
        try:
            described = await self._call("GET", "/api/v1/settings", what="read its settings", following=True)
            listed = await self._call("GET", "/api/v1/models", what="list its models", following=True)
        except ClientError as exc:
            log.debug("refreshing from %s: %s", self.url, exc)
            return
        self.loaded_settings = RemoteSettings(described, self._api_key)
        if isinstance(listed, dict):
            self.remotes.update(listed.get("remotes"))
            self._keep_given_back(listed)
        # Only the figures: states and countdowns come from the stream, which may be newer.
        for item in listed.get("models", []) if isinstance(listed, dict) else []:
            current = self._models.get(item.get("name")) if isinstance(item, dict) else None
            if current is not None:
                current.update({k: item.get(k) for k in _MEMORY_KEYS if k in item})

    def _keep_given_back(self, listed: Mapping[str, Any]) -> None:
        summary = listed.get("given_back")
        self._given_back = dict(summary) if isinstance(summary, dict) else None

    # ---- clocks ------------------------------------------------------------------------------

    def _localize(self, snapshot: Any) -> dict[str, Any]:
        """A server's snapshot with its times on this clock, and no path of the other machine."""
        if not isinstance(snapshot, dict):
            return {}
        out = dict(snapshot)
        now = self.clock.now()
        unloads_in = out.get("unloads_in")
        out["unload_at"] = now + unloads_in if isinstance(unloads_in, int | float) else None
        offset = self._offset or 0.0
        for key in ("idle_since", "loading_since"):
            if isinstance(out.get(key), int | float):
                out[key] = out[key] + offset
        out["log_file"] = None
        return out

    def _measure_offset_from(self, models: list[Any]) -> None:
        """A model counting down tells the server's time exactly: its ``unload_at`` less its ``unloads_in``."""
        for m in models:
            if isinstance(m, dict) and isinstance(m.get("unload_at"), int | float) \
                    and isinstance(m.get("unloads_in"), int | float):
                self._offset = self.clock.now() - (m["unload_at"] - m["unloads_in"])
                return

    def _clock_from_date(self, date: str | None) -> None:
        """A first guess at the offset from the ``Date`` header (whole seconds), until events tell it better."""
        if self._offset is not None or not date:
            return
        try:
            self._offset = self.clock.now() - email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            pass


def _error_fields(status: int, text: str) -> tuple[str, str, str]:
    """``(message, code, log_tail)`` of an error answer in OpenAI's shape (or its text)."""
    message, code, log_tail = text.strip()[:300] or f"HTTP {status}", "", ""
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        message = str(error.get("message") or message)
        code = str(error.get("code") or "")
        log_tail = str(error.get("log_tail") or "")
    if status == 401:
        message = f"{message} (give the key with --api-key or SIESTA_API_KEY)"
    return message, code, log_tail


def refused(status: int, text: str) -> Refused:
    """An error answer to the client's own reading of the server (the stream, the list):
    not a Siesta that lets it in, whatever the error."""
    message, code, _ = _error_fields(status, text)
    if status == 404 and not code:
        message = "no Siesta API there"
    return Refused(f"HTTP {status}: {message}", status, code)


def error_for(status: int, text: str, *, name: str | None = None, retry_after: str | None = None) -> Exception:
    """The core's exception for an error the management API answered to an action (see
    :mod:`app.api.error_mapping` for the other direction)."""
    message, code, log_tail = _error_fields(status, text)
    if code == "model_not_found" and name is not None:
        return UnknownModel(name)
    if status == 503:
        try:
            after = int(retry_after or 5)
        except ValueError:
            after = 5
        return ModelUnavailable(message, log_tail=log_tail, retry_after=after, code=code or "model_unavailable")
    if code == "setting_fixed":
        return SettingFixed(message)
    if code == "recipe_invalid":
        return PersistError(message, "invalid")
    if code == "persist_failed":
        return PersistError(message, "io")
    if status in (400, 404, 409, 422):
        return ValueError(message)
    return Refused(f"HTTP {status}: {message}", status, code)


def _reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        if isinstance(error, socket.gaierror):
            return f"{exc.host} not found: {error.strerror}".lower()
        return (os.strerror(error.errno) if error.errno else error.strerror or str(error)).lower()
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return "it did not answer in time"
    return str(exc) or type(exc).__name__


def _name_machine_later(client: ManagerClient) -> None:
    """Names the machine behind an IP address by a reverse lookup, in a daemon thread (a
    lookup can hang for long; nothing waits for it, not even the loop's shutdown)."""
    host = urlsplit(client.url).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return  # already a name
    loop = asyncio.get_running_loop()

    def look_up() -> None:
        try:
            found = socket.gethostbyaddr(host)[0]
        except OSError:
            return
        short = found.split(".", 1)[0] if found and not found[0].isdigit() else found
        if short and short != host:
            try:
                loop.call_soon_threadsafe(lambda: setattr(client, "target", Target(client.url, short)))
            except RuntimeError:
                pass  # the loop has closed meanwhile

    threading.Thread(target=look_up, name=f"reverse lookup {host}", daemon=True).start()


__all__ = ["ManagerClient", "RemoteSettings", "ServedRemotes", "Connection", "Target", "ClientError", "Unreachable", "Refused",
           "error_for", "RETRY_SECONDS"]
