"""Pages the front door refused, offered to allow: :class:`RefusedPages`.

When a page (a dev server on another port, a local web app, an editor's webview) tries to
use Siesta and its origin is neither Siesta's own nor in ``allowed_origins``, the request
is refused and the tray says so, once per origin: "A page at http://localhost:5173 tried
to use Siesta". Clicking the message allows it, and so does its entry in the menu ("&Allow
page at http://localhost:5173"), which stays until the page is allowed. Allowing goes
through the bridge to the manager, which writes ``allowed_origins`` to settings.toml.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu

from app.ui.bridge import ManagerBridge
from app.ui.tray.model_groups import escaped


def refused_note(origin: str) -> tuple[str, str]:
    """The notification (title, message) for a refused page."""
    message = (f"A page at {origin} tried to use Siesta. Click here to allow it, "
               "or choose \"Allow page at ...\" in Siesta's menu.")
    return "A page was refused", message


def allowed_note(origin: str) -> tuple[str, str]:
    """The notification (title, message) once a page is allowed."""
    return "Page allowed", f"The page at {origin} can use Siesta now (allowed_origins in settings.toml)."


class RefusedPages(QObject):
    """The menu's "Allow page at ..." entries, one per refused origin until it is allowed."""

    def __init__(self, menu: QMenu, before: QAction, bridge: ManagerBridge,
                 on_allowed: Callable[[str], None] | None = None) -> None:
        super().__init__(menu)
        self.menu = menu
        self.before = before  # the entries go just above this one
        self.bridge = bridge
        self.on_allowed = on_allowed  # called with the origin once it is allowed
        self.actions: dict[str, QAction] = {}

    def add(self, origin: str) -> None:
        """An entry for ``origin`` (once)."""
        if origin in self.actions:
            return
        action = QAction("&Allow page at " + escaped(origin), self.menu)  # several: the key goes to each in turn
        action.setToolTip(f"Let the page at {origin} use Siesta: adds it to allowed_origins")
        action.triggered.connect(lambda checked=False, o=origin: self.allow(o))
        self.menu.insertAction(self.before, action)
        self.actions[origin] = action

    def allow(self, origin: str) -> None:
        """Asks the manager to allow ``origin``; its entry goes once that is done (a failure
        is reported by the bridge, and the entry stays)."""

        def done(task: asyncio.Task[Any]) -> None:
            if task.cancelled() or task.exception() is not None:
                return
            action = self.actions.pop(origin, None)
            if action is not None:
                self.menu.removeAction(action)
                action.deleteLater()
            if self.on_allowed is not None:
                self.on_allowed(origin)

        self.bridge.allow_origin(origin).add_done_callback(done)
