"""A stateful property test of the model lifecycle (issue 10, "make this class of bug hard
to write again").

Hypothesis drives a real :class:`ModelManager` with random sequences of steps: requests
that finish at once, hold their lease across later steps, or are cancelled at a random
point; manual loads and unloads (awaited, left running, or cancelled); timeout changes
(the model's own, the global one, ``keep_alive``); recipe edits, removal and re-creation;
``max_loaded_models`` and group changes; crashes; time passing and the wall clock jumping
(a suspended laptop). The servers are in-process fakes (:class:`FakeServer`), told per
model to become healthy at once or late or never, crash, run out of memory while loading,
ignore SIGTERM, hang while being killed, or fail their log writes, so an example takes a
fraction of a second.

After every step the invariants below are checked (see ``LifecycleMachine.check_*``):

* every step yields to the loop: a watchdog thread fails the run when the event loop is
  stuck for 1 s (100 ms with ``--soak``);
* at most one live server process per model name, removed models still stopping included;
* the state agrees with the process (``ready`` has a live one; ``loading``, ``unloaded``
  and ``failed`` have none; no live process without a model that owns it);
* a countdown is armed exactly when a model is ready, idle and has a finite timeout, and
  it is due at ``idle_since + timeout``;
* no lifecycle task is left running for a model that is not loading or unloading, and a
  loading or unloading model always has a live task that owns that state;
* the in-flight count is the number of leases held; nothing logs an internal error.

CI runs a bounded number of examples; ``pytest --soak`` runs many more.
"""

from __future__ import annotations

import _thread
import asyncio
import collections
import errno
import inspect
import itertools
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from app.core.config.clock import Clock
from app.core.config.durations import NOT_GIVEN, USE_GLOBAL, format_model_timeout
from app.core.config.paths import Paths
from app.core.config.recipes import Recipe
from app.core.config.settings import load_settings
from app.core.errors import PersistError, UnknownModel
from app.core.manager import ModelManager
from app.core.models.backend import BackendError
from app.core.models.lease import Lease
from app.core.models.model import ManagedModel, ModelState, ModelUnavailable

S = ModelState
PASSING = (S.LOADING, S.UNLOADING)
NAMES = ("a", "b", "c")
LIFECYCLE_TASK_PREFIXES = ("load-", "unload-", "watch-")
HEARTBEAT = 0.01  # seconds between the loop's heartbeats
EXPECTED_REQUEST_ERRORS = (ModelUnavailable, UnknownModel, PersistError)

# Bugs the machine found, each reduced to a test at the end of this file; while one was open
# the machine stepped around it (True). All are fixed now.
KNOWN_BUG_SHUTDOWN_ADMITS_BESIDE_REMOVED = False  # fixed: admission refuses during shutdown; a cancelled removal keeps its model
KNOWN_BUG_FSYNC_ON_THE_LOOP = False  # fixed: recipe and settings writes run in a worker thread

CI_EXAMPLES = 100
CI_STEPS = 30
SOAK_EXAMPLES = 1000
SOAK_STEPS = 50


# ---- the fake backend ------------------------------------------------------------------


@dataclass(frozen=True)
class Behavior:
    """How the next server started for a model behaves."""

    healthy_after: float | None = 0.0  # seconds after start; None: never healthy
    crash_after: float | None = None  # exits by itself this long after start
    crash_code: int = 1
    ignore_sigterm: bool = False  # stop() then waits its whole timeout and kills
    kill_hang: float = 0.0  # even a kill takes this long to end it (a hang in stop)
    log_fails: bool = False  # every write to its log fails with ENOSPC
    launch_fails: bool = False  # the program cannot be started at all
    launch_delay: float = 0.0  # starting the program takes this long
    out_of_memory: bool = False  # says it cannot allocate its buffers and exits while loading


faulty_behaviors = st.builds(
    Behavior,
    healthy_after=st.sampled_from([0.0, 0.003, 0.03, None]),
    crash_after=st.sampled_from([None, None, 0.002, 0.02, 0.1]),
    crash_code=st.sampled_from([1, 0, -11]),
    ignore_sigterm=st.booleans(),
    kill_hang=st.sampled_from([0.0, 0.08]),
    log_fails=st.booleans(),
    launch_fails=st.sampled_from([False, False, False, True]),
    launch_delay=st.sampled_from([0.0, 0.004]),
    out_of_memory=st.sampled_from([False, False, False, True]),
)
behaviors = st.one_of(
    st.just(Behavior()),  # a well-behaved server, ready at once
    st.builds(Behavior, healthy_after=st.sampled_from([0.003, 0.03]), ignore_sigterm=st.booleans(),
              log_fails=st.booleans()),  # well-behaved but slow to start or to stop
    faulty_behaviors,
)


class FakeLog:
    """A model's log: write() fails with ENOSPC when told to; the tail is always kept."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.tail: collections.deque[str] = collections.deque(maxlen=40)

    def write(self, text: str) -> None:
        if self.fail:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.tail.append(text)

    def keep_tail(self, text: str) -> None:
        self.tail.append(text)

    def tail_text(self, lines: int = 15) -> str:
        return "\n".join(list(self.tail)[-lines:])


class FakeWorld:
    """The fake operating system: which fake servers are alive, and what went wrong."""

    def __init__(self) -> None:
        self.behaviors: dict[str, Behavior] = {}
        self.live: dict[int, FakeServer] = {}
        self.started: list[FakeServer] = []
        self.violations: list[str] = []
        self.pids = itertools.count(5_000_000)  # above any real pid_max: no real process is ever named

    def violation(self, message: str) -> None:
        self.violations.append(message)

    def live_of(self, name: str) -> list[FakeServer]:
        return [p for p in self.live.values() if p.name == name]


class FakeServer:
    """An in-process model server with the BackendProcess interface."""

    def __init__(self, world: FakeWorld, owner: ManagedModel, behavior: Behavior) -> None:
        self.world = world
        self.owner = owner
        self.name = owner.name
        self.behavior = behavior
        self.pid = next(world.pids)
        self.returncode: int | None = None
        self.stopping = False
        self.base_url = f"http://127.0.0.1:1/fake/{self.name}/{self.pid}"
        self.log = FakeLog(behavior.log_fails)
        self.log_broken = False
        self.healthy = False
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = self._loop.create_future()
        self._changed = asyncio.Event()
        self._timers: list[asyncio.TimerHandle] = []
        others = world.live_of(self.name)
        if others:
            world.violation(f"a second server for {self.name!r} started (pid {self.pid}) while "
                            f"pid {others[0].pid} is still alive (owner state {others[0].owner.state.value})")
        world.live[self.pid] = self
        world.started.append(self)
        self._say(f"fake server {self.pid} starting")
        if behavior.healthy_after is not None:
            self._later(behavior.healthy_after, self._become_healthy)
        if behavior.out_of_memory:
            self._say("ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer (out of memory)")
            self._later(0.002, self.exit, 1)
        if behavior.crash_after is not None:
            self._later(behavior.crash_after, self.exit, behavior.crash_code)

    def _later(self, delay: float, callback: Any, *args: Any) -> None:
        self._timers.append(self._loop.call_later(delay, callback, *args))

    def _say(self, text: str) -> None:
        """Output goes to the log; when that fails it is only kept in the tail."""
        if not self.log_broken:
            try:
                self.log.write(text)
                return
            except OSError:
                self.log_broken = True
        self.log.keep_tail(text)

    def _become_healthy(self) -> None:
        if self.returncode is None:
            self.healthy = True
            self._say("listening")
            self._changed.set()

    def exit(self, code: int) -> None:
        """The process ends (by itself, or by a signal)."""
        if self.returncode is not None:
            return
        self.returncode = code
        for timer in self._timers:
            timer.cancel()
        self.world.live.pop(self.pid, None)
        self._say(f"exited with code {code}")
        self._exited.set_result(code)
        self._changed.set()

    def signal(self, sig: str) -> None:
        if self.returncode is not None:
            return
        if sig == "TERM":
            if self.behavior.ignore_sigterm:
                self._say("ignoring SIGTERM")
            else:
                self._later(0.001, self.exit, -15)
        else:
            self._later(self.behavior.kill_hang, self.exit, -9)

    # ---- the BackendProcess interface ----

    async def wait_healthy(self, timeout: float) -> None:
        deadline = self._loop.time() + timeout
        while True:
            if self.returncode is not None:
                raise BackendError(f"server exited with code {self.returncode} while loading", self.log.tail_text())
            if self.healthy:
                return
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                raise BackendError(f"server did not become healthy at /health within {timeout:g} s",
                                   self.log.tail_text())
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def wait_exit(self) -> int:
        return await asyncio.shield(self._exited)

    async def stop(self, timeout: float) -> int:
        self.stopping = True
        if self.returncode is None:
            self.signal("TERM")
            try:
                await asyncio.wait_for(asyncio.shield(self._exited), timeout)
            except asyncio.TimeoutError:
                self._say(f"did not stop within {timeout:g} s; killing")
                self.signal("KILL")
        return await asyncio.shield(self._exited)

    def memory(self) -> int | None:
        return 123_456_789 if self.returncode is None else None

    def load_output(self) -> list[str]:
        return list(self.log.tail)

    async def output_caught_up(self) -> None:
        """Its output is in memory already: nothing to wait for."""

    async def load_output_until(self, done: Any, limit: float) -> None:
        """Likewise."""

    def end_load_output(self) -> list[str]:
        return self.load_output()

    def process_tree(self) -> list[int]:
        return [self.pid]

    def __repr__(self) -> str:
        return f"<FakeServer {self.name} pid={self.pid} rc={self.returncode} stopping={self.stopping}>"


class FakeManager(ModelManager):
    """The real manager; only starting a server is faked."""

    world: FakeWorld
    config_epoch = 0  # counts changes of max_loaded_models and groups (see _check_room_for)

    async def launch(self, model: ManagedModel, recipe: Recipe) -> FakeServer:  # type: ignore[override]
        behavior = self.world.behaviors.get(model.name, Behavior())
        if behavior.launch_delay:
            await asyncio.sleep(behavior.launch_delay)
        if behavior.launch_fails:
            raise BackendError(f"{recipe.path}: field 'command': program not found: 'fake-server'")
        self._check_room_for(model)
        return FakeServer(self.world, model, behavior)

    def _check_room_for(self, model: ManagedModel) -> None:
        """Admission's promise, checked on the processes themselves: no server of the same
        group, and fewer than max_loaded_models servers of other models, are alive."""
        if getattr(model, "_admitted_epoch", None) != self.config_epoch:
            return  # the limit or a group changed while this load waited for admission
        others = [p for p in self.world.live.values() if p.name != model.name]
        limit = self.settings.max_loaded_models
        if limit > 0 and len(others) >= limit:
            self.world.violation(f"{model.name!r} starts a server while {len(others)} others are alive "
                                 f"({others}) and max_loaded_models = {limit}")
        group = model.recipe.group if model.recipe else None
        if group:
            rivals = [p for p in others if p.owner.recipe is not None and p.owner.recipe.group == group]
            if rivals:
                self.world.violation(f"{model.name!r} starts a server while its group {group!r} has {rivals}")

    async def admit(self, model: ManagedModel) -> None:
        epoch = self.config_epoch
        await super().admit(model)
        model._admitted_epoch = epoch if epoch == self.config_epoch else None  # type: ignore[attr-defined]


# ---- the loop watchdog --------------------------------------------------------------------


class LoopStuck(Exception):
    """Raised in the main thread when the event loop did not turn for too long."""


class Watchdog:
    """A thread that watches the loop's heartbeat while a step runs the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: float) -> None:
        self.loop = loop
        self.limit = limit
        self.beat = time.monotonic()
        self.running = False
        self.failure: str | None = None
        self._main = threading.get_ident()
        self._stop = threading.Event()
        self._handle: asyncio.TimerHandle | None = None
        self._tick()
        self._thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        self.beat = time.monotonic()
        self._handle = self.loop.call_later(HEARTBEAT, self._tick)

    def enter(self) -> None:
        self.beat = time.monotonic()
        self.running = True

    def leave(self) -> None:
        self.running = False

    def _watch(self) -> None:
        interval = min(0.05, self.limit / 10)
        while True:
            before = time.monotonic()
            if self._stop.wait(interval):
                return
            if time.monotonic() - before > interval + self.limit / 4:
                # this thread was not scheduled either: the whole process stood still (a long
                # garbage collection holding the GIL, a busy machine), not the loop alone
                self.beat = time.monotonic()
                continue
            if not self.running:
                continue
            stuck = time.monotonic() - self.beat
            if stuck <= self.limit:
                continue
            if self.failure is None:
                frame = sys._current_frames().get(self._main)
                stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no frame)"
                self.failure = (f"the event loop was stuck for {stuck:.2f} s (limit {self.limit:g} s); "
                                f"the main thread was at:\n{stack}")
            self.beat = time.monotonic()  # interrupt again only if it stays stuck
            _thread.interrupt_main(STUCK_SIGNAL)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        if self._handle is not None:
            self._handle.cancel()


# The signal the loop watchdog interrupts the main thread with (interrupt_main only simulates
# its arrival): SIGUSR1 where it exists, else SIGBREAK (Windows has no SIGUSR1).
STUCK_SIGNAL = signal.SIGUSR1 if hasattr(signal, "SIGUSR1") else signal.SIGBREAK


def _raise_loop_stuck(signum: int, frame: Any) -> None:
    raise LoopStuck("the event loop is stuck (interrupted by the watchdog)")


class ErrorRecords(logging.Handler):
    """Collects ERROR records of Siesta's own loggers: each is an internal error."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        self.records.append(text)


# ---- the state machine ----------------------------------------------------------------------


@dataclass(frozen=True)
class RecipeSpec:
    timeout: Any = USE_GLOBAL  # seconds, None (never) or USE_GLOBAL (key absent)
    group: str | None = None
    version: int = 0  # part of the command: a change makes a running server stale
    preload: bool = False
    broken: bool = False  # not valid TOML


recipe_specs = st.builds(
    RecipeSpec,
    timeout=st.sampled_from([USE_GLOBAL, 0, 0.01, 0.05, 1, None]),
    group=st.sampled_from([None, None, "g"]),
    version=st.integers(0, 2),
    preload=st.sampled_from([False, False, False, True]),
    broken=st.sampled_from([False] * 7 + [True]),
)

names = st.sampled_from(NAMES)
keep_alives = st.sampled_from([NOT_GIVEN, NOT_GIVEN, 0, 0.01, 0.05, 1, None])
model_timeouts = st.sampled_from([0, 0.01, 0.05, 1, None, USE_GLOBAL])
pauses = st.sampled_from([0, 0, 0.001, 0.005, 0.02])


def recipe_text(spec: RecipeSpec) -> str:
    if spec.broken:
        return '# a half-written recipe\nbackend = "command"\ncommand = ["fake-server", \n'
    lines = ["# recipe written by the state machine; the fake ignores the command",
             'backend = "command"',
             f'command = ["fake-server", "--port", "{{port}}", "--variant", "{spec.version}"]']
    if spec.timeout is not USE_GLOBAL:
        lines.append(f'unload_timeout = "{format_model_timeout(spec.timeout)}"')
    if spec.group:
        lines.append(f'group = "{spec.group}"')
    if spec.preload:
        lines.append("preload = true")
    return "\n".join(lines) + "\n"


@dataclass(eq=False)
class Request:
    """One client's request: waits for a lease, holds it ``hold`` seconds (or until a later
    step releases it, when ``hold`` is None), then releases it."""

    name: str
    keep_alive: Any
    hold: float | None
    task: asyncio.Task[None] | None = None
    lease: Lease | None = None
    cancelled_by_us: bool = False


@dataclass(eq=False)
class Operation:
    what: str
    task: asyncio.Task[Any]
    cancelled_by_us: bool = False


class LifecycleMachine(RuleBasedStateMachine):
    """Drives one ModelManager over fake servers; one instance per example."""

    watchdog_limit = 1.0
    base_dir: Path = Path(tempfile.gettempdir())

    held = Bundle("held")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._loop_exception)
        self.dir = Path(tempfile.mkdtemp(prefix="stateful-", dir=self.base_dir))
        self.paths = Paths(config_dir=self.dir / "config", log_dir=self.dir / "logs", data_dir=self.dir / "data")
        self.paths.recipes_dir.mkdir(parents=True)
        self.world = FakeWorld()
        self.watchdog = Watchdog(self.loop, self.watchdog_limit)
        self.errors = ErrorRecords()
        logging.getLogger("app").addHandler(self.errors)
        self.manager: FakeManager | None = None
        self.clock_offset = 0.0
        self.specs: dict[str, RecipeSpec | None] = {}
        self.requests: list[Request] = []
        self.operations: list[Operation] = []
        self.leases: set[Lease] = set()
        self.all_models: list[ManagedModel] = []
        self.events: list[dict[str, Any]] = []
        self.violations: list[str] = []

    # ---- running the loop ----

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """An exception nobody handled (a callback that raised, a task's lost exception)."""
        exc = context.get("exception")
        text = context.get("message", "")
        if exc is not None:
            text += "\n" + "".join(traceback.format_exception(exc))
        self.violations.append(f"unhandled on the loop: {text}")

    def run(self, awaitable: Any) -> Any:
        """Runs the loop until ``awaitable`` is done, under the watchdog."""
        self.watchdog.enter()
        try:
            return self.loop.run_until_complete(awaitable)
        except LoopStuck:
            raise AssertionError(self.watchdog.failure or "the event loop was stuck") from None
        finally:
            self.watchdog.leave()

    async def _pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def _iterations(self, count: int) -> None:
        for _ in range(count):
            await asyncio.sleep(0)

    async def _settle(self) -> None:
        await self._iterations(12)

    def _start(self, coro: Any, name: str) -> asyncio.Task[Any]:
        return self.loop.create_task(coro, name=name)

    # ---- set-up ----

    @initialize(
        global_timeout=st.sampled_from(["0s", "0.01s", "0.05s", "1s", "never"]),
        max_loaded=st.sampled_from([0, 1, 2]),
        load_timeout=st.sampled_from([0.3, 0.3, 0.3, 1.2]),
        specs=st.fixed_dictionaries({n: recipe_specs for n in NAMES}),
        fakes=st.fixed_dictionaries({n: behaviors for n in NAMES}),
    )
    def start(self, global_timeout: str, max_loaded: int, load_timeout: float,
              specs: dict[str, RecipeSpec | None], fakes: dict[str, Behavior]) -> None:
        self.paths.settings_file.write_text(
            f'global_unload_timeout = "{global_timeout}"\nmax_loaded_models = {max_loaded}\n', encoding="utf-8")
        for name, spec in specs.items():
            if spec is not None:
                self.paths.recipe_file(name).write_text(recipe_text(spec), encoding="utf-8")
            self.specs[name] = spec
        self.world.behaviors.update(fakes)

        loaded = load_settings(self.paths.settings_file, {"stop_timeout": 0.05, "load_timeout": load_timeout})

        async def make() -> FakeManager:
            clock = Clock(wall=lambda: time.time() + self.clock_offset, max_slice=0.02)
            options: dict[str, Any] = {}
            if "gpus_factory" in inspect.signature(ModelManager).parameters:
                options["gpus_factory"] = lambda: None  # no GPU probing for fake servers
            manager = FakeManager(self.paths, loaded, clock=clock, watch_files=False, use_reaper=False, **options)
            manager.world = self.world
            manager.subscribe(self.events.append)
            await manager.start()
            return manager

        self.manager = self.run(make())

    def teardown(self) -> None:
        try:
            if self.manager is not None and not self.watchdog.failure:
                self.run(self._shut_down())
        finally:
            try:
                self._cancel_everything()
            finally:
                logging.getLogger("app").removeHandler(self.errors)
                self.watchdog.close()
                self.loop.close()
                shutil.rmtree(self.dir, ignore_errors=True)
        self._raise_violations()

    async def _shut_down(self) -> None:
        assert self.manager is not None
        if KNOWN_BUG_SHUTDOWN_ADMITS_BESIDE_REMOVED:
            # test_no_server_starts_during_shutdown_beside_a_removed_model_still_stopping:
            # until it is fixed, let removals in progress end before closing
            removals = [t for t in self.manager._background if t.get_name().startswith("remove-")]
            if removals:
                await asyncio.wait(removals, timeout=5)
        closing = asyncio.ensure_future(self.manager.close())
        done, _ = await asyncio.wait({closing}, timeout=10)
        if not done:
            self.violations.append("manager.close() did not finish within 10 s")
            return
        closing.result()
        # every request and operation still waiting must end by itself now
        pending = {r.task for r in self.requests if r.task and not r.task.done()}
        pending |= {o.task for o in self.operations if not o.task.done()}
        if pending:
            _, still = await asyncio.wait(pending, timeout=3)
            for task in still:
                self.violations.append(f"{task.get_name()} still waits 3 s after shutdown")
        await self._settle()
        self._harvest()
        if self.world.live:
            self.violations.append(f"servers alive after shutdown: {list(self.world.live.values())}")
        for model in self.manager.models.values():
            if model.state not in (S.UNLOADED, S.FAILED) or model.pid is not None:
                self.violations.append(f"after shutdown {model.name} is {model.state.value} with pid {model.pid}")
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()
                    and t.get_name().startswith(LIFECYCLE_TASK_PREFIXES + ("remove-", "preload-"))]
        if leftover:
            self.violations.append(f"tasks still running after shutdown: {[t.get_name() for t in leftover]}")
            await asyncio.wait(leftover, timeout=2)  # let them end by themselves before the clean-up

    def _cancel_everything(self) -> None:
        if self.loop.is_closed():
            return
        tasks = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            try:
                self.run(asyncio.wait(tasks, timeout=2))
            except AssertionError:
                pass

    # ---- requests ----

    async def _serve(self, request: Request) -> None:
        assert self.manager is not None
        model = self.manager.get(request.name)
        lease = await model.acquire(request.keep_alive)
        if model.state is not S.READY or lease.process is not model.process:
            self.violations.append(f"{request.name}: acquire returned in state {model.state.value} "
                                   f"with process {lease.process} (model's: {model.process})")
        request.lease = lease
        self.leases.add(lease)
        if request.hold is None:
            return  # held until a later step releases it
        try:
            await asyncio.sleep(request.hold)
        finally:
            self._release(lease)

    def _release(self, lease: Lease) -> None:
        lease.release()
        self.leases.discard(lease)

    async def _release_soon(self, lease: Lease) -> None:
        self._release(lease)  # on the loop, as the front door does when a response ends

    def _start_request(self, name: str, keep_alive: Any, hold: float | None) -> Request:
        request = Request(name, keep_alive, hold)
        request.task = self._start(self._serve(request), f"request-{name}-{len(self.requests)}")
        self.requests.append(request)
        return request

    @rule(name=names, keep_alive=keep_alives, pause=pauses)
    def request(self, name: str, keep_alive: Any, pause: float) -> None:
        """A request that is served and ends at once."""
        self._start_request(name, keep_alive, 0)
        self.run(self._pause(pause))

    @rule(name=names, keep_alive=keep_alives, hold=st.sampled_from([0.002, 0.02, 0.1]), pause=pauses)
    def streaming_request(self, name: str, keep_alive: Any, hold: float, pause: float) -> None:
        """A request that streams its answer for a while, across the next steps."""
        self._start_request(name, keep_alive, hold)
        self.run(self._pause(pause))

    @rule(target=held, name=names, keep_alive=keep_alives, pause=pauses)
    def hold_request(self, name: str, keep_alive: Any, pause: float) -> Request:
        """A request that keeps its lease until a later step releases it."""
        request = self._start_request(name, keep_alive, None)
        self.run(self._pause(pause))
        return request

    @rule(request=consumes(held), pause=pauses)
    def release_held(self, request: Request, pause: float) -> None:
        """The held request ends: its lease is released, or, still waiting, it gives up."""
        assert request.task is not None
        if request.task.done():
            if request.lease is not None:
                self.run(self._release_soon(request.lease))
        else:
            request.cancelled_by_us = True
            request.task.cancel()
            self._wait_cancelled(request.task)
        self.run(self._pause(pause))

    @rule(name=names, keep_alive=keep_alives, iterations=st.integers(0, 25))
    def cancelled_request(self, name: str, keep_alive: Any, iterations: int) -> None:
        """A client that gives up after a few turns of the loop, wherever its request is."""
        request = self._start_request(name, keep_alive, 0.01)
        self.run(self._iterations(iterations))
        assert request.task is not None
        if not request.task.done():
            request.cancelled_by_us = True
            request.task.cancel()
            self._wait_cancelled(request.task)

    def _wait_cancelled(self, task: asyncio.Task[Any]) -> None:
        """A cancelled client leaves at once (within a few turns of the loop)."""
        self.run(asyncio.wait({task}, timeout=1.0))
        if not task.done():
            self.violations.append(f"{task.get_name()} did not end within 1 s of being cancelled")

    # ---- manual loads and unloads ----

    @rule(op=st.sampled_from(["load", "unload", "unload_all"]), name=names,
          mode=st.sampled_from(["await", "background", "cancel"]), iterations=st.integers(0, 15))
    def manual(self, op: str, name: str, mode: str, iterations: int) -> None:
        assert self.manager is not None
        if op == "load":
            coro = self.manager.load(name)
        elif op == "unload":
            coro = self.manager.unload(name)
        else:
            coro = self.manager.unload_all()
        operation = Operation(f"{op} {name}", self._start(coro, f"op-{op}-{name}-{len(self.operations)}"))
        self.operations.append(operation)
        if mode == "await":
            # an unload ends within a few stop_timeouts; a load within two rounds (the retry
            # after running out of memory) of admission and health check, each bounded by
            # load_timeout, queued behind at most two other loads
            bound = 10.0 if op == "load" else 3.0
            self.run(asyncio.wait({operation.task}, timeout=bound))
            if not operation.task.done():
                self.violations.append(f"a manual {op} of {name} did not finish within {bound:g} s")
        elif mode == "cancel":
            self.run(self._iterations(iterations))
            if not operation.task.done():
                operation.cancelled_by_us = True
                operation.task.cancel()
                self._wait_cancelled(operation.task)
        else:
            self.run(self._iterations(iterations))

    # ---- timeouts and settings ----

    @rule(name=names, value=model_timeouts)
    def set_model_timeout(self, name: str, value: Any) -> None:
        """The tray, the dialog, the CLI or the API sets a model's own timeout."""
        assert self.manager is not None
        manager = self.manager

        async def set_timeout() -> None:
            try:
                model = await manager.set_model_timeout(name, value)
            except (UnknownModel, PersistError):
                return
            # checked at once: a request that ends after the change decides the next idle period
            if model.effective_timeout()[1] == "request":
                self.violations.append(f"{name}: its own timeout was set to {value!r} but a request's "
                                       f"keep_alive is still in force")
            spec = self.specs.get(name)
            if spec is not None:
                self.specs[name] = replace(spec, timeout=value)

        self.run(set_timeout())

    @rule(value=st.sampled_from(["0s", "0.01s", "0.05s", "1s", "never"]))
    def set_global_timeout(self, value: str) -> None:
        assert self.manager is not None
        self.run(self.manager.set_setting("global_unload_timeout", value))

    @rule(value=st.sampled_from([0, 1, 2]))
    def set_max_loaded_models(self, value: int) -> None:
        assert self.manager is not None
        self.manager.config_epoch += 1
        self.run(self.manager.set_setting("max_loaded_models", value))

    @rule(global_timeout=st.sampled_from(["0s", "0.01s", "0.05s", "1s", "never"]), max_loaded=st.sampled_from([0, 1, 2]))
    def hand_edit_settings(self, global_timeout: str, max_loaded: int) -> None:
        """settings.toml edited by hand; the watcher applies it."""
        assert self.manager is not None
        self.manager.config_epoch += 1
        self.paths.settings_file.write_text(
            f'# edited by hand\nglobal_unload_timeout = "{global_timeout}"\nmax_loaded_models = {max_loaded}\n',
            encoding="utf-8")
        manager = self.manager

        async def reload() -> None:
            manager._reload_settings_file()

        self.run(reload())

    # ---- recipes ----

    def _reload(self, name: str) -> None:
        """What the recipe watcher does on the loop when the file changes."""
        assert self.manager is not None
        manager, path = self.manager, self.paths.recipe_file(name)

        async def reload() -> None:
            manager._reload_recipe_file(path)

        self.run(reload())

    @rule(name=names, spec=st.one_of(recipe_specs, recipe_specs, recipe_specs, st.none()))
    def recipe_file_changes(self, name: str, spec: RecipeSpec | None) -> None:
        """A recipe edited by hand, created, re-created after its removal, or (None) removed."""
        assert self.manager is not None
        if spec is None:
            self.remove_recipe(name)
            return
        old_group = self.specs[name].group if self.specs.get(name) else None
        if spec.group != old_group:
            self.manager.config_epoch += 1
        self.paths.recipe_file(name).write_text(recipe_text(spec), encoding="utf-8")
        self.specs[name] = spec
        manager, path = self.manager, self.paths.recipe_file(name)

        async def reload() -> None:
            before = manager.models.get(name)
            old_timeout = before.recipe.unload_timeout if before is not None and before.recipe is not None else None
            before_preload = before is not None and before.recipe is not None and before.recipe.preload
            before_removed = before is not None and before.removed
            manager._reload_recipe_file(path)
            model = manager.models[name]
            if (spec.preload and not spec.broken and (before is None or before_removed or not before_preload)
                    and not any(t.get_name() == f"preload-{name}" and not t.done() for t in manager._background)):
                self.violations.append(f"{name}: preload = true written at run time but no load started")
            # checked at once: a request that ends after the edit decides the next idle period
            if (not spec.broken and before is not None and before.recipe is not None
                    and old_timeout != spec.timeout and model.effective_timeout()[1] == "request"):
                self.violations.append(f"{name}: unload_timeout edited to {spec.timeout!r} but a request's "
                                       f"keep_alive is still in force")

        self.run(reload())

    def remove_recipe(self, name: str) -> None:
        self.paths.recipe_file(name).unlink(missing_ok=True)
        self.specs[name] = None
        self._reload(name)
        self.run(self._iterations(1))

    # ---- the servers and time ----

    @rule(name=names, behavior=behaviors)
    def set_behavior(self, name: str, behavior: Behavior) -> None:
        """How the next server of this model will behave."""
        self.world.behaviors[name] = behavior

    @rule(name=names, code=st.sampled_from([1, 0, -9, -11]), pause=pauses)
    def crash_now(self, name: str, code: int, pause: float) -> None:
        for server in self.world.live_of(name):
            server.exit(code)
        self.run(self._pause(pause))

    @rule(seconds=st.sampled_from([0.005, 0.02, 0.06, 0.15, 0.35]))
    def time_passes(self, seconds: float) -> None:
        self.run(self._pause(seconds))

    @rule(seconds=st.sampled_from([0.5, 2.0, 400.0]))
    def clock_jumps(self, seconds: float) -> None:
        """The wall clock jumps ahead (a laptop resumed from suspend)."""
        self.clock_offset += seconds
        self.run(self._pause(0.03))  # more than one max_slice: the deadlines look at the clock

    # ---- invariants ----

    @invariant()
    def invariants_hold(self) -> None:
        if self.manager is None:
            return
        if self.watchdog.failure:
            raise AssertionError(self.watchdog.failure)
        self._track_models()
        self._harvest()
        self.check_always()
        self._raise_violations()
        # the settled invariants: after the loop has had a few turns; a real breach persists
        problems: list[str] = []
        for _ in range(4):
            self.run(self._settle())
            self._track_models()
            problems = self.check_settled()
            if not problems:
                break
        self.violations.extend(problems)
        self.check_always()
        self._raise_violations()

    def _raise_violations(self) -> None:
        found = self.violations + self.world.violations + [f"logged an error: {r}" for r in self.errors.records]
        if self.watchdog.failure:
            found.insert(0, self.watchdog.failure)
        if found:
            self.violations, self.world.violations, self.errors.records = [], [], []
            raise AssertionError("lifecycle invariant broken:\n- " + "\n- ".join(found))

    def _track_models(self) -> None:
        assert self.manager is not None
        for model in self.manager.models.values():
            if not any(model is m for m in self.all_models):
                self.all_models.append(model)

    def _harvest(self) -> None:
        """Requests and operations may end only in the ways a client is told about."""
        for item in self.requests + self.operations:
            task = item.task
            if task is None or not task.done():
                continue
            if task.cancelled():
                if not item.cancelled_by_us:
                    self.violations.append(f"{task.get_name()} was cancelled by something other than its client")
                continue
            exc = task.exception()
            if exc is not None and not isinstance(exc, EXPECTED_REQUEST_ERRORS):
                text = "".join(traceback.format_exception(exc))
                self.violations.append(f"{task.get_name()} failed with an unexpected {exc!r}:\n{text}")
        self.requests = [r for r in self.requests if not (r.task and r.task.done())]
        self.operations = [o for o in self.operations if not o.task.done()]

    def _current(self, model: ManagedModel) -> bool:
        assert self.manager is not None
        return self.manager.models.get(model.name) is model

    def check_always(self) -> None:
        """Invariants that hold between any two callbacks of the loop."""
        assert self.manager is not None
        v = self.violations
        for name in NAMES:
            live = self.world.live_of(name)
            if len(live) > 1:
                v.append(f"{name} has {len(live)} live servers: {live}")
        for server in list(self.world.live.values()):
            owner = server.owner
            if not self._current(owner):
                v.append(f"{server} is alive but its model {owner.name} was forgotten ({owner.state.value})")
            if owner.state is S.LOADING:
                if owner.process is not None:
                    v.append(f"{owner.name} is loading with a process already set ({owner.process})")
            elif owner.state in (S.READY, S.UNLOADING):
                if owner.process is not server:
                    v.append(f"{server} is alive but {owner.name} ({owner.state.value}) runs {owner.process}")
            else:
                v.append(f"{server} is alive but its model {owner.name} is {owner.state.value}")
        expected_active: collections.Counter[int] = collections.Counter(
            id(lease.model) for lease in self.leases
            if not lease.released and lease.generation == lease.model._generation)
        for model in self.all_models:
            state = model.state
            if state in (S.UNLOADED, S.FAILED, S.LOADING) and model.pid is not None:
                v.append(f"{model.name} is {state.value} but has pid {model.pid}")
            if state is S.READY:
                process = model.process
                if process is None:
                    v.append(f"{model.name} is ready without a process")
                elif process.stopping:
                    v.append(f"{model.name} is ready with a process being stopped ({process})")
                elif process.returncode is not None and (model._watch_task is None or model._watch_task.done()):
                    v.append(f"{model.name} is ready but its process has exited ({process}) and nothing watches it")
            if state not in PASSING:
                load_task = model._load.task if model._load is not None else None
                for what, task in (("load", load_task), ("unload", model._unload_task)):
                    if task is not None and not task.done():
                        v.append(f"{model.name} is {state.value} but its {what} task still runs")
            if model.in_flight != expected_active[id(model)]:
                v.append(f"{model.name} counts {model.in_flight} requests in flight; "
                         f"{expected_active[id(model)]} leases are held")
            if state in (S.UNLOADED, S.FAILED) and model.in_flight:
                v.append(f"{model.name} is {state.value} with {model.in_flight} requests in flight")
            if not self._current(model) and (state not in (S.UNLOADED, S.FAILED) or model.pid is not None):
                v.append(f"forgotten model {model.name} is {state.value} (pid {model.pid})")
            if self._current(model) and not self.manager.closing:
                self._check_countdown(model)
        for name in NAMES:
            forgotten = sum(1 for m in self.all_models if m.name == name and not self._current(m))
            removed = sum(1 for e in self.events if e["reason"] == "removed" and e["model"]["name"] == name)
            if removed != forgotten:
                v.append(f"{name}: {removed} 'removed' events for {forgotten} forgotten models")

    def _check_countdown(self, model: ManagedModel) -> None:
        timeout, source = model.effective_timeout()
        should = model.state is S.READY and model.is_idle and timeout is not None
        if model.countdown_armed != should:
            self.violations.append(
                f"{model.name}: countdown armed={model.countdown_armed} but state={model.state.value}, "
                f"in_flight={model.in_flight}, waiting={model.waiting}, timeout={timeout!r} ({source})")
        elif should:
            assert model.idle_since is not None and model.unload_at is not None and timeout is not None
            if abs(model.unload_at - (model.idle_since + timeout)) > 1e-6:
                self.violations.append(
                    f"{model.name}: unloads at idle_since + {model.unload_at - model.idle_since:g} s, but its "
                    f"timeout is {timeout:g} s ({source})")

    def check_settled(self) -> list[str]:
        """Invariants that hold once the loop has had a few turns (done-callbacks have run,
        woken waiters have moved on)."""
        assert self.manager is not None
        problems = []
        running: dict[str, list[asyncio.Task[Any]]] = collections.defaultdict(list)
        for task in asyncio.all_tasks(self.loop):
            task_name = task.get_name()
            if not task.done() and task_name.startswith(LIFECYCLE_TASK_PREFIXES):
                running[task_name.split("-", 1)[1]].append(task)
        for model in self.all_models:
            state = model.state
            if state in PASSING:
                owner = model._owner_task()
                if owner is None or owner.done():
                    problems.append(f"{model.name} is {state.value} and no task owns that state ({owner})")
            elif model.waiting:
                problems.append(f"{model.name} is {state.value} with {model.waiting} requests still waiting")
        for name in NAMES:
            model = self.manager.models.get(name)
            allowed: set[asyncio.Task[Any]] = set()
            if model is not None:
                if model.state is S.LOADING and model._load is not None and model._load.task is not None:
                    allowed.add(model._load.task)
                if model.state is S.UNLOADING and model._unload_task is not None:
                    allowed.add(model._unload_task)
                if model.state in (S.READY, S.UNLOADING) and model._watch_task is not None:
                    allowed.add(model._watch_task)
            extra = [t.get_name() for t in running.get(name, []) if t not in allowed]
            if extra:
                state = model.state.value if model is not None else "forgotten"
                problems.append(f"{name} is {state} but lifecycle tasks still run: {extra}")
        return problems


# ---- the tests ---------------------------------------------------------------------------------


@pytest.fixture
def machine(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The machine class for this run: watchdog limit by ``--soak``, files under tmp_path."""
    soak = bool(request.config.getoption("--soak"))
    if KNOWN_BUG_FSYNC_ON_THE_LOOP:
        # test_saving_a_timeout_does_not_block_the_loop_on_a_slow_disk: until the writes
        # leave the loop's thread, a slow flush here must not fail the 100 ms watchdog
        monkeypatch.setattr(os, "fsync", lambda fd: None)
    old_handler = signal.signal(STUCK_SIGNAL, _raise_loop_stuck)
    machine = type("LifecycleRun", (LifecycleMachine,),
                   {"watchdog_limit": 0.1 if soak else 1.0, "base_dir": tmp_path})
    try:
        yield machine
    finally:
        signal.signal(STUCK_SIGNAL, old_handler)


def _settings(examples: int, steps: int) -> settings:
    # no explain phase: its line tracing slows every step several times over
    return settings(max_examples=examples, stateful_step_count=steps, deadline=None, database=None,
                    print_blob=True, phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


@pytest.mark.timeout(600)
def test_lifecycle_invariants_hold_under_random_steps(machine) -> None:
    run_state_machine_as_test(machine, settings=_settings(CI_EXAMPLES, CI_STEPS))


@pytest.mark.soak
@pytest.mark.timeout(0)
def test_lifecycle_invariants_soak(machine) -> None:
    run_state_machine_as_test(machine, settings=_settings(SOAK_EXAMPLES, SOAK_STEPS))


# ---- bugs the machine found, reduced to deterministic cases -----------------------------------
# Each failed on the code before its fix: the first two were fixed in 939f0c3, the other three
# in 9c4b689.


async def _fake_manager(paths: Paths, specs: dict[str, RecipeSpec], world: FakeWorld, **flags: Any) -> FakeManager:
    for name, spec in specs.items():
        paths.recipe_file(name).write_text(recipe_text(spec), encoding="utf-8")
    flags.setdefault("stop_timeout", 0.05)
    flags.setdefault("load_timeout", 1.0)
    options: dict[str, Any] = {}
    if "gpus_factory" in inspect.signature(ModelManager).parameters:
        options["gpus_factory"] = lambda: None
    manager = FakeManager(paths, load_settings(paths.settings_file, flags), watch_files=False,
                          use_reaper=False, **options)
    manager.world = world
    await manager.start()
    return manager


async def test_close_waits_for_a_removed_model_whose_server_is_still_stopping(paths: Paths) -> None:
    world = FakeWorld()
    manager = await _fake_manager(paths, {"a": RecipeSpec()}, world)
    model = manager.get("a")
    lease = await model.acquire()  # a request in flight: the removal drains it (up to stop_timeout)
    paths.recipe_file("a").unlink()
    manager._reload_recipe_file(paths.recipe_file("a"))
    await asyncio.sleep(0.01)
    assert model.state is S.UNLOADING and world.live_of("a")
    await manager.close()  # close() used to cancel the removal, forget the model and return
    alive = [repr(p) for p in world.live_of("a")]
    lease.release()
    await asyncio.sleep(0.2)  # (with the bug) let the orphaned unload end before the test's loop closes
    assert not alive, f"close() returned while the removed model's server still runs: {alive}"


async def test_manual_load_of_a_model_with_timeout_zero_returns(paths: Paths) -> None:
    world = FakeWorld()
    manager = await _fake_manager(paths, {"a": RecipeSpec(timeout=0)}, world)
    try:  # the load used to be unloaded before load() saw it ready, so load() started another, forever
        loading = asyncio.ensure_future(manager.load("a"))
        done, _ = await asyncio.wait({loading}, timeout=1.0)
        started = len(world.started)
        loading.cancel()
        assert done and started == 1, f"load() still running after 1 s; {started} servers started meanwhile"
    finally:
        await manager.close()


async def test_no_server_starts_during_shutdown_beside_a_removed_model_still_stopping(paths: Paths) -> None:
    paths.settings_file.write_text("max_loaded_models = 1\n", encoding="utf-8")
    world = FakeWorld()
    manager = await _fake_manager(paths, {"a": RecipeSpec(), "c": RecipeSpec()}, world, stop_timeout=1.0)
    lease = await manager.get("c").acquire()  # c holds the only slot, busy
    paths.recipe_file("c").unlink()
    manager._reload_recipe_file(paths.recipe_file("c"))  # c's removal drains its request (up to 1 s)
    loading = asyncio.ensure_future(manager.load("a"))  # waits in admission for c's slot
    await asyncio.sleep(0.05)
    assert manager.models["c"].state is S.UNLOADING and not world.live_of("a")
    closing = asyncio.ensure_future(manager.close())
    await asyncio.sleep(0.05)
    breaches = list(world.violations)  # recorded by FakeManager.launch as the server starts
    started_a = [p.pid for p in world.started if p.name == "a"]
    lease.release()
    await closing
    await asyncio.gather(loading, return_exceptions=True)
    assert not breaches, breaches
    assert not started_a, f"servers for 'a' started during shutdown: {started_a}"


async def test_raising_max_loaded_models_admits_a_waiting_load(paths: Paths) -> None:
    paths.settings_file.write_text("max_loaded_models = 1\n", encoding="utf-8")
    world = FakeWorld()
    manager = await _fake_manager(paths, {"a": RecipeSpec(), "c": RecipeSpec()}, world, load_timeout=2.0)
    lease = await manager.get("c").acquire()  # c holds the only slot, busy
    loading = asyncio.ensure_future(manager.load("a"))  # waits in admission for a slot
    try:
        await asyncio.sleep(0.05)
        assert not loading.done()
        await manager.set_setting("max_loaded_models", 2)  # room for both now
        done, _ = await asyncio.wait({loading}, timeout=0.5)
        assert done and loading.exception() is None, loading.exception() if done else "still waiting"
        assert manager.get("a").state is S.READY
    finally:
        lease.release()
        await manager.close()
        await asyncio.gather(loading, return_exceptions=True)


async def test_saving_a_timeout_does_not_block_the_loop_on_a_slow_disk(paths: Paths,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    world = FakeWorld()
    manager = await _fake_manager(paths, {"a": RecipeSpec()}, world)
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:  # a busy or spinning disk: a flush takes 300 ms
        time.sleep(0.3)
        real_fsync(fd)

    gaps: list[float] = []

    async def heartbeat() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    beat = asyncio.ensure_future(heartbeat())
    try:
        await asyncio.sleep(0.05)
        monkeypatch.setattr(os, "fsync", slow_fsync)
        await manager.set_model_timeout("a", 60.0)
        monkeypatch.setattr(os, "fsync", real_fsync)
        await asyncio.sleep(0.05)
    finally:
        beat.cancel()
        await manager.close()
    assert manager.get("a").recipe_timeout == 60.0
    assert max(gaps) < 0.1, f"the loop stood still for {max(gaps):.2f} s while a timeout was saved"
