"""One remote as Siesta sees it: whether it answers, the models it has, the requests in
flight to each, and, for engines without an idle clock Siesta can set, the countdown.

A :class:`Remote` owns all of that state for its remote (one owner, one task): its watch
task lists the engine's models (or follows its event stream), marks the remote
unreachable and retries with back-off when it does not answer, and emits an event for
every model that changes, in the same shape as a local model's (its name qualified as
``REMOTE/MODEL``). Requests routed to it take a :class:`RemoteLease`, so a remote model
is busy while a request runs and its idle time counts from the end of the last one.

Whose clock unloads a remote model:

- ``siesta``: the other Siesta's; shown here from its events.
- ``ollama``: Ollama's own; after each request through Siesta it is set to Siesta's
  timeout for the model (Ollama ignores ``keep_alive`` on its ``/v1`` routes).
- ``llama.cpp-router`` and ``lemonade``: Siesta's, here (:meth:`Remote._arm_countdown`);
  every way a model leaves (an unload here, the engine's own, the remote going away)
  cancels it.
- ``openai``: nobody's; Siesta only routes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.core.config.clock import Clock, WallDeadline
from app.core.config.durations import NOT_GIVEN, USE_GLOBAL, KeepAlive, ModelTimeout, Timeout
from app.core.remotes.config import RemoteConfig
from app.core.remotes.engine_api import (
    RemoteEngine,
    RemoteModelInfo,
    RemoteRefused,
    RemoteUnreachable,
    RemoteUnsupported,
)
from app.core.remotes.limits import MAX_MODELS

log = logging.getLogger(__name__)

POLL_SECONDS = 5.0
"""How often an engine without an event stream is listed while it answers."""

RETRY_SECONDS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
"""Back-off between attempts to reach a remote that did not answer."""

EmitRemote = Callable[[dict[str, Any], str], None]


@dataclass
class _ModelView:
    """What Siesta knows of one remote model, beyond what the engine reports."""

    info: RemoteModelInfo
    seen_at: float
    in_flight: int = 0
    idle_since: float | None = None
    keep_alive: KeepAlive = NOT_GIVEN
    unload_at: float | None = None
    countdown: WallDeadline | None = field(default=None, repr=False)
    engine_unload_at: float | None = None  # the engine's own countdown, in this machine's wall clock
    listed: bool = True  # False: made up for a request before the remote listed it; it goes when the request ends


class RemoteLease:
    """One request routed to a remote model; :meth:`release` when it has ended."""

    def __init__(self, remote: Remote, model: str, keep_alive: KeepAlive) -> None:
        self.remote = remote
        self.model = model
        self.keep_alive = keep_alive
        self._released = False

    def url(self, raw_path: str) -> str:
        return self.remote.engine.openai_url(raw_path)

    def headers(self) -> dict[str, str]:
        return self.remote.engine.headers()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.remote._request_ended(self.model, self.keep_alive)


class Remote:
    """One configured remote: its engine, its reachability and its models."""

    def __init__(self, config: RemoteConfig, engine: RemoteEngine, clock: Clock,
                 global_timeout: Callable[[], Timeout], emit: EmitRemote) -> None:
        self.config = config
        self.engine = engine
        self.clock = clock
        self._global_timeout = global_timeout
        self._emit = emit
        self.status = "connecting"  # connecting | ok | unreachable | error
        self.error: str | None = None
        self.retry_at: float | None = None
        self.views: dict[str, _ModelView] = {}
        self._poke = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._actions: set[asyncio.Task[Any]] = set()

    @property
    def name(self) -> str:
        return self.config.name

    # ---- start, stop, configuration --------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name=f"remote-{self.name}")

    async def close(self) -> None:
        """Stops watching; clears every countdown and forgets the models (no events)."""
        tasks = [t for t in (self._task, *self._actions) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for view in self.views.values():
            self._clear_countdown(view)
        self.views.clear()

    def timeouts_changed(self, config: RemoteConfig) -> None:
        """New ``[remotes.NAME.timeouts]`` (the connection is the same): countdowns follow."""
        old, self.config = self.config.timeouts, config
        self.engine.config = config
        for model, view in self.views.items():
            if old.get(model, USE_GLOBAL) != config.timeouts.get(model, USE_GLOBAL):
                view.keep_alive = NOT_GIVEN  # the user's new setting replaces a request's keep_alive
                self._timeout_applies(model, view)

    def global_timeout_changed(self) -> None:
        for model, view in self.views.items():
            if model not in self.config.timeouts and view.keep_alive is NOT_GIVEN:
                self._timeout_applies(model, view)

    def poke(self) -> None:
        """List the models again now (after an action or a request)."""
        self._poke.set()

    # ---- what the API and the GUI see -------------------------------------------------------

    def qualified(self, model: str) -> str:
        return f"{self.name}/{model}"

    def describe(self) -> dict[str, Any]:
        now = self.clock.now()
        return {**self.config.describe(), "status": self.status, "error": self.error,
                "retry_in": max(0.0, self.retry_at - now) if self.retry_at is not None else None,
                "models": len(self.views)}

    def effective_timeout(self, model: str) -> tuple[Timeout, str]:
        view = self.views.get(model)
        if view is not None and view.keep_alive is not NOT_GIVEN:
            return view.keep_alive, "request"
        if model in self.config.timeouts:
            return self.config.timeouts[model], "remote"
        return self._global_timeout(), "global"

    def snapshot(self, model: str) -> dict[str, Any]:
        view = self.views[model]
        info = view.info
        now = self.clock.now()
        base = {"remote": self.name, "remote_kind": self.engine.kind, "remote_model": model,
                "remote_status": self.status, "can_load": self.engine.can_load,
                "log_file": None, "memory_estimate": None, "memory_estimate_source": None}
        timeout, source = self.effective_timeout(model)
        if self.engine.siesta_counts_idle:
            unload_at = view.unload_at
        else:
            unload_at = view.engine_unload_at
        controllable = self.engine.can_load
        data = {
            **base, "name": self.qualified(model), "state": info.state, "stale": False,
            "in_flight": view.in_flight + (1 if info.busy and not view.in_flight else 0), "waiting": 0,
            "unload_timeout": timeout if controllable else None,
            "timeout_source": source if controllable else "remote",
            "idle_since": view.idle_since, "unload_at": unload_at,
            "unloads_in": max(0.0, unload_at - now) if unload_at is not None else None,
            "loading_since": None, "last_load_seconds": None, "last_unload_reason": None, "unloaded_at": None,
            "pid": None,
            "error": info.error, "exit_code": None, "crash_loop": False, "backend": self.engine.kind,
            "group": None, "preload": False, "memory": info.memory, "vram": info.vram,
            "memory_by_device": None,
            **({"recipe_unload_timeout": self.config.timeouts[model]} if model in self.config.timeouts else {}),
        }
        if self.engine.keeps_timeouts and info.snapshot:  # another Siesta: its own snapshot, localised
            data.update(info.snapshot)
            data.update(base, name=self.qualified(model), unload_at=view.engine_unload_at,
                        unloads_in=max(0.0, view.engine_unload_at - now) if view.engine_unload_at is not None else None)
        return data

    def snapshots(self) -> list[dict[str, Any]]:
        return [self.snapshot(m) for m in sorted(self.views)]

    def snapshot_or_gone(self, model: str) -> dict[str, Any]:
        """:meth:`snapshot` while the remote lists ``model``; else the little that is known
        of a model that is not (or no longer) there."""
        if model in self.views:
            return self.snapshot(model)
        return {"name": self.qualified(model), "remote": self.name, "state": "unloaded"}

    # ---- requests -----------------------------------------------------------------------------

    def acquire(self, model: str, keep_alive: KeepAlive) -> RemoteLease:
        """A request for ``model`` starts: it is busy until the lease is released. A model
        the remote has not listed is shown only while its requests run (the remote decides
        whether it exists; a listing during the request keeps it)."""
        view = self.views.get(model)
        if view is None:
            view = self.views[model] = _ModelView(RemoteModelInfo(model, "loading"), self.clock.now(), listed=False)
        view.in_flight += 1
        self._clear_countdown(view)
        view.idle_since = None
        self._changed(model, "busy")
        return RemoteLease(self, model, keep_alive)

    def _request_ended(self, model: str, keep_alive: KeepAlive) -> None:
        view = self.views.get(model)
        if view is None:
            return
        view.in_flight -= 1
        if not self.engine.passes_keep_alive:
            view.keep_alive = keep_alive  # the last request to finish decides, as for a local model
        if view.in_flight > 0:
            return
        if not view.listed:  # any name a client sends would otherwise stay here for good
            self._forget(model)
            self.poke()
            return
        view.idle_since = self.clock.now()
        if self.engine.siesta_counts_idle:
            self._arm_countdown(model, view)
        elif self._engine_keeps_idle_clock:
            timeout, _ = self.effective_timeout(model)
            self._spawn(self.engine.after_request(model, timeout), f"keep_alive {model}")
        self._changed(model, "idle")
        self.poke()

    # ---- actions ------------------------------------------------------------------------------

    async def load(self, model: str) -> None:
        await self.engine.load(model)
        if self._engine_keeps_idle_clock:
            await self.engine.after_request(model, self.effective_timeout(model)[0])  # one clock from the start
        await self._refresh_now()
        view = self.views.get(model)
        if view is not None and self.engine.siesta_counts_idle and view.in_flight == 0:
            view.idle_since = self.clock.now()
            self._arm_countdown(model, view)
            self._changed(model, "loaded")

    async def unload(self, model: str) -> None:
        view = self.views.get(model)
        if view is not None:
            self._clear_countdown(view)
        # a keep_alive still on its way would load the model again right after the unload
        # (Ollama loads a model a keep_alive names): it is cancelled, and waited for
        pending = [t for t in self._actions if t.get_name() == self._action_name(f"keep_alive {model}")]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        await self.engine.unload(model)
        await self._refresh_now()

    async def set_timeout(self, model: str, value: ModelTimeout) -> None:
        """Only for another Siesta (it writes the value into its recipe); the others' timeouts
        are Siesta's own settings (:class:`~.remote_set.RemoteSet` writes them)."""
        await self.engine.set_timeout(model, value)
        await self._refresh_now()

    # ---- the countdown (router, Lemonade) ------------------------------------------------------

    @property
    def _engine_keeps_idle_clock(self) -> bool:
        """An engine with an idle clock of its own that Siesta sets (Ollama)."""
        return self.engine.can_load and not self.engine.siesta_counts_idle and not self.engine.keeps_timeouts

    def _timeout_applies(self, model: str, view: _ModelView) -> None:
        if self.engine.siesta_counts_idle and view.countdown is not None:
            self._arm_countdown(model, view)
        elif self._engine_keeps_idle_clock and view.info.state == "ready" and view.in_flight == 0:
            timeout, _ = self.effective_timeout(model)
            self._spawn(self.engine.after_request(model, timeout), f"keep_alive {model}")
        self._changed(model, "timeout_changed")

    def _arm_countdown(self, model: str, view: _ModelView) -> None:
        self._clear_countdown(view)
        if view.info.state != "ready" or view.in_flight:
            return
        timeout, _ = self.effective_timeout(model)
        if timeout is None:
            return
        since = view.idle_since if view.idle_since is not None else view.seen_at
        view.unload_at = since + timeout
        view.countdown = self.clock.call_at(view.unload_at, lambda: self._expired(model))

    def _clear_countdown(self, view: _ModelView) -> None:
        if view.countdown is not None:
            view.countdown.cancel()
        view.countdown = None
        view.unload_at = None

    def _expired(self, model: str) -> None:
        view = self.views.get(model)
        if view is None or view.in_flight:
            return
        self._clear_countdown(view)
        log.info("%s idle for its timeout: unloading it on remote %s", model, self.name)
        self._spawn(self._unload_idle(model), f"idle unload {model}")

    async def _unload_idle(self, model: str) -> None:
        try:
            await self.engine.unload(model)
        except (RemoteUnreachable, RemoteRefused, RemoteUnsupported) as exc:
            log.warning("could not unload %s on remote %s: %s", model, self.name, exc)
        view = self.views.get(model)
        if view is not None:
            view.keep_alive = NOT_GIVEN
        await self._refresh_now()

    # ---- watching ----------------------------------------------------------------------------

    async def _watch(self) -> None:
        failures = 0
        while True:
            try:
                await self._refresh()
                failures = 0
                events = self.engine.events()
                if events is None:
                    await self._sleep(POLL_SECONDS)
                    continue
                async for info in events:
                    if info is None:
                        await self._refresh()
                    else:
                        self._update(info)
                await self._sleep(1.0)  # the stream ended: list again and reconnect
            except asyncio.CancelledError:
                raise
            except (RemoteUnreachable, RemoteRefused) as exc:
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                self._unreachable(exc, delay)
                await self._sleep(delay, pokeable=False)
            except Exception:
                log.exception("watching remote %s failed; retrying", self.name)
                await self._sleep(RETRY_SECONDS[-1], pokeable=False)

    async def _sleep(self, seconds: float, *, pokeable: bool = True) -> None:
        self._poke.clear()
        if not pokeable:
            await asyncio.sleep(seconds)
            return
        try:
            async with asyncio.timeout(seconds):
                await self._poke.wait()
        except TimeoutError:
            pass

    async def _refresh_now(self) -> None:
        try:
            await self._refresh()
        except (RemoteUnreachable, RemoteRefused) as exc:
            log.info("listing remote %s after an action failed: %s", self.name, exc)
            self.poke()

    async def _refresh(self) -> None:
        infos = {info.model: info for info in await self.engine.list_models()}
        if self.status != "ok":
            log.info("remote %s (%s at %s) answers: %d models", self.name, self.engine.kind, self.config.url,
                     len(infos))
        self.status, self.error, self.retry_at = "ok", None, None
        for model in [m for m in self.views if m not in infos and not self.views[m].in_flight]:
            self._forget(model)
        for info in infos.values():
            self._update(info)

    def _update(self, info: RemoteModelInfo) -> None:
        view = self.views.get(info.model)
        if view is None:
            if len(self.views) >= MAX_MODELS:  # a listing has at most as many; an event stream could add more
                self.engine.report("too many", f"has more than {MAX_MODELS} models: the rest are left out")
                return
            view = self.views[info.model] = _ModelView(info, self.clock.now())
            self._engine_deadline(view, info)
            self._after_state(info.model, view, None)
            self._changed(info.model, "added")
            return
        old = view.info
        view.info = info
        view.listed = True
        moved = self._engine_deadline(view, info)
        if old == info and not moved:
            return
        self._after_state(info.model, view, old.state)
        self._changed(info.model, "loaded" if info.state == "ready" and old.state != "ready" else
                      "unloaded" if info.state == "unloaded" and old.state != "unloaded" else "changed")

    def _engine_deadline(self, view: _ModelView, info: RemoteModelInfo) -> bool:
        """Turns the engine's ``unloads_in`` (as of the listing) into a moment on this
        machine's clock; True when it moved by more than a second (a real change, not the
        time that passed between two listings)."""
        new = self.clock.now() + info.unloads_in if info.unloads_in is not None else None
        old = view.engine_unload_at
        if (new is None) == (old is None) and (new is None or abs(new - old) <= 1.0):  # type: ignore[operator]
            return False
        view.engine_unload_at = new
        return True

    def _after_state(self, model: str, view: _ModelView, old_state: str | None) -> None:
        """Keeps Siesta's countdown in step with what the engine says about the model."""
        if view.info.state == "unloaded" and not view.in_flight:
            view.keep_alive = NOT_GIVEN  # a request's keep_alive lasts for the idle period it set
        if not self.engine.siesta_counts_idle:
            return
        if view.info.state != "ready":
            self._clear_countdown(view)
            view.idle_since = None  # loaded again later (by anyone): count from when it is seen
        elif view.info.busy:
            self._clear_countdown(view)
            view.idle_since = None
        elif view.countdown is None and not view.in_flight:
            if view.idle_since is None:
                view.idle_since = self.clock.now()  # first seen loaded and idle: count from now
            self._arm_countdown(model, view)

    def _forget(self, model: str) -> None:
        view = self.views.pop(model)
        self._clear_countdown(view)
        self._emit(self.snapshot_or_gone(model), "removed")

    def _unreachable(self, exc: Exception, delay: float) -> None:
        first = self.status != "unreachable"
        self.status = "unreachable" if isinstance(exc, RemoteUnreachable) else "error"
        self.error = str(exc)
        self.retry_at = self.clock.now() + delay
        if first:
            log.warning("%s; retrying with back-off", exc)
        for model in [m for m in self.views if not self.views[m].in_flight]:
            self._forget(model)  # each leaves with a "removed" event; describe() says why

    def _changed(self, model: str, reason: str) -> None:
        if model in self.views:
            self._emit(self.snapshot(model), reason)

    def _action_name(self, what: str) -> str:
        return f"remote-{self.name}: {what}"

    def _spawn(self, coro: Any, what: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except (RemoteUnreachable, RemoteRefused, RemoteUnsupported) as exc:
                log.warning("remote %s: %s: %s", self.name, what, exc)

        task = asyncio.create_task(guarded(), name=self._action_name(what))
        self._actions.add(task)
        task.add_done_callback(self._actions.discard)
