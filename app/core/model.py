"""One model's whole lifecycle, owned by one object: :class:`ManagedModel`.

Everything that can happen to a model (a request arriving or ending, a load, an unload
for any reason, a crash, a timeout change) goes through its ManagedModel, which owns the
server process, the in-flight count and the idle countdown. State changes are made in
synchronous steps on the event loop, so a request arriving in the same instant as an
unload either keeps the model (the countdown is cancelled before it fires) or waits for
the unload to finish and loads it again: never both, never a hang.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .backend import BackendError, BackendProcess
from .clock import WallDeadline
from .durations import NOT_GIVEN, USE_GLOBAL, KeepAlive, ModelTimeout, Timeout
from .recipes import Recipe

if TYPE_CHECKING:
    from .manager import ModelManager

log = logging.getLogger(__name__)

CRASH_LOOP_COUNT = 3
CRASH_LOOP_WINDOW = 300.0


class ModelState(str, enum.Enum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    READY = "ready"
    UNLOADING = "unloading"
    FAILED = "failed"


class UnloadReason(str, enum.Enum):
    IDLE = "idle"
    MANUAL = "manual"
    EVICTED = "evicted"
    GROUP = "group"
    CRASHED = "crashed"
    REMOVED = "removed"
    SHUTDOWN = "shutdown"


class ModelUnavailable(Exception):
    """A model that cannot serve now; the front door answers 503 with ``retry_after``."""

    def __init__(self, message: str, *, log_tail: str = "", retry_after: int = 5, code: str = "model_unavailable") -> None:
        super().__init__(message)
        self.log_tail = log_tail
        self.retry_after = retry_after
        self.code = code


@dataclass(eq=False)
class Lease:
    """One request's hold on a ready model; release it exactly once when the request ends."""

    model: "ManagedModel"
    process: BackendProcess
    generation: int
    keep_alive: KeepAlive = NOT_GIVEN
    released: bool = field(default=False)

    @property
    def base_url(self) -> str:
        return self.process.base_url

    def release(self) -> None:
        self.model._release(self)


class ManagedModel:
    """The single owner of one model's server process, requests and idle countdown."""

    def __init__(self, manager: "ModelManager", name: str, recipe: Recipe | None, recipe_error: str | None = None) -> None:
        self._manager = manager
        self.name = name
        self.recipe = recipe
        self.recipe_error = recipe_error
        self.state = ModelState.UNLOADED
        self.error: str | None = None
        self.log_tail: str = ""
        self.exit_code: int | None = None
        self._process: BackendProcess | None = None
        self._launch_key: tuple[Any, ...] | None = None
        self._generation = 0
        self._active = 0  # requests being served by the current process
        self._waiting = 0  # requests waiting for a load or an unload to finish
        self._drained = asyncio.Event()
        self._drained.set()
        self._request_timeout: KeepAlive = NOT_GIVEN  # keep_alive of the last request to finish
        self.idle_since: float | None = None
        self._deadline: WallDeadline | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._unload_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._crashes: deque[float] = deque(maxlen=CRASH_LOOP_COUNT)
        self._crash_loop = False
        self.loading_since: float | None = None
        self.last_used = 0.0
        self._load_pinned = False  # asked for by `load` or preload: not cancelled with its waiters
        self._admitted = False  # a load past admission: it holds a slot and starts its server

    # ---- what the outside sees -------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._active

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def process(self) -> BackendProcess | None:
        return self._process

    @property
    def occupies_slot(self) -> bool:
        """Holds, is starting, or still holds a server process's memory (a load still waiting
        for admission does not)."""
        if self.state is ModelState.LOADING:
            return self._admitted
        return self.state in (ModelState.READY, ModelState.UNLOADING)

    @property
    def is_idle(self) -> bool:
        return self.state is ModelState.READY and self._active == 0 and self._waiting == 0

    @property
    def stale(self) -> bool:
        return (
            self._process is not None
            and self.recipe is not None
            and self._launch_key is not None
            and self._launch_key != self.recipe.launch_key
        )

    @property
    def crash_loop(self) -> bool:
        return self._crash_loop

    @property
    def recipe_timeout(self) -> ModelTimeout:
        return self.recipe.unload_timeout if self.recipe else USE_GLOBAL

    def effective_timeout(self) -> tuple[Timeout, str]:
        """The timeout in force and where it came from: ``request``, ``recipe`` or ``global``."""
        if self._request_timeout is not NOT_GIVEN:
            return self._request_timeout, "request"
        if self.recipe_timeout is not USE_GLOBAL:
            return self.recipe_timeout, "recipe"
        return self._manager.global_timeout, "global"

    @property
    def unload_at(self) -> float | None:
        return self._deadline.when if self._deadline is not None and self._deadline.pending else None

    def snapshot(self) -> dict[str, Any]:
        """The model as the API and the GUI show it."""
        timeout, source = self.effective_timeout()
        unload_at = self.unload_at
        now = self._manager.clock.now()
        state = self.state
        error = self.error
        if self.recipe is None and self.recipe_error:
            state, error = ModelState.FAILED, self.recipe_error
        elif self.recipe_error:
            error = self.recipe_error
        data: dict[str, Any] = {
            "name": self.name,
            "state": state.value,
            "stale": self.stale,
            "in_flight": self._active,
            "waiting": self._waiting,
            "unload_timeout": timeout,
            "timeout_source": source,
            "idle_since": self.idle_since,
            "unload_at": unload_at,
            "unloads_in": max(0.0, unload_at - now) if unload_at is not None else None,
            "loading_since": self.loading_since if state is ModelState.LOADING else None,
            "pid": self.pid,
            "memory": self._manager.memory_of(self),
            "error": error,
            "exit_code": self.exit_code,
            "crash_loop": self._crash_loop,
            "log_file": str(self._manager.paths.model_log(self.name)),
            "backend": self.recipe.backend if self.recipe else None,
            "group": self.recipe.group if self.recipe else None,
            "preload": self.recipe.preload if self.recipe else False,
        }
        if self.recipe_timeout is not USE_GLOBAL:
            data["recipe_unload_timeout"] = self.recipe_timeout
        if error and self.log_tail and state is ModelState.FAILED:
            data["log_tail"] = self.log_tail
        return data

    def _emit(self, reason: str) -> None:
        self._manager.emit(self, reason)

    # ---- requests ----------------------------------------------------------------------

    async def acquire(self, keep_alive: KeepAlive = NOT_GIVEN) -> Lease:
        """Waits until the model is ready (loading it if needed) and counts one request in flight."""
        self._waiting += 1
        self._stop_countdown()
        try:
            await self._until_ready(pinned=False)
        except BaseException as exc:
            self._waiting -= 1
            if (isinstance(exc, asyncio.CancelledError) and self._waiting == 0 and not self._load_pinned
                    and self.state is ModelState.LOADING and self._load_task is not None):
                self._load_task.cancel()  # every client that wanted this load has gone away
            self._maybe_start_countdown()
            raise
        self._waiting -= 1
        self._active += 1
        self._drained.clear()
        self.last_used = self._manager.clock.now()
        assert self._process is not None
        if self._active == 1:
            self._emit("busy")
        return Lease(self, self._process, self._generation, keep_alive)

    def _release(self, lease: Lease) -> None:
        if lease.released:
            return
        lease.released = True
        if lease.generation != self._generation:
            return  # its process is gone; the count was reset when it went
        self._active -= 1
        self.last_used = self._manager.clock.now()
        self._request_timeout = lease.keep_alive  # the last request to finish decides
        if self._active == 0:
            self._drained.set()
            if self.state is ModelState.READY and self._waiting == 0:
                self._start_countdown()
                self._emit("idle")

    # ---- loading -------------------------------------------------------------------------

    def _check_can_load(self) -> None:
        if self.recipe is None:
            raise ModelUnavailable(f"model {self.name!r} has no usable recipe: {self.recipe_error}",
                                   code="recipe_invalid", retry_after=30)
        if self._crash_loop:
            raise ModelUnavailable(
                f"model {self.name!r} crashed {CRASH_LOOP_COUNT} times within "
                f"{CRASH_LOOP_WINDOW / 60:g} minutes (crash loop); load it by hand or edit its recipe "
                f"to try again. Last error: {self.error}",
                log_tail=self.log_tail, code="crash_loop", retry_after=60,
            )

    async def load(self) -> None:
        """Loads the model (a manual load, which also clears a crash loop) and waits until ready."""
        self._crash_loop = False
        await self._until_ready(pinned=True)

    async def _until_ready(self, *, pinned: bool) -> None:
        """Waits out an unload, joins or starts a load, until the model is ready. A ``pinned``
        caller (``load``, preload) keeps the load going even if every request waiting for it leaves."""
        while self.state is not ModelState.READY:
            if self._manager.closing:
                raise ModelUnavailable("Siesta is shutting down", code="shutting_down")
            if self.state is ModelState.UNLOADING:
                await _outcome(self._unload_task)
            elif self.state is ModelState.LOADING:
                self._load_pinned = self._load_pinned or pinned
                await self._join_load()
            else:
                self._check_can_load()
                self._start_load(pinned=pinned)

    def _start_load(self, *, pinned: bool = False) -> None:
        self._load_pinned = pinned
        self.state = ModelState.LOADING
        self.loading_since = self._manager.clock.now()
        self.error = None
        self.exit_code = None
        self._load_task = asyncio.create_task(self._run_load(), name=f"load-{self.name}")
        # Waiters read the outcome; this keeps a load nobody waits for from logging "never retrieved".
        self._load_task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._emit("loading")

    async def _join_load(self) -> None:
        task = self._load_task
        assert task is not None
        await _outcome(task)
        if task.cancelled():
            return  # an unload or shutdown cancelled it: the caller's loop decides what next
        exc = task.exception()
        if exc is not None:
            raise exc

    async def _run_load(self) -> None:
        recipe = self.recipe
        assert recipe is not None
        process: BackendProcess | None = None
        self._admitted = False
        try:
            await self._manager.admit(self)
            self._admitted = True
            process = await self._manager.launch(self, recipe)
            await process.wait_healthy(self._manager.settings.load_timeout)
        except asyncio.CancelledError:
            if process is not None:
                await asyncio.shield(process.stop(self._manager.settings.stop_timeout))
            self.state = ModelState.UNLOADED
            self.loading_since = None
            self._emit("load_cancelled")
            raise
        except Exception as exc:
            if process is not None:
                await asyncio.shield(process.stop(self._manager.settings.stop_timeout))
                self.exit_code = process.returncode
            tail = exc.log_tail if isinstance(exc, (BackendError, ModelUnavailable)) else ""
            self.state = ModelState.FAILED
            self.loading_since = None
            self.error = f"load failed: {exc}"
            self.log_tail = tail
            if isinstance(exc, BackendError) and process is not None:
                self._record_crash()
            self._emit("load_failed")
            if isinstance(exc, ModelUnavailable):
                raise
            if not isinstance(exc, BackendError):
                log.exception("loading %s failed", self.name)
            raise ModelUnavailable(f"model {self.name!r} failed to load: {exc}", log_tail=tail) from exc
        self._process = process
        self._launch_key = recipe.launch_key
        self._generation += 1
        self.state = ModelState.READY
        self.loading_since = None
        self.last_used = self._manager.clock.now()
        self._watch_task = asyncio.create_task(self._watch(process), name=f"watch-{self.name}")
        self._request_timeout = NOT_GIVEN
        self._maybe_start_countdown()  # before the event, so "loaded" carries its unload_at
        self._emit("loaded")

    # ---- the idle countdown -------------------------------------------------------------

    def _maybe_start_countdown(self) -> None:
        if self.is_idle and self._deadline is None:
            self._start_countdown()

    def _start_countdown(self) -> None:
        self.idle_since = self._manager.clock.now()
        self._schedule_deadline()

    def _schedule_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        timeout, _ = self.effective_timeout()
        if timeout is None or self.idle_since is None:
            return
        self._deadline = self._manager.clock.call_at(self.idle_since + timeout, self._on_deadline)

    def _stop_countdown(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.idle_since = None

    def _on_deadline(self) -> None:
        self._deadline = None
        if self.is_idle:
            self._begin_unload(UnloadReason.IDLE)

    def timeout_changed(self) -> None:
        """Recomputes a running countdown at once (unloading now if it is already past)."""
        if self.is_idle and self.idle_since is not None:
            self._schedule_deadline()
        self._emit("timeout_changed")

    def recipe_changed(self, recipe: Recipe | None, error: str | None) -> None:
        """A recipe edited on disk: timeout and group apply now; launch changes at the next load."""
        old = self.recipe
        if recipe is not None:
            self.recipe = recipe
        self.recipe_error = error
        if recipe is not None and (old is None or old != recipe):
            self._crash_loop = False
        self.timeout_changed()

    # ---- unloading ------------------------------------------------------------------------

    async def unload(self, reason: UnloadReason) -> None:
        """Unloads for ``reason`` and waits until the process has exited; clears the countdown."""
        self._stop_countdown()
        if self.state is ModelState.LOADING and self._load_task is not None:
            self._load_task.cancel()
            await _outcome(self._load_task)
            return
        if self.state is ModelState.READY:
            self._begin_unload(reason)
        if self.state is ModelState.UNLOADING and self._unload_task is not None:
            await _outcome(self._unload_task)
        if self.state is ModelState.FAILED and reason in (UnloadReason.MANUAL, UnloadReason.REMOVED):
            self.state = ModelState.UNLOADED
            self._emit(reason.value)

    async def yield_slot(self, reason: UnloadReason) -> None:
        """Group exclusivity: a rival's load in progress finishes first (its waiting requests
        are served), then it unloads like a manual unload (in-flight requests get stop_timeout)."""
        if self.state is ModelState.LOADING and self._load_task is not None:
            await _outcome(self._load_task)
        await self.unload(reason)

    def _begin_unload(self, reason: UnloadReason) -> None:
        self._stop_countdown()
        self.state = ModelState.UNLOADING
        self._unload_task = asyncio.create_task(self._run_unload(reason), name=f"unload-{self.name}")
        self._emit("unloading")

    async def _run_unload(self, reason: UnloadReason) -> None:
        process = self._process
        stop_timeout = self._manager.settings.stop_timeout
        if self._active and reason in (UnloadReason.MANUAL, UnloadReason.GROUP, UnloadReason.SHUTDOWN):
            try:
                await asyncio.wait_for(self._drained.wait(), stop_timeout)
            except asyncio.TimeoutError:
                pass  # the remaining requests get a 502 when the server stops
        if process is not None:
            await process.stop(stop_timeout)
        self._forget_process()
        self.state = ModelState.UNLOADED
        self._emit(reason.value)

    def _forget_process(self) -> None:
        self._process = None
        self._launch_key = None
        self._generation += 1
        self._active = 0
        self._drained.set()
        self._request_timeout = NOT_GIVEN
        self._stop_countdown()
        if self._watch_task is not None and self._watch_task is not asyncio.current_task():
            self._watch_task.cancel()
        self._watch_task = None

    # ---- crashes ------------------------------------------------------------------------

    async def _watch(self, process: BackendProcess) -> None:
        code = await process.wait_exit()
        if process.stopping or self._process is not process:
            return
        self.exit_code = code
        self.log_tail = process.log.tail_text()
        self.error = f"crashed: exit {code}"
        self._forget_process()
        self.state = ModelState.FAILED
        self._record_crash()
        self._emit(UnloadReason.CRASHED.value)

    def _record_crash(self) -> None:
        now = self._manager.clock.now()
        self._crashes.append(now)
        if len(self._crashes) == CRASH_LOOP_COUNT and now - self._crashes[0] <= CRASH_LOOP_WINDOW:
            self._crash_loop = True
            self._crashes.clear()

    async def close(self) -> None:
        """Shutdown: stops the server and every task and timer this model owns."""
        await self.unload(UnloadReason.SHUTDOWN)
        self._stop_countdown()


async def _outcome(task: asyncio.Task[Any] | None) -> None:
    """Waits for ``task`` to finish without taking on its result, error or cancellation."""
    if task is not None and not task.done():
        await asyncio.wait({task})

