"""The one place where the GUI meets the core: :class:`ManagerBridge`.

The bridge subscribes to the :class:`~app.core.manager.ModelManager`'s events, keeps the
latest snapshot of every model, and re-emits each event as the Qt signal
:attr:`ManagerBridge.modelEvent`. Widgets read snapshots and settings from it and ask it
to act; they never touch a ManagedModel or decide anything about a model's lifecycle.

Every action (load, unload, set a timeout or a setting) runs as an asyncio task on the
shared qasync loop, so the GUI never blocks. The bridge keeps each task referenced until
it ends, and reports a failure through :attr:`ManagerBridge.actionFailed` (the tray turns
that into a message), unless the caller awaits the task and handles errors itself, as the
settings dialog does to name the field that failed.

The manager is either this machine's :class:`~app.core.manager.ModelManager` or, for
``siesta --connect URL``, a :class:`~app.core.client.ManagerClient` that offers the
same interface for a Siesta elsewhere. :attr:`ManagerBridge.target` tells them apart, so
widgets can hide what only means something here (:attr:`ManagerBridge.is_local`), and
:attr:`ManagerBridge.connection_problem` says when that Siesta cannot be reached.

It also carries what the first-run dialogs need from the core: finding GGUF models and
writing recipes for them, importing another manager's configuration, and which
llama-server is used (whether it can run, its version, the command that builds one), and
``siesta doctor``'s report for Settings' "Copy diagnostics".
Blocking work (walking the disk, writing files) runs in a worker thread, never on the
GUI thread; ``llama-server --version`` runs as an asyncio subprocess and is cached. The
engine logic itself (which binary, its version, the build) is :mod:`app.core.engine.locate`; the
bridge only wraps it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from PySide6.QtCore import QObject, Signal

from app.core import discovery, importers
from app.core.client import ClientError, ManagerClient, Target
from app.core.config.durations import ModelTimeout
from app.core.config.paths import Paths
from app.core.discovery import FoundModel
from app.core.engine import locate as engine
from app.core.errors import PersistError, SettingFixed, UnknownModel
from app.core.importers import ImportConfigError, ImportResult
from app.core.manager import ModelManager
from app.core.models.model import ModelUnavailable
from app.ui import text
from app.ui.text import Snapshot

if TYPE_CHECKING:  # the Hub's modules (and httpx, 7 MB) load when the Download dialog first needs them
    from app.core.hub import pull as hub_pull
    from app.core.hub.client import HubClient, RepoInfo, RepoSummary

log = logging.getLogger(__name__)

T = TypeVar("T")

EXPECTED_ERRORS = (ModelUnavailable, PersistError, SettingFixed, UnknownModel, ImportConfigError, ValueError,
                   OSError, ClientError)
VERSION_TIMEOUT = engine.VERSION_TIMEOUT

__all__ = ["ManagerBridge", "EngineStatus", "FoundModel", "ImportResult", "ImportConfigError"]


class EngineStatus(engine.EngineStatus):
    """Which llama-server Siesta would run, and whether it can (the core's
    :class:`~app.core.engine.locate.EngineStatus`), with what is wrong in the GUI's words."""

    @property
    def problem(self) -> str | None:
        """What is wrong, in plain words (None when llama-server can run)."""
        return text.engine_problem(str(self.path) if self.path else None, self.usable, self.configured_by)


class ManagerBridge(QObject):
    """Turns manager events into Qt signals and GUI requests into manager tasks."""

    modelEvent = Signal(object)
    """Every manager event, as ``{"reason", "model", "time"}``, after :attr:`models` is updated."""

    systemChanged = Signal()
    """:attr:`system` has new figures (RAM and GPUs, see :meth:`refresh_system`)."""

    actionFailed = Signal(str, str)
    """``(title, message)`` of an action that failed and that no caller handled."""

    engineChanged = Signal()
    """A llama-server was installed: menus and banners that name it should look again."""

    connectionChanged = Signal()
    """The served Siesta elsewhere became reachable or not (see :attr:`connection_problem`)."""

    historyChanged = Signal()
    """:attr:`history` has a new reading of today's history (see :meth:`refresh_history`)."""

    originRefused = Signal(str)
    """The front door refused a page (its Origin, once per origin): the tray offers to allow it."""

    def __init__(self, manager: ModelManager | ManagerClient, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.manager = manager
        self.api_url = ""
        self.closing = False
        self.models: dict[str, Snapshot] = {s["name"]: s for s in manager.snapshots()}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsubscribe: Callable[[], None] | None = manager.subscribe(self._on_event)
        # Only this machine's front door refuses pages here; one elsewhere tells its own tray.
        self._unnotice: Callable[[], None] | None = (
            manager.subscribe_notices(self._on_notice) if isinstance(manager, ModelManager) else None)
        self._unwatch: Callable[[], None] | None = None
        if isinstance(manager, ManagerClient):
            self._unwatch = manager.watch_connection(self.connectionChanged.emit)
        self.system: dict[str, Any] | None = None  # RAM and GPUs, as GET /api/v1/system gives them
        self._system_task: asyncio.Task[Any] | None = None
        self.history: dict[str, Any] | None = None  # today's history, as GET /api/v1/history?day=today gives it
        self.history_problem: str | None = None  # why it could not be read (an older Siesta elsewhere)
        self._history_task: asyncio.Task[Any] | None = None

    # ---- what widgets read ----------------------------------------------------------------

    @property
    def paths(self) -> Paths | None:
        """This machine's folders of the manager; None for a Siesta elsewhere (nothing here is its)."""
        return self.manager.paths

    @property
    def target(self) -> Target | None:
        """The Siesta elsewhere that ``siesta --connect`` acts on; None for this machine's own."""
        return self.manager.target if isinstance(self.manager, ManagerClient) else None

    def _here(self) -> Paths:
        """This machine's folders, for what is done here only (finding, importing, downloading
        models, installing llama-server); ValueError for a Siesta elsewhere."""
        if self.paths is None:
            where = self.target.label if self.target is not None else "elsewhere"
            raise ValueError(f"this is done on the machine that runs Siesta ({where})")
        return self.paths

    @property
    def is_local(self) -> bool:
        """The manager runs in this process: its recipes, logs and llama-server are on this machine."""
        return self.target is None

    @property
    def connection_problem(self) -> str | None:
        """Why the Siesta elsewhere cannot be used now (it keeps being tried); None when it can,
        and always for this machine's own manager."""
        if not isinstance(self.manager, ManagerClient):
            return None
        connection = self.manager.connection
        if connection.ok:
            return None
        if connection.state == "connecting":
            return f"Connecting to {self.manager.target.label}..."
        return f"{connection.reason[:1].upper()}{connection.reason[1:]}; trying again"

    @property
    def settings(self) -> Any:
        """The settings in force (``app.core.config.settings.Settings``)."""
        return self.manager.loaded_settings.values

    def fixed_by(self, field: str) -> str | None:
        """The flag or environment variable that pins ``field`` for this run, if any."""
        return self.manager.loaded_settings.fixed_by(field)

    def now(self) -> float:
        return self.manager.clock.now()

    def refresh_system(self) -> None:
        """Reads RAM and GPU figures in the background (off the GUI thread); emits
        :attr:`systemChanged` when they arrive. One reading at a time."""
        if self.closing or (self._system_task is not None and not self._system_task.done()):
            return

        async def read() -> None:
            self.system = await self.manager.system_memory()
            self.systemChanged.emit()

        self._system_task = self.run(read(), "read memory figures", report=False)
        self._system_task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def given_back_summary(self) -> dict[str, Any] | None:
        """What idle and memory-pressure unloads gave back: ``{"today", "total", "since", ...}``
        in byte-seconds (the manager's in-memory history, or what the Siesta elsewhere last
        listed); None when it is not known."""
        if self.closing:
            return None
        if isinstance(self.manager, ManagerClient):
            return self.manager.given_back_summary()
        return self.manager.metrics.given_back_summary()

    def refresh_history(self) -> None:
        """Reads today's history per model in the background: :attr:`history` (``{"day",
        "models": [{"name", "loads", "loads_failed", "loaded", "idle", "unloaded",
        "given_back"}]}``) or :attr:`history_problem`; emits :attr:`historyChanged`. One
        reading at a time."""
        if self.closing or (self._history_task is not None and not self._history_task.done()):
            return

        async def read() -> None:
            manager = self.manager
            try:
                if isinstance(manager, ManagerClient):
                    self.history = await manager.history("today")
                else:
                    self.history = manager.metrics.day(None, [s["name"] for s in self.models.values()
                                                              if not s.get("remote")])
                self.history_problem = None
            except (ClientError, ValueError, ModelUnavailable) as exc:  # 404 from a Siesta without it
                self.history, self.history_problem = None, str(exc) or type(exc).__name__
            self.historyChanged.emit()

        self._history_task = self.run(read(), "read the history", report=False)
        self._history_task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def snapshots(self, *, fresh: bool = False) -> list[Snapshot]:
        """Every model, sorted by name; ``fresh`` re-reads them (memory changes without events)."""
        if fresh and not self.closing:
            self.models = {s["name"]: s for s in self.manager.snapshots()}
        return [self.models[name] for name in sorted(self.models)]

    def snapshot(self, name: str) -> Snapshot | None:
        return self.models.get(name)

    def remote_statuses(self) -> list[dict[str, Any]]:
        """Each remote the manager routes to, by name, as ``GET /api/v1/remotes`` gives them
        (``name``, ``kind``, ``url``, ``status``: connecting, ok, unreachable or error, ``error``,
        ``retry_in``, ``models``); read anew each time (a status changes without events
        when the remote has no model listed)."""
        return [] if self.closing else self.manager.remotes.describe()

    def countdown_deadlines(self, shown: Callable[[Snapshot], bool] = lambda s: True) -> list[float]:
        """The moments a visible countdown changes: each ``unload_at``, and for a load in
        progress its start (its "loading... N s" counter turns on the same whole-second phase)."""
        out = []
        for s in self.snapshots():
            if s.get("unload_at") is not None and shown(s):
                out.append(s["unload_at"])
            elif s["state"] == "loading" and s.get("loading_since") is not None:
                out.append(s["loading_since"] + 3600.0)  # any time on its whole-second phase
        return out

    @property
    def pending_tasks(self) -> int:
        return len(self._tasks)

    # ---- events ---------------------------------------------------------------------------

    def _on_event(self, event: dict[str, Any]) -> None:
        model = event["model"]
        name = model["name"]
        current = self.manager.listed_snapshot(name)
        if current is None:
            self.models.pop(name, None)  # its recipe is gone; these are its last unload events
        elif event["reason"] == "removed":
            # A recipe deleted and created again in one go: the old model's farewell must
            # not erase the new model of the same name.
            self.models[name] = current
        else:
            self.models[name] = model
        self.modelEvent.emit(event)

    def _on_notice(self, notice: dict[str, Any]) -> None:
        if notice.get("kind") == "origin_refused":
            self.originRefused.emit(notice["origin"])

    # ---- actions --------------------------------------------------------------------------

    def run(self, coro: Awaitable[T], what: str, *, report: bool = True) -> asyncio.Task[T]:
        """Runs ``coro`` as a task kept alive until it ends. With ``report``, a failure is
        logged and emitted as :attr:`actionFailed` (``what`` says what was being done:
        "load tiny"); else the caller must await the task and handle its error."""
        task: asyncio.Task[T] = asyncio.ensure_future(coro)  # type: ignore[assignment]
        task.set_name(f"ui: {what}")
        self._tasks.add(task)

        def done(t: asyncio.Task[T]) -> None:
            self._tasks.discard(t)
            if t.cancelled() or not report:
                return
            exc = t.exception()
            if exc is None:
                return
            if self.closing:
                log.info("%s: %s (while shutting down)", what, exc)
                return
            # Expected failures say all in their message; anything else is a bug: keep its traceback.
            log.warning("could not %s: %s", what, exc, exc_info=not isinstance(exc, EXPECTED_ERRORS))
            self.actionFailed.emit(f"Could not {what}", str(exc))

        task.add_done_callback(done)
        return task

    def load(self, name: str) -> asyncio.Task[Any]:
        return self.run(self.manager.load(name), f"load {name}")

    def unload(self, name: str) -> asyncio.Task[Any]:
        return self.run(self.manager.unload(name), f"unload {name}")

    def unload_all(self) -> asyncio.Task[Any]:
        return self.run(self.manager.unload_all(), "unload all models")

    def set_model_timeout(self, name: str, value: ModelTimeout, *, report: bool = True) -> asyncio.Task[Any]:
        """``value``: seconds, ``None`` (keep loaded) or :data:`USE_GLOBAL`."""
        return self.run(self.manager.set_model_timeout(name, value), f"set the timeout of {name}", report=report)

    def set_setting(self, field: str, raw: Any, *, report: bool = True) -> asyncio.Task[Any]:
        return self.run(self.manager.set_setting(field, raw), f"change {field}", report=report)

    def allow_origin(self, origin: str) -> asyncio.Task[Any]:
        """Adds a page's origin to ``allowed_origins`` (in force at once, written to settings.toml)."""
        return self.run(self.manager.allow_origin(origin), f"allow the page at {origin}")

    # ---- first run: models on this computer, other managers' configurations -----------------

    @property
    def has_recipes(self) -> bool:
        return bool(self.models)

    async def discover_models(self, *, home: Path | None = None, extra_dirs: Sequence[Path] = (),
                              env: Mapping[str, str] | None = None) -> tuple[list[FoundModel], dict[str, str]]:
        """The GGUF models on this computer (``discover_models``) and the recipes that
        already serve some of them (resolved path -> recipe name), read in a worker thread."""
        recipes_dir = self._here().recipes_dir
        folders = list(extra_dirs)

        def scan() -> tuple[list[FoundModel], dict[str, str]]:
            found = discovery.discover_models(home, folders, env)
            return found, discovery.configured_model_paths(recipes_dir)

        return await asyncio.to_thread(scan)

    async def create_recipes(self, models: Iterable[FoundModel]) -> tuple[list[Path], dict[str, str]]:
        """Writes a recipe for each model (never overwriting one) and lists them at once;
        returns the files written and the recipes that now serve models, as above."""
        chosen = list(models)
        recipes_dir = self._here().recipes_dir

        def write() -> tuple[list[Path], dict[str, str]]:
            created = discovery.create_recipes(chosen, recipes_dir)
            return created, discovery.configured_model_paths(recipes_dir)

        result = await asyncio.to_thread(write)
        self._reload_recipes()
        return result

    def import_candidates(self, home: Path | None = None) -> list[Path]:
        """Configurations of llama-swap or Lemonade in their usual places."""
        return importers.find_import_candidates(home)

    async def import_config(self, path: Path, *, home: Path | None = None,
                            env: Mapping[str, str] | None = None) -> ImportResult:
        """Imports a llama-swap or Lemonade configuration (in a worker thread); the new
        recipes are listed at once. ImportConfigError when the file is neither."""
        recipes_dir = self._here().recipes_dir
        result = await asyncio.to_thread(importers.import_config, path, recipes_dir, home=home, env=env)
        if result.created:
            self._reload_recipes()
        return result

    def recipe_of(self, name: str) -> Any:
        """A local model's recipe as read (``app.core.config.recipes.Recipe``); None elsewhere or when invalid."""
        return self.manager.recipe_of(name)

    def _reload_recipes(self) -> None:
        # The recipe watcher would find the new files within a moment; this lists them now.
        if not self.closing and not self.manager.closing:
            self.manager.reload_recipes()

    # ---- the engine: llama-server ---------------------------------------------------------------

    def engine_status(self) -> EngineStatus:
        """The llama-server that loads would run now (a few file checks; cheap). For a Siesta
        elsewhere there is none here (the dialogs that show it are hidden then)."""
        if self.paths is None or isinstance(self.manager, ManagerClient):
            return EngineStatus(None, False, None)
        status = engine.engine_status(self.paths, self.manager.loaded_settings)
        return EngineStatus(status.path, status.usable, status.configured_by, status.engine, status.engines)

    @property
    def engine_dir(self) -> Path:
        """Where "Install llama-server..." puts it: Siesta's data dir, where loads look for it."""
        return engine.engine_dir(self._here())

    def engine_build_command(self, dest: Path, gpu: str) -> list[str]:
        """The build as a subprocess (so it can be stopped): it prints ``[ 42%] text`` lines
        to stderr and the installed binary's path to stdout."""
        return engine.build_command(dest, gpu)

    def engine_build_env(self) -> dict[str, str]:
        """The build's environment, with this ``app`` package importable."""
        return engine.build_env()

    @staticmethod
    def build_tools_missing() -> list[str]:
        """What the build needs and this computer lacks: ``cmake``, ``a C++ compiler``."""
        return engine.build_tools_missing()

    @staticmethod
    def gpu_choices() -> list[str]:
        return engine.gpu_choices()

    @staticmethod
    def gpu_toolkits() -> list[str]:
        return engine.gpu_toolkits()

    def engine_changed(self) -> None:
        self.engineChanged.emit()

    async def engine_version(self, path: Path) -> str:
        """What ``path --version`` says, in one line; cached while the file stays the same."""
        return (await engine.llama_server_version(path)).text

    # ---- end --------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stops listening and waits for the actions still running (the manager's own
        shutdown makes pending loads give up quickly)."""
        self.closing = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._unnotice is not None:
            self._unnotice()
            self._unnotice = None
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ---- the Hugging Face Hub: "Download model..." ---------------------------------------------

    @property
    def recipes_dir(self) -> Path:
        return self._here().recipes_dir

    async def hub_client(self) -> HubClient:
        """A client for the Hub at ``$HF_ENDPOINT`` with the token ``$HF_TOKEN`` or ``hf auth
        login`` gives, made in a worker thread (finding the token imports huggingface_hub)."""
        from app.core.hub.client import HubClient

        return await asyncio.to_thread(HubClient)

    async def hub_search(self, client: HubClient, query: str) -> list[RepoSummary]:
        """GGUF repos on the Hub matching ``query``, most downloaded first (in a worker thread)."""
        return await asyncio.to_thread(client.search, query)

    async def hub_repo_info(self, client: HubClient, repo: str) -> RepoInfo:
        """A repo's files with their sizes (in a worker thread)."""
        return await asyncio.to_thread(client.repo_info, repo)

    async def pull_model(self, client: HubClient, ref: str, *, name: str | None, cancel: threading.Event,
                         progress: Callable[[int, int], None] | None = None,
                         status: Callable[[str], None] | None = None) -> hub_pull.PullResult:
        """``siesta pull`` in a worker thread; the new recipe is listed at once. ``progress``
        and ``status`` are called on this loop's thread, never the worker's (progress at most
        once per turn of the loop, with the latest figures). Setting ``cancel``, cancelling
        this task, or the bridge closing stops the download and keeps what has arrived."""
        from app.core.hub import pull as hub_pull

        loop = asyncio.get_running_loop()

        def on_status(line: str) -> None:  # in the worker thread
            if status is not None:
                loop.call_soon_threadsafe(status, line)

        result = await self._in_worker_with_progress(
            lambda on_progress: hub_pull.pull(ref, recipes_dir=self.recipes_dir, name=name, client=client,
                                              progress=on_progress, cancel=cancel, status=on_status),
            cancel, progress)
        self._reload_recipes()
        return result

    async def _in_worker_with_progress(self, work: Callable[[Callable[..., None]], T], cancel: threading.Event,
                                       progress: Callable[..., None] | None) -> T:
        """Runs ``work(on_progress)`` in a worker thread. ``on_progress(*figures)``, called
        there, reaches ``progress`` on this loop's thread at most once per turn, with the
        latest figures. Setting ``cancel``, cancelling this task, or the bridge closing (Quit:
        no download outlives Siesta) sets ``cancel``, which the work checks between chunks."""
        loop = asyncio.get_running_loop()
        latest: list[tuple[Any, ...]] = []
        lock = threading.Lock()

        def deliver() -> None:
            with lock:
                figures = latest.pop() if latest else None
            if figures is not None and progress is not None:
                progress(*figures)

        def on_progress(*figures: Any) -> None:  # in the worker thread
            with lock:
                scheduled = bool(latest)
                latest[:] = [figures]
            if not scheduled:
                loop.call_soon_threadsafe(deliver)

        task = asyncio.ensure_future(asyncio.to_thread(work, on_progress))
        try:
            while not task.done():
                await asyncio.wait([task], timeout=0.25)
                if self.closing:
                    cancel.set()
        except asyncio.CancelledError:
            cancel.set()
            await asyncio.gather(task, return_exceptions=True)  # the thread ends at its next chunk
            raise
        result = task.result()
        deliver()
        return result

    # ---- the engine: Settings' Update -------------------------------------------------------------

    async def engine_latest_tag(self) -> str:
        """llama.cpp's latest release tag (``"b6000"``) from the ``engine_releases_url``
        setting's API, asked in a worker thread."""
        from app.core.engine import release as engine_release

        url = self.settings.engine_releases_url
        return (await asyncio.to_thread(engine_release.fetch_release, url, "latest")).tag

    async def update_engine(self, *, cancel: threading.Event,
                            progress: Callable[[int, int, str], None] | None = None) -> Any:
        """``siesta engine update`` (``engine_install.update``) in a worker thread: the latest
        release beside the active engine, same backend, then the switch. Returns its Result,
        or None when the active engine is already the latest. ``progress(done, total, what)``
        is called on this loop's thread (at most once per turn, with the latest figures).
        Setting ``cancel``, cancelling this task, or the bridge closing stops it and leaves
        the active engine as it was. Emits :attr:`engineChanged` after a switch."""
        from app.core.engine import install as engine_install

        result = await self._in_worker_with_progress(
            lambda on_progress: engine_install.update(self._here().data_dir, self.settings.engine_releases_url,
                                                      progress=on_progress, cancel=cancel),
            cancel, progress)
        if result is not None:
            self.engine_changed()
        return result

    async def install_engine(self, *, cancel: threading.Event,
                             progress: Callable[[int, int, str], None] | None = None) -> Any:
        """``siesta engine install`` (``engine_install.install``, llama.cpp's prebuilt release
        for this machine) in a worker thread; returns its Result. ``progress(done, total, what)``
        is called from the worker thread."""
        from app.core.engine import install as engine_install

        return await asyncio.to_thread(engine_install.install, self._here().data_dir,
                                       self.settings.engine_releases_url, backend="auto",
                                       progress=progress, cancel=cancel)

    async def use_source_build(self) -> None:
        """Lets the source build in the data dir take over from an installed engine (in a worker
        thread: it writes the engines' state file)."""
        from app.core.engine import install as engine_install

        await asyncio.to_thread(engine_install.deactivate, self._here().data_dir)

    # ---- Settings' "Copy diagnostics": ``siesta doctor``'s report ---------------------------------

    async def diagnostics(self) -> str:
        """``siesta doctor``'s report in plain text (secrets never shown) for this machine's
        Siesta, with the settings in force, built in a worker thread: it asks llama-server, the
        GPUs, the desktop's tray, the port and the remotes. ValueError for a Siesta elsewhere."""
        from app.core.doctor import build_report

        paths = self._here()
        settings = self.manager.loaded_settings
        report = await asyncio.to_thread(build_report, paths, settings=settings)
        return report.text()

    # ---- a model's load settings: "Model settings..." -------------------------------------------

    def set_model_settings(self, name: str, *, args: list[str] | None = None, model: Path | None = None,
                           memory_estimate: Any = None, keep_memory_estimate: bool = False,
                           reload_now: bool = False, report: bool = True) -> asyncio.Task[Any]:
        """Writes a model's ``args``, model file and ``memory_estimate`` (None: automatic;
        ``keep_memory_estimate`` leaves it alone) to its recipe through the manager, which
        keeps the recipe's comments; ``reload_now`` restarts a running server with them."""
        from app.core.config.recipes import UNCHANGED

        estimate = UNCHANGED if keep_memory_estimate else memory_estimate
        return self.run(self.manager.set_model_settings(name, args=args, model=model, memory_estimate=estimate,
                                                        reload_now=reload_now),
                        f"save the settings of {name}", report=report)
