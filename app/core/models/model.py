"""One model's whole lifecycle, owned by one object: :class:`ManagedModel`.

Everything that can happen to a model (a request arriving or ending, a load, an unload
for any reason, a crash, a timeout change) goes through its ManagedModel, which owns the
server process, the in-flight count and the idle countdown.

The lifecycle is an explicit state machine: :data:`~app.core.models.lifecycle.TRANSITIONS`
lists every state and the steps that leave it, and :meth:`ManagedModel._move` is the
only place the state changes. The two passing states, ``loading`` and ``unloading``, each belong to one task
(the load or the unload) that ends in a settled state whatever happens to it: its
cleanup (stopping a server) runs to the end even when the task is cancelled again, and
a task that ends without moving on (cancelled before its first step, or a bug) is caught
by its done-callback, which lands the model in ``failed`` and logs why. So no path can
leave a model ``loading`` or ``unloading`` with nothing left to end it, and a waiter
never spins: every turn of its loop awaits the task that owns the state.

The model sees the rest of Siesta only through :class:`ModelHost` (admission, launching
a server, the clock, settings and the event stream), which the manager implements.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.core.config.clock import Clock, WallDeadline
from app.core.config.durations import NOT_GIVEN, USE_GLOBAL, KeepAlive, ModelTimeout, Timeout
from app.core.config.recipes import Recipe
from app.core.models.backend import BackendError, BackendProcess, looks_out_of_memory
from app.core.models.lease import Lease
from app.core.models.lifecycle import (
    CRASH_LOOP_COUNT,
    CRASH_LOOP_WINDOW,
    DRAINING_REASONS,
    PASSING_STATES,
    PRESSURE_GRACE,
    TRANSITIONS,
    CrashRecord,
    ModelState,
    ModelUnavailable,
    Step,
    UnloadReason,
)
from app.core.models.settling import result_or_none, run_to_end, uncancel

log = logging.getLogger(__name__)


class ModelHost(Protocol):
    """What a model needs from the rest of Siesta; the manager implements it."""

    clock: Clock

    @property
    def closing(self) -> bool: ...

    @property
    def global_timeout(self) -> Timeout: ...

    @property
    def load_timeout(self) -> float: ...

    @property
    def stop_timeout(self) -> float: ...

    def emit(self, model: ManagedModel, reason: str) -> None: ...

    async def admit(self, model: ManagedModel) -> None: ...

    async def launch(self, model: ManagedModel, recipe: Recipe) -> BackendProcess: ...

    async def free_memory_for(self, model: ManagedModel) -> bool:
        """A load failed for lack of memory: unload the other idle models; True if any went."""
        ...


@dataclass(eq=False)
class _LoadAttempt:
    """One load: its task, who asked for it, and how it ended (for the waiters)."""

    pinned: bool  # asked for by `load` or preload: not cancelled when its waiting requests leave
    backoff: float = 0.0  # seconds to wait first, after repeated crashes (requests only)
    skip_backoff: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    error: ModelUnavailable | None = None
    admitted: bool = False  # past admission: it holds a slot and starts its server
    loaded: bool = False  # it ended with the model ready
    cancel_requested: bool = False  # kept even if a library swallows the task's cancellation


class ManagedModel:
    """The single owner of one model's server process, requests and idle countdown."""

    def __init__(self, host: ModelHost, name: str, recipe: Recipe | None, recipe_error: str | None = None) -> None:
        self._host = host
        self.name = name
        self.recipe = recipe
        self.recipe_error = recipe_error
        self.state = ModelState.UNLOADED
        self.removed = False  # its recipe is gone; the manager forgets it once it is unloaded
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
        self._load: _LoadAttempt | None = None
        self._unload_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._crashes = CrashRecord()
        self._swap_gate: asyncio.Event | None = None  # closed while a swap waits for this model
        self._upstream_failed = False  # a request to the current process ended with a broken connection
        self.loading_since: float | None = None
        self.last_load_seconds: float | None = None
        self.last_unload_reason: str | None = None  # why it was last unloaded (until it loads again)
        self.unloaded_at: float | None = None  # when (clock time; until it loads again)
        self.last_used = 0.0

    # ---- the state machine -------------------------------------------------------------

    def _move(self, step: Step, reason: str | None = None, then: Callable[[], None] | None = None,
              *, quiet: bool = False) -> None:
        """The only place the state changes; runs ``then`` in the new state, then emits
        ``reason`` (default: the step's name) unless ``quiet``."""
        target = TRANSITIONS[self.state].get(step)
        if target is None:
            raise RuntimeError(f"model {self.name!r}: no step {step.value!r} from state {self.state.value!r}")
        self.state = target
        if target is not ModelState.LOADING:
            self.loading_since = None
        if then is not None:
            then()
        if not quiet:
            self._emit(reason or step.value)

    def _owner_task(self) -> asyncio.Task[Any] | None:
        """The task that owns a passing state (None in a settled state)."""
        if self.state is ModelState.LOADING:
            return self._load.task if self._load is not None else None
        if self.state is ModelState.UNLOADING:
            return self._unload_task
        return None

    def _task_ended(self, task: asyncio.Task[Any] | None) -> None:
        """Done-callback of every load and unload task, and the check a waiter makes when it
        finds a passing state whose task is gone: the safety net for the invariant that a
        passing state always has a live task to end it."""
        if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
            log.error("lifecycle task %s of %s failed", task.get_name(), self.name, exc_info=task.exception())
        if self.state not in PASSING_STATES or self._owner_task() is not task:
            return
        if task is not None and not task.done():
            return
        what = task.get_name() if task is not None else "its task"
        if self.state is ModelState.LOADING and task is not None and task.cancelled():
            # cancelled before its first step: nothing was started
            self._load = None
            self._move(Step.LOAD_CANCELLED, "load_cancelled")
            return
        log.error("model %s: %s ended in state %s without settling it; marking it failed",
                  self.name, what, self.state.value)
        process = self._process
        if process is not None and process.returncode is None:
            asyncio.get_running_loop().create_task(process.stop(0.0))  # nothing may outlive its model
        self._forget_process()
        self.error = f"internal error: {what} ended while {self.state.value}"
        if self._load is not None and self._load.error is None:
            self._load.error = ModelUnavailable(f"model {self.name!r} failed to load: {self.error}")
        self.state = ModelState.FAILED
        self.loading_since = None
        self._emit("load_failed")

    def _start_task(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{name}-{self.name}")
        task.add_done_callback(self._task_ended)
        return task

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
            return self._load is not None and self._load.admitted
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
        return self._crashes.in_loop

    @property
    def recipe_timeout(self) -> ModelTimeout:
        return self.recipe.unload_timeout if self.recipe else USE_GLOBAL

    def effective_timeout(self) -> tuple[Timeout, str]:
        """The timeout in force and where it came from: ``request``, ``recipe`` or ``global``."""
        if self._request_timeout is not NOT_GIVEN:
            return self._request_timeout, "request"
        recipe_timeout = self.recipe_timeout
        if recipe_timeout is not USE_GLOBAL:
            return recipe_timeout, "recipe"
        return self._host.global_timeout, "global"

    @property
    def keeps_loaded(self) -> bool:
        """Its timeout in force is ``never``: eviction passes it by."""
        return self.effective_timeout()[0] is None

    @property
    def unload_at(self) -> float | None:
        return self._deadline.when if self._deadline is not None and self._deadline.pending else None

    @property
    def countdown_armed(self) -> bool:
        return self._deadline is not None and self._deadline.pending

    def snapshot(self) -> dict[str, Any]:
        """The model's lifecycle as the API and the GUI show it (the manager adds memory and
        the log file)."""
        timeout, source = self.effective_timeout()
        unload_at = self.unload_at
        now = self._host.clock.now()
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
            "last_load_seconds": self.last_load_seconds,
            "last_unload_reason": self.last_unload_reason,
            "unloaded_at": self.unloaded_at,
            "pid": self.pid,
            "error": error,
            "exit_code": self.exit_code,
            "crash_loop": self._crashes.in_loop,
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
        self._host.emit(self, reason)

    # ---- requests ----------------------------------------------------------------------

    async def acquire(self, keep_alive: KeepAlive = NOT_GIVEN) -> Lease:
        """Waits until the model is ready (loading it if needed) and counts one request in flight."""
        while self._swap_gate is not None:  # a swap waits for this model: queue behind it
            await self._swap_gate.wait()
        self._waiting += 1
        self._stop_countdown()
        cold_since = None if self.state is ModelState.READY else self._host.clock.now()  # for Lease.load_wait
        try:
            await self._until_ready(pinned=False)
        except BaseException as exc:
            self._waiting -= 1
            attempt = self._load
            if (isinstance(exc, asyncio.CancelledError) and self._waiting == 0 and attempt is not None
                    and not attempt.pinned and self.state is ModelState.LOADING):
                self._cancel_load()  # every client that wanted this load has gone away
            self._maybe_start_countdown()
            raise
        self._waiting -= 1
        self._active += 1
        self._drained.clear()
        self.last_used = self._host.clock.now()
        assert self._process is not None
        if self._active == 1:
            self._emit("busy")
        waited = 0.0 if cold_since is None else max(0.0, self._host.clock.now() - cold_since)
        return Lease(self, self._process, self._generation, keep_alive, load_wait=waited)

    def _release(self, lease: Lease) -> None:
        if lease.released:
            return
        lease.released = True
        if lease.generation != self._generation:
            return  # its process is gone; the count was reset when it went
        self._active -= 1
        self._upstream_failed = self._upstream_failed or lease.upstream_failed
        self.last_used = self._host.clock.now()
        self._request_timeout = lease.keep_alive  # the last request to finish decides
        if self._active == 0:
            self._drained.set()
            if self.state is ModelState.READY and self._waiting == 0:
                self._start_countdown()
                self._emit("idle")

    # ---- swaps (max_loaded_models, groups) ----------------------------------------------

    def hold_new_requests(self) -> asyncio.Event:
        """A swap is waiting for this model to finish its requests in flight: new requests
        queue until the returned gate is opened (with :meth:`open_gate`), so the swap
        happens as soon as those in flight finish."""
        if self._swap_gate is None:
            self._swap_gate = asyncio.Event()
        return self._swap_gate

    def open_gate(self, gate: asyncio.Event) -> None:
        gate.set()
        if self._swap_gate is gate:
            self._swap_gate = None

    # ---- loading -------------------------------------------------------------------------

    def _check_can_load(self) -> None:
        if self.removed:
            raise ModelUnavailable(f"model {self.name!r} was removed (its recipe is gone)",
                                   code="model_not_found", retry_after=30)
        if self.recipe is None:
            raise ModelUnavailable(f"model {self.name!r} has no usable recipe: {self.recipe_error}",
                                   code="recipe_invalid", retry_after=30)
        if self._crashes.in_loop:
            raise ModelUnavailable(
                f"model {self.name!r} crashed {CRASH_LOOP_COUNT} times within "
                f"{CRASH_LOOP_WINDOW / 60:g} minutes (crash loop); load it by hand or edit its recipe "
                f"to try again. Last error: {self.error}",
                log_tail=self.log_tail, code="crash_loop", retry_after=60,
            )

    async def load(self) -> None:
        """Loads the model (a manual load, which also clears a crash loop and skips the
        crash back-off) and waits until ready."""
        self._crashes.in_loop = False
        await self._until_ready(pinned=True)

    async def _until_ready(self, *, pinned: bool) -> None:
        """Waits out an unload, joins or starts a load, until the model is ready. A ``pinned``
        caller (``load``, preload) keeps the load going even if every request waiting for it
        leaves. Every turn awaits the task that owns the state, so it never spins."""
        while self.state is not ModelState.READY:
            if self._host.closing:
                raise ModelUnavailable("Siesta is shutting down", code="shutting_down")
            if self.state in PASSING_STATES:
                task = self._owner_task()
                attempt = self._load if self.state is ModelState.LOADING else None
                if attempt is not None and pinned:
                    attempt.pinned = True
                    attempt.skip_backoff.set()
                if task is None or task.done():
                    self._task_ended(task)  # settles the state now (its done-callback may not have run yet)
                    await asyncio.sleep(0)
                    continue
                await asyncio.wait({task})
                if attempt is not None and attempt.error is not None and self.state is not ModelState.READY:
                    raise attempt.error
                if attempt is not None and attempt.loaded and pinned:
                    return  # loaded as asked, even if a timeout of 0 already unloads it again
            else:
                self._check_can_load()
                self._start_load(pinned=pinned)

    def _start_load(self, *, pinned: bool) -> None:
        attempt = _LoadAttempt(pinned=pinned, backoff=0.0 if pinned else self._crashes.backoff(self._host.clock.now()))
        self.last_unload_reason = self.unloaded_at = None
        self._load = attempt
        self.error = None
        self.exit_code = None
        self.loading_since = self._host.clock.now()
        attempt.task = self._start_task(self._run_load(attempt), "load")
        self._move(Step.LOAD, "loading")

    def _cancel_load(self) -> None:
        if self.state is ModelState.LOADING and self._load is not None and self._load.task is not None:
            self._load.cancel_requested = True
            self._load.task.cancel()

    async def _run_load(self, attempt: _LoadAttempt) -> None:
        """The load task: owns ``loading`` and always leaves it for ready, failed or unloaded."""
        recipe = self.recipe
        process: BackendProcess | None = None
        failure: BaseException | None = None
        try:
            assert recipe is not None
            await self._wait_backoff(attempt)
            for last_try in (False, True):
                await self._host.admit(self)
                attempt.admitted = True
                launching = asyncio.ensure_future(self._host.launch(self, recipe))
                try:
                    process = await asyncio.shield(launching)
                except asyncio.CancelledError:
                    # a server that was starting when the cancel came must still be stopped below
                    process = await run_to_end(result_or_none(launching))
                    raise
                try:
                    await process.wait_healthy(self._host.load_timeout)
                    break
                except BackendError as exc:
                    if last_try or not looks_out_of_memory(exc.log_tail):
                        raise
                    # the server could not allocate its memory: make room once, and try again
                    await run_to_end(process.stop(self._host.stop_timeout))
                    process, attempt.admitted = None, False
                    if not await self._host.free_memory_for(self):
                        raise
            if attempt.cancel_requested:
                raise asyncio.CancelledError  # asked to stop while loading: do not come up now
        except asyncio.CancelledError as exc:
            failure = exc
            uncancel()
        except Exception as exc:  # noqa: BLE001 - every failure lands in `failed` below
            failure = exc
        if failure is None and process is not None and recipe is not None:
            attempt.loaded = True
            self._loaded(process, recipe)
            return
        # Failed or cancelled: stop what was started, to the end, whatever cancels us now.
        if process is not None:
            try:
                await run_to_end(process.stop(self._host.stop_timeout))
            except Exception:  # noqa: BLE001 - the state must still settle
                log.exception("stopping the server of %s after a failed load failed", self.name)
            self.exit_code = process.returncode
        attempt.admitted = False
        if isinstance(failure, asyncio.CancelledError):
            self._move(Step.LOAD_CANCELLED, "load_cancelled")
            return
        assert failure is not None
        tail = failure.log_tail if isinstance(failure, (BackendError, ModelUnavailable)) else ""
        self.error = f"load failed: {failure}"
        self.log_tail = tail
        if isinstance(failure, BackendError) and process is not None:
            self._crashes.record(self._host.clock.now())
        if isinstance(failure, ModelUnavailable):
            attempt.error = failure
        else:
            if not isinstance(failure, BackendError):
                log.error("loading %s failed", self.name, exc_info=failure)
            attempt.error = ModelUnavailable(f"model {self.name!r} failed to load: {failure}", log_tail=tail)
        self._move(Step.LOAD_FAILED, "load_failed")

    async def _wait_backoff(self, attempt: _LoadAttempt) -> None:
        if attempt.backoff <= 0 or attempt.skip_backoff.is_set():
            return
        load_timeout = self._host.load_timeout
        if attempt.backoff >= load_timeout:
            raise ModelUnavailable(
                f"model {self.name!r} crashed {len(self._crashes)} times in a row; the next try waits "
                f"{attempt.backoff:g} s, longer than load_timeout ({load_timeout:g} s). Last error: {self.error}",
                log_tail=self.log_tail, code="crash_loop", retry_after=math.ceil(attempt.backoff))
        log.info("model %s crashed again: waiting %g s before reloading it", self.name, attempt.backoff)
        try:
            async with asyncio.timeout(attempt.backoff):
                await attempt.skip_backoff.wait()
        except TimeoutError:
            pass

    def _loaded(self, process: BackendProcess, recipe: Recipe) -> None:
        if self.loading_since is not None:
            self.last_load_seconds = max(0.0, self._host.clock.now() - self.loading_since)
        self._process = process
        self._launch_key = recipe.launch_key
        self._generation += 1
        self.last_used = self._host.clock.now()
        self._watch_task = asyncio.get_running_loop().create_task(self._watch(process), name=f"watch-{self.name}")
        self._request_timeout = NOT_GIVEN
        # the countdown starts before the event, so "loaded" carries its unload_at
        self._move(Step.LOADED, "loaded", then=self._maybe_start_countdown)

    # ---- the idle countdown -------------------------------------------------------------

    def _maybe_start_countdown(self) -> None:
        if self.is_idle and self._deadline is None:
            self._start_countdown()

    def _start_countdown(self) -> None:
        self.idle_since = self._host.clock.now()
        self._schedule_deadline()

    def _schedule_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        timeout, _ = self.effective_timeout()
        if timeout is None or self.idle_since is None:
            return
        self._deadline = self._host.clock.call_at(self.idle_since + timeout, self._on_deadline)

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

    def own_timeout_set(self) -> None:
        """The user set this model's own timeout (tray, dialog, CLI, API, or a hand edit of
        its ``unload_timeout``): it replaces a request's ``keep_alive`` for this idle period."""
        self._request_timeout = NOT_GIVEN
        self.timeout_changed()

    def recipe_changed(self, recipe: Recipe | None, error: str | None, *, own_timeout_set: bool = False) -> None:
        """A recipe edited on disk: timeout and group apply now; launch changes at the next load.
        A changed ``unload_timeout`` (or ``own_timeout_set``) replaces a request's keep_alive."""
        old = self.recipe
        if recipe is not None:
            self.recipe = recipe
        self.recipe_error = error
        self.removed = False
        if recipe is not None and (old is None or old != recipe):
            self._crashes.clear()
        if own_timeout_set or (recipe is not None and old is not None
                               and recipe.unload_timeout != old.unload_timeout):
            self.own_timeout_set()
        else:
            self.timeout_changed()

    # ---- unloading ------------------------------------------------------------------------

    async def unload(self, reason: UnloadReason) -> None:
        """Unloads for ``reason`` and waits until the process has exited; clears the countdown.
        A manual unload or a removal also dismisses an earlier failure (a crash during this
        unload's drain stays reported as ``failed``)."""
        self._stop_countdown()
        dismiss = self.state is ModelState.FAILED or (self.state is ModelState.LOADING)
        if self.state is ModelState.LOADING:
            task = self._owner_task()
            self._cancel_load()
            if task is not None:
                await asyncio.wait({task})
        if self.state is ModelState.READY:
            self._begin_unload(reason)
        if self.state is ModelState.UNLOADING:
            task = self._owner_task()
            if task is not None:
                await asyncio.wait({task})
        if dismiss and self.state is ModelState.FAILED and reason in (UnloadReason.MANUAL, UnloadReason.REMOVED):
            self._move(Step.DISMISS, reason.value, quiet=reason is UnloadReason.REMOVED)

    async def yield_slot(self, reason: UnloadReason) -> None:
        """Group exclusivity: a rival's load in progress finishes first (its waiting requests
        are served), then it unloads like a manual unload (in-flight requests get stop_timeout)."""
        task = self._owner_task() if self.state is ModelState.LOADING else None
        if task is not None:
            await asyncio.wait({task})
        await self.unload(reason)

    def _begin_unload(self, reason: UnloadReason) -> None:
        self._stop_countdown()
        self._unload_task = self._start_task(self._run_unload(reason), "unload")
        self._move(Step.UNLOAD, "unloading")

    async def _run_unload(self, reason: UnloadReason) -> None:
        """The unload task: owns ``unloading`` and always leaves it for unloaded or failed."""
        process = self._process
        crashed: int | None = None
        try:
            await run_to_end(self._stop_server(process, reason))
        except Exception:  # noqa: BLE001 - the state must still settle
            log.exception("stopping the server of %s failed", self.name)
        except asyncio.CancelledError:
            uncancel()
        if process is not None and not process.stopping and process.returncode is not None:
            crashed = process.returncode
        elif process is not None and process.returncode is None:
            log.error("the server of %s (pid %s) is still running after its unload", self.name, process.pid)
        self._forget_process()
        if crashed is not None:
            self._crashed(crashed, process)
            return
        # a removed model's unload is told by the manager: one "removed" once it is forgotten,
        # or "added" when its recipe came back meanwhile
        self.last_unload_reason = reason.value
        self.unloaded_at = self._host.clock.now()
        self._move(Step.STOPPED, reason.value, quiet=reason is UnloadReason.REMOVED)

    async def _stop_server(self, process: BackendProcess | None, reason: UnloadReason) -> None:
        stop_timeout = self._host.stop_timeout
        if reason is UnloadReason.MEMORY_PRESSURE:
            stop_timeout = min(stop_timeout, PRESSURE_GRACE)
        if process is None:
            return
        if self._active and reason in DRAINING_REASONS:
            drained = asyncio.ensure_future(self._drained.wait())
            exited = asyncio.ensure_future(process.wait_exit())
            try:
                await asyncio.wait({drained, exited}, timeout=stop_timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                drained.cancel()
                exited.cancel()
            if process.returncode is None and self._upstream_failed:
                # a request ended with a broken connection: the server may be exiting right now
                exiting = asyncio.ensure_future(process.wait_exit())
                await asyncio.wait({exiting}, timeout=min(1.0, stop_timeout))
                exiting.cancel()
            if process.returncode is not None:
                return  # it crashed while its requests drained: reported as a crash
        # the remaining requests (past stop_timeout) get a 502 when the server stops
        await process.stop(stop_timeout)

    def _forget_process(self) -> None:
        self._process = None
        self._upstream_failed = False
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
        if process.stopping or self._process is not process or self.state is not ModelState.READY:
            return  # an unload owns it (a crash during its drain is reported there)
        self._forget_process()
        self._crashed(code, process)

    def _crashed(self, code: int, process: BackendProcess | None) -> None:
        self.exit_code = code
        self.log_tail = process.log.tail_text() if process is not None else ""
        self.error = f"crashed: exit {code}"
        self._crashes.record(self._host.clock.now())
        self._move(Step.CRASHED, UnloadReason.CRASHED.value)

    async def close(self) -> None:
        """Shutdown: stops the server and every task and timer this model owns."""
        await self.unload(UnloadReason.SHUTDOWN)
        self._stop_countdown()


__all__ = ["CRASH_LOOP_COUNT", "CRASH_LOOP_WINDOW", "Lease", "ManagedModel", "ModelHost", "ModelState",
           "ModelUnavailable", "Step", "TRANSITIONS", "UnloadReason"]
