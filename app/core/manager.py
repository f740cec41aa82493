"""The model manager: the set of models, the policies between them, and their events.

Each model's lifecycle belongs to its :class:`~app.core.models.model.ManagedModel`; the manager
owns what spans models: which recipes exist (kept in step with the recipe folder by a
file watcher), admission of a load (group exclusivity and ``max_loaded_models`` LRU
eviction), the global timeout, persistence of timeout changes, and the event stream that
the HTTP API, the CLI's ``ps --watch`` and the tray observe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from app.core.config.atomic_write import in_order
from app.core.config.clock import Clock
from app.core.config.durations import ModelTimeout, Timeout, format_duration
from app.core.config.memory_limits import MemoryLimit
from app.core.config.paths import Paths, engine_cache_dir
from app.core.config.recipes import (
    UNCHANGED,
    Recipe,
    RecipeError,
    is_valid_name,
    read_recipe,
    scan_recipe_files,
    write_recipe_settings,
    write_recipe_timeout,
)
from app.core.config.settings import (
    MEMORY_SETTINGS,
    RUNTIME_SETTABLE,
    LoadedSettings,
    SettingsError,
    read_settings_file,
    validate_setting,
)
from app.core.config.toml_edit import TomlEditError, set_toml_key
from app.core.config.watcher import ConfigWatcher
from app.core.engine.locate import find_llama_server
from app.core.errors import PersistError, SettingFixed, UnknownModel
from app.core.memory.admission import Admission
from app.core.memory.book import MemoryBook
from app.core.memory.gpus import GpuMemory
from app.core.memory.pressure import PressureWatch
from app.core.memory.relief import MemoryRelief
from app.core.metrics.history import HistoryFile
from app.core.metrics.recorder import Recorder, held_figures
from app.core.models.backend import BackendProcess, BoundedLog, build_launch, free_port
from app.core.models.model import ManagedModel, ModelState, ModelUnavailable, UnloadReason
from app.core.models.reaper import ProcessReaper
from app.core.remotes import AmbiguousModel, ModelNameTooLong, Remote, RemoteSet, parse_remotes

log = logging.getLogger(__name__)

EventCallback = Callable[[dict[str, Any]], None]
LATEST_TAG = ":latest"  # the tag Ollama's clients give a model name that has none
MAX_ORIGIN_NOTICES = 20  # distinct refused origins told per run: a page could make up many


class ModelManager:
    """Owns every ManagedModel and the rules between them; one per Siesta instance."""

    def __init__(
        self,
        paths: Paths,
        settings: LoadedSettings,
        *,
        clock: Clock | None = None,
        watch_files: bool = True,
        use_reaper: bool = True,
        gpus_factory: Callable[[], GpuMemory | None] = GpuMemory,
    ) -> None:
        self.paths = paths
        self.loaded_settings = settings
        self.clock = clock or Clock()
        self.models: dict[str, ManagedModel] = {}
        self.closing = False
        self._started = False  # the first reading of the recipes is done; later ones preload at once
        self._watch_files = watch_files
        self._use_reaper = use_reaper
        self._reaper: ProcessReaper | None = None
        self._subscribers: list[EventCallback] = []
        self._notice_subscribers: list[EventCallback] = []
        self._refused_origins: set[str] = set()
        self.memory = MemoryBook(paths.memory_file, gpus_factory, on_measured=self._measured)
        # counts, the history file and memory given back (app/core/metrics), fed by every event
        self.metrics = Recorder(HistoryFile(paths.history_file), self.clock.now,
                                lambda name: held_figures(self.memory, self.models.get(name)))
        self._admission = Admission(lambda: list(self.models.values()), lambda: self.settings, self.memory,
                                    lambda: self._changed, lambda: self.closing, self.clock.now)
        self._relief = MemoryRelief(lambda: list(self.models.values()), lambda: self.settings, self.memory, self.emit,
                                    self.clock.now)
        self._pressure = PressureWatch(self._relief.check,
                                       lambda: any(m.process is not None for m in self.models.values()),
                                       interval=lambda: self._relief.poll_interval)
        self._changed = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._watcher_task: asyncio.Task[None] | None = None
        self.http: aiohttp.ClientSession = None  # type: ignore[assignment]  # created in start()
        self.remotes = RemoteSet(paths.settings_file, self.clock, lambda: self.global_timeout, self._emit_remote,
                                 load_timeout=lambda: self.settings.load_timeout)
        self.started_at = time.time()
        self.restart_pending: set[str] = set()  # settings saved to the file that apply at the next start

    # ---- settings ----------------------------------------------------------------------

    @property
    def settings(self):  # noqa: ANN201 - app.core.config.settings.Settings
        return self.loaded_settings.values

    @property
    def global_timeout(self) -> Timeout:
        return self.settings.global_unload_timeout

    @property
    def load_timeout(self) -> float:
        return self.settings.load_timeout

    @property
    def stop_timeout(self) -> float:
        return self.settings.stop_timeout

    def llama_server_path(self) -> Path | None:
        return find_llama_server(self.settings.llama_server, self.paths.data_dir, engine_cache_dir())

    # ---- start and stop ----------------------------------------------------------------

    async def start(self) -> None:
        """Reads the recipes, starts the watcher and the preloads. Does not load anything else."""
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True),
            auto_decompress=False,
            # aiohttp's default cuts every request at 5 minutes; a long generation is normal here.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
        )
        if self._use_reaper:
            self._reaper = ProcessReaper()
        self.paths.recipes_dir.mkdir(parents=True, exist_ok=True)
        self.reload_recipes()
        self._reload_remotes()
        self.remotes.start()  # in the background: a remote that does not answer never delays start-up
        if self._watch_files:
            self._watcher_task = asyncio.create_task(self._watch_config(), name="recipe-watcher")
        self._pressure.start()
        for model in self.models.values():
            if model.recipe is not None and model.recipe.preload:
                self._spawn(self._preload(model), f"preload-{model.name}")
        self.metrics.start()
        self._started = True

    async def close(self) -> None:
        """Unloads every model (reason ``shutdown``) and stops every task; leaves no child behind."""
        if self.closing:
            return
        self.closing = True
        self._changed.set()  # a load waiting in admission sees the shutdown now
        models = list(self.models.values())  # removed ones still stopping too: cancelling their removal forgets them
        for task in list(self._background) + ([self._watcher_task] if self._watcher_task else []):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._watcher_task is not None:
            await asyncio.gather(self._watcher_task, return_exceptions=True)
        await asyncio.gather(*(m.close() for m in models), self.remotes.close(), return_exceptions=True)
        self.metrics.stop()
        await self._pressure.stop()
        await self.memory.close()
        if self.http is not None:
            await self.http.close()
        if self._reaper is not None:
            self._reaper.close()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _preload(self, model: ManagedModel) -> None:
        try:
            await model.load()
        except ModelUnavailable as exc:
            log.warning("preload of %s failed: %s", model.name, exc)

    # ---- events ------------------------------------------------------------------------

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Calls ``callback(event)`` on every state change; returns the function that unsubscribes."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def emit(self, model: ManagedModel, reason: str, detail: dict[str, Any] | None = None) -> None:
        """Tells every subscriber that ``model`` changed for ``reason``; ``detail``, when given,
        goes along as the event's ``detail`` (e.g. what a pressure episode gave back)."""
        self._changed.set()
        self._changed = asyncio.Event()
        self._observe(model, reason)
        self.metrics.observe(model, reason)
        if not self._subscribers:
            return
        event = {"reason": reason, "model": self.snapshot_of(model), "time": self.clock.now()}
        if detail is not None:
            event["detail"] = detail
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # a broken observer must not break the manager
                log.exception("event subscriber failed")

    def _emit_remote(self, snapshot: dict[str, Any], reason: str) -> None:
        """A remote model changed (:mod:`app.core.remotes`): the same event as a local one,
        its ``model`` carrying ``remote``."""
        event = {"reason": reason, "model": snapshot, "time": self.clock.now()}
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("event subscriber failed")

    # ---- notices: what the user is told that is no model's event --------------------------

    def subscribe_notices(self, callback: EventCallback) -> Callable[[], None]:
        """Calls ``callback(notice)`` for each notice (``{"kind": "origin_refused", "origin":
        ...}``: the front door refused a page); returns the function that unsubscribes."""
        self._notice_subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._notice_subscribers:
                self._notice_subscribers.remove(callback)

        return unsubscribe

    def origin_refused(self, origin: str) -> None:
        """The front door refused a request for its Origin: a notice, once per origin (and
        for at most :data:`MAX_ORIGIN_NOTICES` origins a run)."""
        if origin in self._refused_origins or len(self._refused_origins) >= MAX_ORIGIN_NOTICES:
            return
        self._refused_origins.add(origin)
        log.info("refused a request from the page at %s (not in allowed_origins)", origin)
        for callback in list(self._notice_subscribers):
            try:
                callback({"kind": "origin_refused", "origin": origin})
            except Exception:
                log.exception("notice subscriber failed")

    async def allow_origin(self, origin: str) -> None:
        """Adds ``origin`` to ``allowed_origins``, in force at once and written to settings.toml."""
        current = list(self.settings.allowed_origins)
        if origin not in current:
            await self.set_setting("allowed_origins", [*current, origin])

    def snapshot_of(self, model: ManagedModel) -> dict[str, Any]:
        """A model as the API, the CLI and the GUI show it: its lifecycle, its memory and its log file."""
        data = model.snapshot()
        use = self.memory.use_of(model.name) if model.process is not None else None
        estimate = self.memory.estimate_of(model.recipe)
        data["memory"] = use.ram if use is not None else None
        data["vram"] = use.vram if use is not None else None
        data["memory_by_device"] = use.by_device() if use is not None else None
        data["memory_estimate"] = estimate.total if estimate is not None else None
        data["memory_estimate_source"] = estimate.source if estimate is not None else None
        data["log_file"] = str(self.paths.model_log(model.name))
        data["given_back"] = self.metrics.given_back_of(model.name)  # byte-seconds today
        return data

    def _observe(self, model: ManagedModel, reason: str) -> None:
        """Keeps the memory book in step with the models: a load is measured once ready; an
        unloaded model's figures go."""
        if reason == "loaded" and model.process is not None and model.recipe is not None:
            self.memory.measure_load(model.name, model.recipe, model.process)
            self._pressure.wake()  # watching for memory pressure starts with the first loaded model
        elif model.process is None:
            self.memory.unloaded(model.name)

    def _measured(self, name: str) -> None:
        """A load's memory is measured (off the loop, just after ``loaded``): event ``measured``."""
        model = self.models.get(name)
        if model is not None and model.process is not None:
            self.emit(model, "measured")

    async def system_memory(self) -> dict[str, Any]:
        """``GET /api/v1/system``: RAM and each GPU, and what Siesta's models use there."""
        uses = {m.name: u for m in self.models.values() if (u := self.memory.use_of(m.name)) is not None}
        return await self.memory.system(uses)

    # ---- models ------------------------------------------------------------------------

    def get(self, name: str) -> ManagedModel:
        """The model of that name; UnknownModel when it has no recipe (or its recipe was removed)."""
        model = self.models.get(name) if isinstance(name, str) else None
        if model is None or model.removed:
            raise UnknownModel(str(name)[:200])
        return model

    def listed(self) -> list[ManagedModel]:
        """The models with a recipe, by name (a removed one still stopping is not listed)."""
        return [m for m in sorted(self.models.values(), key=lambda m: m.name) if not m.removed]

    def snapshots(self, *, local_only: bool = False) -> list[dict[str, Any]]:
        """Every model as :meth:`snapshot_of` shows it; the remotes' after the local ones."""
        local = [self.snapshot_of(m) for m in self.listed()]
        return local if local_only else local + self.remotes.snapshots()

    def is_local(self, name: str) -> bool:
        model = self.models.get(name) if isinstance(name, str) else None
        return model is not None and not model.removed

    def find_remote(self, name: str) -> tuple[Remote, str]:
        """The remote model ``name`` means (``REMOTE/MODEL``, or a bare name that no local
        recipe has and exactly one remote lists); UnknownModel or AmbiguousModel."""
        found = self.remotes.find(name) if isinstance(name, str) else None
        if found is None:
            raise UnknownModel(str(name)[:200])
        return found

    def canonical_name(self, name: str, *, local_only: bool = False) -> str:
        """The name Siesta knows the model a request names by: ``name`` itself when a model
        goes by it; else ``name`` without a trailing ``:latest``, which Ollama's clients add
        to a name with no tag, when a model goes by that; else ``name`` unchanged (the
        caller's lookup then says it is unknown). ``local_only``: remotes are not looked at
        (a request from another Siesta)."""
        if not isinstance(name, str) or self._goes_by(name, local_only) or not name.endswith(LATEST_TAG):
            return name
        bare = name[: -len(LATEST_TAG)]
        return bare if bare and self._goes_by(bare, local_only) else name

    def _goes_by(self, name: str, local_only: bool) -> bool:
        """Whether a local model, or (unless ``local_only``) a model a remote lists, is named ``name``."""
        if self.is_local(name):
            return True
        if local_only:
            return False
        try:
            found = self.remotes.find(name)
        except (AmbiguousModel, ModelNameTooLong):
            return True  # it names remote models; the request's own lookup answers the error
        return found is not None and found[1] in found[0].views

    def snapshot_by_name(self, name: str) -> dict[str, Any]:
        """A local or a remote model's snapshot (a remote one must be listed by its remote)."""
        listed = self.listed_snapshot(name)
        if listed is not None:
            return listed
        remote, model = self.find_remote(name)  # a bare name that one remote lists
        if model not in remote.views:
            raise UnknownModel(name[:200])
        return remote.snapshot(model)

    def listed_snapshot(self, name: str) -> dict[str, Any] | None:
        """The model listed under exactly ``name`` now (a local recipe's, or a remote's
        ``REMOTE/MODEL``), as a snapshot; None when none is. Observers use it to tell a
        model's last events (its recipe gone) from a model that is still there."""
        if self.is_local(name):
            return self.snapshot_of(self.models[name])
        found = self.remotes.split(name) if isinstance(name, str) else None
        if found is not None and found[1] in found[0].views:
            return found[0].snapshot(found[1])
        return None

    def recipe_of(self, name: str) -> Recipe | None:
        """The recipe of local model ``name`` as read (None: no such model, or its recipe is invalid)."""
        model = self.models.get(name) if self.is_local(name) else None
        return model.recipe if model is not None else None

    async def load(self, name: str) -> ManagedModel | dict[str, Any]:
        """A manual load; returns once the model is ready and its memory measured (a remote
        model: once its remote says so, as its snapshot)."""
        if not self.is_local(name):
            remote, model_name = self.find_remote(name)
            await remote.load(model_name)
            return remote.snapshot_or_gone(model_name)
        model = self.get(name)
        await model.load()
        await self.memory.measured(name)
        return model

    async def unload(self, name: str) -> ManagedModel | dict[str, Any]:
        if not self.is_local(name):
            remote, model_name = self.find_remote(name)
            await remote.unload(model_name)
            return remote.snapshot_or_gone(model_name)
        model = self.get(name)
        await model.unload(UnloadReason.MANUAL)
        return model

    def describe(self, model: ManagedModel | dict[str, Any]) -> dict[str, Any]:
        """What :meth:`load`, :meth:`unload` and :meth:`set_model_timeout` returned, as a snapshot."""
        return model if isinstance(model, dict) else self.snapshot_of(model)

    async def unload_all(self) -> list[str]:
        targets = [m for m in self.listed() if m.state is not ModelState.UNLOADED]
        await asyncio.gather(*(m.unload(UnloadReason.MANUAL) for m in targets))
        return [m.name for m in targets]

    # ---- admission: groups and max_loaded_models ----------------------------------------

    async def admit(self, model: ManagedModel) -> None:
        """Makes room for ``model`` before its server starts (see :mod:`app.core.memory.admission`)."""
        await self._admission.admit(model)

    async def free_memory_for(self, model: ManagedModel) -> bool:
        """A load failed for lack of memory: unloads the other idle models once."""
        gone = await self._admission.evict_all_idle(model)
        if gone:
            log.info("%s could not allocate its memory: unloaded %s and trying once more", model.name, ", ".join(gone))
        return bool(gone)

    async def launch(self, model: ManagedModel, recipe: Recipe) -> BackendProcess:
        spec = build_launch(recipe, self.llama_server_path(), free_port())
        return await BackendProcess.start(spec, BoundedLog(self.paths.model_log(model.name)), self._reaper)

    # ---- timeouts ----------------------------------------------------------------------

    async def set_model_timeout(self, name: str, value: ModelTimeout) -> ManagedModel | dict[str, Any]:
        """Persists a model's timeout to its recipe (:data:`USE_GLOBAL` removes the key) and
        applies it now. A remote model's goes to the other Siesta's recipe, or for another
        engine to ``[remotes.NAME.timeouts]`` in settings.toml."""
        if not self.is_local(name):
            remote, model_name = self.find_remote(name)
            try:
                await self.remotes.set_timeout(remote, model_name, value)
            except TomlEditError as exc:
                raise PersistError(str(exc), exc.kind) from exc
            return remote.snapshot_or_gone(model_name)
        model = self.get(name)
        if model.recipe is None:
            raise PersistError(f"recipe of {name!r} is not valid, left unchanged: {model.recipe_error}", "invalid")
        path = model.recipe.path
        try:
            # off the loop (a slow disk must not freeze requests), after earlier writes to it
            await in_order(write_recipe_timeout, path, value)
        except TomlEditError as exc:
            raise PersistError(str(exc), exc.kind) from exc
        if not self._reload_recipe_file(path, own_timeout_set=True):
            model.own_timeout_set()  # the same value again still replaces a request's keep_alive
        return model

    async def set_setting(self, field: str, raw: Any) -> Any:
        """Validates, persists to settings.toml, and applies a run-time setting."""
        pinned = self.loaded_settings.fixed_by(field)
        if pinned:
            raise SettingFixed(f"{field} is fixed by {pinned} for this run; change or remove that to edit it")
        value = validate_setting(field, raw)
        stored = format_duration(value) if field == "global_unload_timeout" else value
        if isinstance(stored, Path):
            stored = str(stored)
        elif isinstance(stored, MemoryLimit):
            stored = stored.to_setting()  # canonical: "90%", "20GB", "off", or a table written as [field]
        try:
            await in_order(set_toml_key, self.paths.settings_file, field, stored, create=True)
        except TomlEditError as exc:
            raise PersistError(str(exc), exc.kind) from exc
        if field in RUNTIME_SETTABLE:
            self._apply_setting(field, value, "file settings.toml")
        else:
            self.restart_pending.add(field)  # e.g. host, port: written now, used at the next start
        return value

    def _apply_setting(self, field: str, value: Any, source: str) -> None:
        old = getattr(self.settings, field)
        self.loaded_settings.values = self.settings.model_copy(update={field: value})
        self.loaded_settings.sources[field] = source
        if field == "global_unload_timeout" and old != value:
            for model in self.models.values():
                if model.effective_timeout()[1] == "global":
                    model.timeout_changed()
            self.remotes.global_timeout_changed()
        elif field in ("max_loaded_models", *MEMORY_SETTINGS) and old != value:
            # A load waiting for room looks again; a new event for the next wait, as emit() does.
            self._changed.set()
            self._changed = asyncio.Event()
            if field in MEMORY_SETTINGS:
                self._pressure.look_now()  # a new floor may be crossed already

    def _reload_remotes(self, data: dict[str, Any] | None = None) -> None:
        """Brings the remotes in step with ``[remotes]`` in settings.toml."""
        if data is None:
            try:
                data = read_settings_file(self.paths.settings_file)
            except SettingsError as exc:
                log.warning("%s", exc)
                return
        self.remotes.apply(*parse_remotes(data, self.paths.settings_file))

    def _reload_settings_file(self) -> None:
        """A hand edit of settings.toml: applies run-time settings that nothing pins, and ``[remotes]``."""
        try:
            data = read_settings_file(self.paths.settings_file)
        except SettingsError as exc:
            log.warning("%s", exc)
            return
        self._reload_remotes(data)
        for field in RUNTIME_SETTABLE:
            if self.loaded_settings.fixed_by(field) or field not in data:
                continue
            try:
                value = validate_setting(field, data[field])
            except ValueError as exc:
                log.warning("%s: %s", self.paths.settings_file, exc)
                continue
            if value != getattr(self.settings, field):
                self._apply_setting(field, value, "file settings.toml")

    # ---- recipes -----------------------------------------------------------------------

    def reload_recipes(self) -> None:
        """Brings the model set in step with the recipe folder."""
        files = scan_recipe_files(self.paths.recipes_dir)
        seen = set()
        for path in files:
            seen.add(path.stem)
            self._reload_recipe_file(path)
        for name in [n for n in self.models if n not in seen]:
            self._remove(name)

    def _reload_recipe_file(self, path: Path, *, own_timeout_set: bool = False) -> bool:
        """Brings one model in step with its recipe file; True when the model changed.
        ``own_timeout_set``: the change is the user setting this model's timeout."""
        name = path.stem
        if not path.exists():
            if name in self.models:
                self._remove(name)
                return True
            return False
        recipe: Recipe | None = None
        error: str | None = None
        try:
            recipe = read_recipe(path)
        except RecipeError as exc:
            error = str(exc)
        if not is_valid_name(name):
            recipe = None  # listed as failed with the reason; a request can never start it
        model = self.models.get(name)
        if model is None:
            model = ManagedModel(self, name, recipe, error)
            self.models[name] = model
            if recipe is not None and recipe.unknown_keys:
                log.warning("%s: unknown keys kept as they are: %s", path, ", ".join(recipe.unknown_keys))
            if error:
                log.warning("%s", error)
            self.emit(model, "added")
            if recipe is not None and recipe.preload and self._started:
                self._spawn(self._preload(model), f"preload-{name}")
            return True
        if recipe == model.recipe and error == model.recipe_error and not model.removed:
            return False
        if error and error != model.recipe_error:
            log.warning("%s", error)
        preload_now = (recipe is not None and recipe.preload and self._started
                       and (model.removed or model.recipe is None or not model.recipe.preload))
        model.recipe_changed(recipe, error, own_timeout_set=own_timeout_set)
        if preload_now:
            self._spawn(self._preload(model), f"preload-{name}")
        return True

    def _remove(self, name: str) -> None:
        """A recipe is gone: the model is unloaded, then forgotten with one ``removed`` event.
        Until its server has exited it stays in :attr:`models` (unlisted), so it still counts
        against ``max_loaded_models`` and a recipe created again under its name reuses it:
        a name owns at most one server process, always."""
        model = self.models.get(name)
        if model is None or model.removed:
            return
        model.removed = True

        async def unload_removed() -> None:
            # Cancelled (shutdown), it stays in `models`: close() stops it, and admission
            # still counts its server until then.
            await model.unload(UnloadReason.REMOVED)
            if model.removed and self.models.get(name) is model:
                del self.models[name]
                self.emit(model, "removed")
            elif not model.removed:
                self.emit(model, "added")  # created again while its old server stopped

        self._spawn(unload_removed(), f"remove-{name}")

    def _on_config_change(self, changed: set[Path]) -> None:
        for path in sorted(changed):
            if path.parent == self.paths.recipes_dir:
                self._reload_recipe_file(path)
            elif path == self.paths.settings_file:
                self._reload_settings_file()

    async def _watch_config(self) -> None:
        watcher = ConfigWatcher([self.paths.config_dir, self.paths.recipes_dir], self._on_config_change)
        try:
            await watcher.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the recipe watcher stopped; restart Siesta to pick up recipe edits")

    # ---- a model's load settings: "Model settings..." ----------------------------------

    async def set_model_settings(self, name: str, *, args: list[str] | None = None, model: Path | None = None,
                                 memory_estimate: int | None | Any = UNCHANGED,
                                 reload_now: bool = False) -> ManagedModel:
        """Writes a model's ``args``, ``model`` and ``memory_estimate`` to its recipe (comments
        kept; None / UNCHANGED leave a field alone) and applies them: a running server whose
        launch settings changed becomes ``stale`` and picks them up at its next load, or now
        with ``reload_now`` (a manual unload, then a load)."""
        managed = self.get(name)
        if managed.recipe is None:
            raise PersistError(f"recipe of {name!r} is not valid, left unchanged: {managed.recipe_error}", "invalid")
        path = managed.recipe.path
        try:
            await in_order(write_recipe_settings, path, args=args, model=model, memory_estimate=memory_estimate)
        except TomlEditError as exc:
            raise PersistError(str(exc), exc.kind) from exc
        self._reload_recipe_file(path)
        if reload_now and managed.state in (ModelState.LOADING, ModelState.READY) and not managed.removed:
            await managed.unload(UnloadReason.MANUAL)
            await self.load(name)
        return managed
