"""What Siesta needs from another engine's HTTP API, and the errors it can give.

Each kind of remote (:mod:`.kinds`) is a :class:`RemoteEngine`: it lists the models the
engine has and their state, loads and unloads one when the engine allows it, and says
where an OpenAI request for one goes. Everything above this layer (the countdowns, the
in-flight counts, the events) is the same for every kind and lives in :mod:`.remote`.

Every call here refuses to wait more than :data:`CONNECT_TIMEOUT` for a connection:
an engine that does not accept it is *unreachable* (:class:`RemoteUnreachable`), which
is not the same as one that accepted and takes long to answer (a load is legitimate, up
to the remote's ``load_timeout``). No answer is read past its cap (:mod:`.limits`), and
no model is taken that :data:`~.model_fields.MODEL_FIELDS` does not allow.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp

from app.core.config.durations import Timeout
from app.core.config.settings import Settings
from app.core.remotes.config import RemoteConfig
from app.core.remotes.limits import ANSWER_CAP, ERROR_CAP, MAX_MODELS, BodyTooLarge, read_body, read_lines
from app.core.remotes.model_fields import Rejected, check_model

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 2.0
"""Seconds a remote gets to accept a connection before it counts as unreachable."""

PROBE_AFTER = 1.5
"""Seconds a routed request may go without its answer beginning before Siesta asks the
remote, with a 1 s probe, whether it is alive at all: a remote that accepted and hangs is
answered 502 within 3 s, one that is alive (busy loading) may stay silent for up to its
``load_timeout``."""

CALL_TIMEOUT = 10.0
"""Seconds a listing or any other quick call may take as a whole (a load or an unload gets
the remote's ``load_timeout``)."""

DEFAULT_LOAD_TIMEOUT: float = Settings.model_fields["load_timeout"].default
"""The global ``load_timeout``'s default, for an engine made without the setting in force."""

_MAX_REPORTED = 1000  # problems remembered per remote, so each is logged once (past them: debug only)

HOP_HEADER = "X-Siesta-Hop"
"""Sent on every call to a remote: a Siesta that sees it answers with its own local models
only and routes only to them, so two Siestas that are each other's remote never loop."""


class RemoteUnreachable(Exception):
    """The remote refused the connection or did not accept it within :data:`CONNECT_TIMEOUT`."""

    def __init__(self, name: str, url: str, reason: str) -> None:
        super().__init__(f"remote {name!r} at {url} is unreachable: {reason}")
        self.name, self.url, self.reason = name, url, reason


class RemoteRefused(Exception):
    """The remote answered, with an error (``status`` is its HTTP status)."""

    def __init__(self, name: str, what: str, status: int, detail: str) -> None:
        super().__init__(f"remote {name!r}: {what} failed: HTTP {status}: {detail[:300]}")
        self.name, self.status = name, status


class NoEventStream(Exception):
    """The remote has no event stream at that path (404, or an answer that is not SSE)."""


class RemoteUnsupported(Exception):
    """An action this kind of remote does not offer (``openai`` remotes only route)."""


@dataclass
class RemoteModelInfo:
    """One model as the engine reports it.

    ``state`` uses Siesta's words (``ready``, ``loading``, ``unloading``, ``unloaded``,
    ``failed``). ``unloads_in`` is the engine's own countdown where it has one (Ollama's
    ``expires_at``); ``snapshot`` is a Siesta remote's whole snapshot of the model.
    """

    model: str
    state: str
    memory: int | None = None
    vram: int | None = None
    unloads_in: float | None = field(default=None, compare=False)  # changes with every listing
    busy: bool = False
    error: str | None = None
    snapshot: dict[str, Any] = field(default_factory=dict)


class RemoteEngine:
    """The HTTP API of one remote engine. Subclasses set the class flags and the calls."""

    kind: ClassVar[str] = ""
    can_load: ClassVar[bool] = True
    """Offers load and unload (every kind but ``openai``)."""
    siesta_counts_idle: ClassVar[bool] = False
    """Siesta's own countdown unloads its models (the engine has no idle clock of its own
    that Siesta can set: llama.cpp's router, Lemonade)."""
    passes_keep_alive: ClassVar[bool] = False
    """A request's ``keep_alive`` goes to the remote as it is (another Siesta)."""
    keeps_timeouts: ClassVar[bool] = False
    """The remote keeps its models' timeouts itself (another Siesta, in its recipes)."""
    probe_path: ClassVar[str] = "/v1/models"
    """A cheap GET that any live server of this kind answers at once."""

    def __init__(self, config: RemoteConfig, http: aiohttp.ClientSession,
                 global_load_timeout: Callable[[], float] = lambda: DEFAULT_LOAD_TIMEOUT) -> None:
        self.config = config
        self.http = http
        self._global_load_timeout = global_load_timeout
        self._reported: set[Any] = set()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def load_timeout(self) -> float:
        """Seconds a load or an unload on this remote may take, and a routed request may go
        without a byte of its answer: the remote's own ``load_timeout``, else the global one."""
        own = self.config.load_timeout
        return own if own is not None else self._global_load_timeout()

    def headers(self) -> dict[str, str]:
        """Sent with every call and every routed request: the key goes to this remote only."""
        out = {HOP_HEADER: "1"}
        if self.config.api_key:
            out["Authorization"] = f"Bearer {self.config.api_key}"
        return out

    def openai_url(self, raw_path: str) -> str:
        """Where a front-door request for ``/v1/...`` goes on this remote."""
        return self.config.url + raw_path

    # ---- calls ---------------------------------------------------------------------------

    async def call(self, method: str, path: str, body: Any = None, *, what: str,
                   timeout: float = CALL_TIMEOUT, action: bool = False) -> Any:
        """One JSON call; RemoteUnreachable when the connection fails, RemoteRefused on an
        error status or an answer over its cap. ``timeout`` bounds the whole call: past it a
        quick call means a remote that hangs (unreachable); an ``action`` (a load, an
        unload, bounded by the remote's ``load_timeout``) is refused with 504."""
        url = self.config.url + path
        limits = aiohttp.ClientTimeout(total=timeout, sock_connect=CONNECT_TIMEOUT, connect=CONNECT_TIMEOUT)
        try:
            async with self.http.request(method, url, json=body, headers=self.headers(), timeout=limits) as resp:
                if resp.status >= 400:
                    raise RemoteRefused(self.name, what, resp.status, _error_text(await self.error_body(resp)))
                raw = await read_body(resp, ANSWER_CAP)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise RemoteUnreachable(self.name, self.config.url, connection_failure_reason(exc)) from None
        except asyncio.TimeoutError:
            if action:
                raise RemoteRefused(self.name, what, 504,
                                    f"no answer within {timeout:g} s (the load_timeout of remote {self.name!r}; "
                                    f"set load_timeout in [remotes.{self.name}] to allow more)") from None
            # connected, but the whole call took too long: a remote that hangs is unreachable too
            raise RemoteUnreachable(self.name, self.config.url, f"{what} took longer than {timeout:g} s") from None
        except BodyTooLarge as exc:
            raise RemoteRefused(self.name, what, 502, str(exc)) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise RemoteRefused(self.name, what, 502, f"the connection failed ({type(exc).__name__}: {exc})") from None
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than Python parses
            raise RemoteRefused(self.name, what, 502, f"not JSON: {raw[:200].decode(errors='replace')!r}") from None

    @staticmethod
    async def error_body(resp: aiohttp.ClientResponse) -> str:
        """The start of an error answer (:data:`~.limits.ERROR_CAP`), as text."""
        return (await read_body(resp, ERROR_CAP, truncate=True)).decode(errors="replace")

    async def probe(self, timeout: float = 1.0) -> bool:
        """True when the remote answers :attr:`probe_path` within ``timeout`` seconds."""
        try:
            await self.call("GET", self.probe_path, what="probe", timeout=timeout)
        except RemoteUnreachable:
            return False
        except RemoteRefused:
            return True  # it answered
        return True

    # ---- models, checked ---------------------------------------------------------------------

    def accept(self, entries: Iterable[Mapping[str, Any]], *, snapshot: bool = False) -> list[RemoteModelInfo]:
        """The models of a listing, given in Siesta's words, as Siesta takes them: each
        checked by :func:`~.model_fields.check_model` (a bad one is left out), and no more
        than :data:`~.limits.MAX_MODELS`. ``snapshot`` keeps each model's checked fields
        (another Siesta's)."""
        infos: list[RemoteModelInfo] = []
        for entry in entries:
            if len(infos) >= MAX_MODELS:
                self.report("too many", f"lists more than {MAX_MODELS} models: the rest are left out")
                break
            info = self.accept_one(entry, snapshot=snapshot)
            if info is not None:
                infos.append(info)
        return infos

    def accept_one(self, entry: Mapping[str, Any], *, snapshot: bool = False) -> RemoteModelInfo | None:
        """One model, checked as :meth:`accept` checks each; None when it is left out."""
        checked = check_model(entry)
        if isinstance(checked, Rejected):
            self.report((checked.model, checked.field), str(checked))
            return None
        unloads_in = checked.get("unloads_in")
        return RemoteModelInfo(
            model=checked["name"], state=checked["state"], memory=checked.get("memory"), vram=checked.get("vram"),
            unloads_in=float(unloads_in) if unloads_in is not None else None, busy=bool(checked.get("in_flight")),
            error=checked.get("error"), snapshot=checked if snapshot else {})

    def report(self, key: Any, message: str) -> None:
        """Logs what Siesta left out of this remote's answers, once per ``key`` (a listing
        every few seconds would repeat it)."""
        if key in self._reported or len(self._reported) >= _MAX_REPORTED:
            log.debug("remote %r (%s): %s", self.name, self.kind, message)
            return
        self._reported.add(key)
        log.warning("remote %r (%s): %s", self.name, self.kind, message)

    # ---- what each kind provides -----------------------------------------------------------

    async def list_models(self) -> list[RemoteModelInfo]:
        raise NotImplementedError

    async def load(self, model: str) -> None:
        raise RemoteUnsupported(f"remote {self.name!r} ({self.kind}) only routes requests: it cannot load models")

    async def unload(self, model: str) -> None:
        raise RemoteUnsupported(f"remote {self.name!r} ({self.kind}) only routes requests: it cannot unload models")

    async def set_timeout(self, model: str, value: Any) -> None:
        """Only for :attr:`keeps_timeouts` kinds: the remote writes it into its own recipe."""
        raise RemoteUnsupported(f"remote {self.name!r} ({self.kind}) keeps no timeouts of its own")

    async def after_request(self, model: str, timeout: Timeout) -> None:
        """A request through Siesta ended and the model is idle: engines with their own idle
        clock are set to Siesta's timeout here (Ollama)."""

    def events(self) -> AsyncIterator[RemoteModelInfo | None] | None:
        """The engine's change stream, or None when it has none (then Siesta polls). Each item
        is a model that changed, or None for "something changed: list again"."""
        return None

    async def sse(self, path: str) -> AsyncIterator[dict[str, Any]]:
        """The JSON objects of the server-sent events at ``path``, as they come. Ends when
        the stream breaks or stays quiet for a minute (the caller lists again and reconnects,
        and so notices a server that hangs); RemoteUnreachable when it cannot connect,
        NoEventStream when the server has no stream there."""
        limits = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, connect=CONNECT_TIMEOUT,
                                       sock_read=60)
        try:
            async with self.http.get(self.config.url + path, headers=self.headers(), timeout=limits) as resp:
                if resp.status == 404 or (resp.status < 400 and resp.content_type != "text/event-stream"):
                    raise NoEventStream(path)
                if resp.status >= 400:
                    raise RemoteRefused(self.name, "watch events", resp.status,
                                        _error_text(await self.error_body(resp)))
                async for line in read_lines(resp):
                    if not line.startswith(b"data:"):
                        continue
                    try:
                        event = json.loads(line[5:])
                    except (ValueError, RecursionError):
                        continue
                    if isinstance(event, dict):
                        yield event
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise RemoteUnreachable(self.name, self.config.url, connection_failure_reason(exc)) from None
        except BodyTooLarge as exc:
            self.report("event too large", f"an event of {path}: {exc}; it is left out and the models listed again")
            return
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return  # the stream broke


def _error_text(text: str) -> str:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return text.strip()
    if isinstance(data, Mapping):
        err = data.get("error")
        if isinstance(err, Mapping) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
    return text.strip()


def connection_failure_reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return f"it did not accept a connection within {CONNECT_TIMEOUT:g} s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        # asyncio words a refusal "Connect call failed ('127.0.0.1', 9)": its errno says it plainly
        return (os.strerror(error.errno) if error.errno else error.strerror or str(error)).lower()
    return str(exc) or type(exc).__name__
