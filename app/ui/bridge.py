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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from PySide6.QtCore import QObject, Signal

from app.core.durations import Timeout
from app.core.manager import ModelManager, PersistError, SettingFixed, UnknownModel
from app.core.model import ModelUnavailable
from app.core.paths import Paths

from .text import Snapshot

log = logging.getLogger(__name__)

T = TypeVar("T")

EXPECTED_ERRORS = (ModelUnavailable, PersistError, SettingFixed, UnknownModel, ValueError, OSError)

class ManagerBridge(QObject):
    """Turns manager events into Qt signals and GUI requests into manager tasks."""

    modelEvent = Signal(object)
    """Every manager event, as ``{"reason", "model", "time"}``, after :attr:`models` is updated."""

    actionFailed = Signal(str, str)
    """``(title, message)`` of an action that failed and that no caller handled."""

    def __init__(self, manager: ModelManager, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.manager = manager
        self.api_url = ""
        self.closing = False
        self.models: dict[str, Snapshot] = {s["name"]: s for s in manager.snapshots()}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsubscribe: Callable[[], None] | None = manager.subscribe(self._on_event)

    # ---- what widgets read ----------------------------------------------------------------

    @property
    def paths(self) -> Paths:
        return self.manager.paths

    @property
    def settings(self) -> Any:
        """The settings in force (``app.core.settings.Settings``)."""
        return self.manager.loaded_settings.values

    def fixed_by(self, field: str) -> str | None:
        """The flag or environment variable that pins ``field`` for this run, if any."""
        return self.manager.loaded_settings.fixed_by(field)

    def now(self) -> float:
        return self.manager.clock.now()

    def snapshots(self, *, fresh: bool = False) -> list[Snapshot]:
        """Every model, sorted by name; ``fresh`` re-reads them (memory changes without events)."""
        if fresh and not self.closing:
            self.models = {s["name"]: s for s in self.manager.snapshots()}
        return [self.models[name] for name in sorted(self.models)]

    def snapshot(self, name: str) -> Snapshot | None:
        return self.models.get(name)

    @property
    def pending_tasks(self) -> int:
        return len(self._tasks)

    # ---- events ---------------------------------------------------------------------------

    def _on_event(self, event: dict[str, Any]) -> None:
        model = event["model"]
        name = model["name"]
        current = self.manager.models.get(name)
        if current is None:
            self.models.pop(name, None)  # its recipe is gone; these are its last unload events
        elif event["reason"] == "removed":
            # A recipe deleted and created again in one go: the old model's farewell must
            # not erase the new model of the same name.
            self.models[name] = current.snapshot()
        else:
            self.models[name] = model
        self.modelEvent.emit(event)

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

    def set_model_timeout(self, name: str, value: Timeout | str, *, report: bool = True) -> asyncio.Task[Any]:
        """``value``: seconds, ``None`` (keep loaded) or ``"default"`` (use the global timeout)."""
        return self.run(self.manager.set_model_timeout(name, value), f"set the timeout of {name}", report=report)

    def set_setting(self, field: str, raw: Any, *, report: bool = True) -> asyncio.Task[Any]:
        return self.run(self.manager.set_setting(field, raw), f"change {field}", report=report)

    # ---- end --------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stops listening and waits for the actions still running (the manager's own
        shutdown makes pending loads give up quickly)."""
        self.closing = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
