"""The system-tray icon and its menu: :class:`TrayMenu`.

The icon shows the overall state (nothing loaded, loaded and idle, busy or loading, an
error) and its tooltip names the loaded models and the next unload as a time of day;
both change on manager events only. The menu lists each loaded model with its live
state, memory and countdown, and a submenu to unload it or choose its idle timeout.

The menu is brought up to date when it is about to show, and its countdowns tick once a
second only while it is open: when it closes, no timer runs. Model entries are updated
in place while the set of listed models stays the same, so an open submenu is not torn
down by a countdown tick or an event.

With no recipe yet the menu says so ("No models yet") and offers "Find models on this
computer..." and "Import configuration..." in place of the load entries, and a greeting
says where to start (clicking it opens "Find models"). "Find models..." and "Import
configuration..." stay in the menu once recipes exist; "Download model..." (from the Hugging
Face Hub) is always there. While no llama-server can run and
some model (or the first one to come) needs it, "llama-server not found" and "Install
llama-server..." head the menu.

With remotes (models of other machines and engines, :mod:`app.core.remotes`), the models
are grouped by machine or engine: "This computer" first, then each remote in name order
under a heading with its models' memory, or with why it cannot be reached
(:mod:`.model_groups`). The Load model submenu has a heading per remote too.

Connected to a Siesta elsewhere (``siesta --connect URL``), the first line names it (or
says it cannot be reached and is being tried again) and everything that only means
something on this machine is hidden: Find models, Download model, Import configuration,
Install llama-server, Open logs folder, and each model's Show log, Open log in editor and
Model settings.

A loading model's line says how far it is, as a share of its last load time ("big:
loading... ~40%", its seconds on a first load), ticking while the menu is open. Above
"Models window...", one line gives the memory that idle and memory-pressure unloads gave back
today ("Gave back 41.0 GB·h of memory today"; its tooltip: since when the history goes); none
while nothing was given back today.

A page the front door refused (its origin is neither Siesta's own nor in
``allowed_origins``) gets a notification, once per origin, and an "Allow page at ..." entry
at the top of the menu (:mod:`.refused_pages`); clicking either allows it.

Each entry has a letter of its own in its menu; with the menu open, that key triggers it:
I&nstall llama-server..., &Load model, &Unload all, &Find models..., &Download model...,
&Import configuration..., &Models window..., &Settings..., &Open logs folder, &Copy API URL,
&Quit. A model's submenu has letters of its own (:mod:`.model_groups`). The models' lines
have none (their names are the user's); a screen reader reads each line as it is shown,
countdown included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction, QCursor
from PySide6.QtWidgets import QMenu, QStyle, QSystemTrayIcon

from app.ui import history_text, icons, text
from app.ui.bridge import ManagerBridge
from app.ui.platform import desktop
from app.ui.platform.shell import Shell
from app.ui.ticker import SecondTicker
from app.ui.tray import model_groups
from app.ui.tray.menu_watch import MenuWatch
from app.ui.tray.model_groups import ModelEntry, RemoteGroups
from app.ui.tray.refused_pages import RefusedPages, allowed_note, refused_note

log = logging.getLogger(__name__)

MESSAGE_MS = 8000


class TrayMenu(QObject):
    """The tray icon, its tooltip, its menu and its notifications."""

    def __init__(self, bridge: ManagerBridge, shell: Shell, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.shell = shell
        self._icon_state = text.ICON_EMPTY
        self.icon = QSystemTrayIcon(icons.state_icon(self._icon_state), self)
        self.menu = QMenu()
        self.menu.setObjectName("siesta-tray-menu")
        self.icon.setContextMenu(self.menu)
        self.entries: dict[str, ModelEntry] = {}
        self._build_static_menu()
        self.refused_pages = RefusedPages(self.menu, self.models_separator, bridge, on_allowed=self._on_origin_allowed)
        self.ticker = SecondTicker(self._tick, lambda: bridge.countdown_deadlines(text.is_shown_in_menu), bridge.now, self)
        self.menu_watch = MenuWatch(self.menu, self)  # also for menus a D-Bus tray draws
        self.menu_watch.opened.connect(self._on_about_to_show)
        self.menu_watch.closed.connect(self._on_about_to_hide)
        self.icon.activated.connect(self._on_activated)
        self.icon.messageClicked.connect(self._on_message_clicked)
        self._message_log: Path | None = None
        self._message_action: Callable[[], None] | None = None  # what clicking the shown message does
        self.last_message: tuple[str, str] | None = None
        bridge.modelEvent.connect(self._on_event)
        bridge.actionFailed.connect(self._on_action_failed)
        bridge.engineChanged.connect(self._on_engine_changed)
        bridge.systemChanged.connect(self._update_memory_lines)
        bridge.connectionChanged.connect(self._on_connection_changed)
        bridge.originRefused.connect(self._on_origin_refused)
        self.update_icon_and_tooltip()
        self.refresh()

    # ---- building ---------------------------------------------------------------------------

    def _build_static_menu(self) -> None:
        menu = self.menu
        menu.setToolTipsVisible(True)
        # Only for a Siesta elsewhere: which one, or why it cannot be reached.
        self.connection_action = menu.addAction("")
        self.connection_action.setEnabled(False)
        self.connection_action.setVisible(False)
        here = menu.addAction("")  # this computer's heading, while remotes' groups follow
        self.empty_action = menu.addAction("No models loaded")
        self.empty_action.setEnabled(False)
        # Shown only while llama-server is missing and some model (or the first one) needs it.
        self.engine_action = menu.addAction(text.ENGINE_MISSING_MENU)
        self.engine_action.setEnabled(False)
        self.install_action = menu.addAction("I&nstall llama-server...", self.shell.show_install_engine)
        self.install_action.setIcon(menu.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning))
        self.models_separator = menu.addSeparator()
        self.memory_actions: list[QAction] = []  # RAM and one line per GPU, above this separator
        self.memory_separator = menu.addSeparator()
        self.memory_separator.setVisible(False)
        self.load_menu = menu.addMenu("&Load model")
        self.load_menu.setObjectName("load-menu")
        self._load_lines: list[tuple[Any, ...]] = []  # what the Load model submenu lists now
        self.groups = RemoteGroups(menu, self.bridge, here, self.load_menu.menuAction())
        self.unload_all_action = menu.addAction("&Unload all", self.bridge.unload_all)
        self.discover_action = menu.addAction("&Find models...", self.shell.show_discover)
        self.discover_action.setToolTip("Find GGUF models on this computer and add them")
        self.download_action = menu.addAction("&Download model...", self.shell.show_download)
        self.download_action.setToolTip("Search the Hugging Face Hub for a GGUF model and download it")
        self.import_action = menu.addAction("&Import configuration...", self.shell.show_import)
        self.import_action.setToolTip("Add the models of a llama-swap or Lemonade configuration")
        menu.addSeparator()
        # The day's memory given back, above the Models window that says more.
        self.given_back_action = menu.addAction("")
        self.given_back_action.setObjectName("given-back")
        self.given_back_action.setEnabled(False)
        self.given_back_action.setVisible(False)
        self.window_action = menu.addAction("&Models window...", self.shell.show_models_window)
        self.settings_action = menu.addAction("&Settings...", self.shell.show_settings)
        self.logs_action = menu.addAction("&Open logs folder", lambda: desktop.open_folder(self.bridge.paths.log_dir))
        self.copy_action = menu.addAction("&Copy API URL", self._copy_api_url)
        menu.addSeparator()
        self.quit_action = menu.addAction("&Quit", self.shell.request_quit)
        if not self.bridge.is_local:  # these act on this machine, not on the Siesta the menu shows
            for action in (self.discover_action, self.download_action, self.import_action, self.logs_action,
                           self.install_action, self.engine_action):
                action.setVisible(False)
            self.quit_action.setToolTip("Quit this client; the other Siesta and its models keep running")

    def show(self) -> None:
        self.icon.show()
        # A new user: say where to start; a click on it starts there.
        if not self.bridge.has_recipes and self.bridge.is_local:
            self._message_log = None
            self._message_action = self.shell.show_discover
            self.show_message("Siesta is running", "No models yet: click the Siesta icon and choose "
                              "\"Find models on this computer\".", QSystemTrayIcon.MessageIcon.Information)

    def hide(self) -> None:
        self.ticker.stop()
        self.menu.hide()
        self.icon.hide()

    # ---- keeping the menu up to date ----------------------------------------------------------

    def _on_about_to_show(self) -> None:
        self.refresh(fresh=True)
        self.bridge.refresh_system()
        self.ticker.start()

    def _on_about_to_hide(self) -> None:
        self.ticker.stop()

    def _tick(self) -> None:
        self.refresh(fresh=True)
        self.bridge.refresh_system()

    def _update_memory_lines(self) -> None:
        """The machine's memory under the models: RAM, and a line per GPU."""
        system = self.bridge.system or {}
        memory = system.get("memory", {})
        lines = [text.ram_line(memory.get("ram", {}))] + [text.device_line(d) for d in memory.get("devices", [])]
        lines = [line for line in lines if line]
        if [a.text() for a in self.memory_actions] == lines:
            return
        # Figures change every second while the menu is open: change the lines' text in
        # place, and add or remove lines only when a GPU comes or goes.
        while len(self.memory_actions) > len(lines):
            self.menu.removeAction(self.memory_actions.pop())
        while len(self.memory_actions) < len(lines):
            action = QAction(self.menu)
            action.setEnabled(False)
            self.menu.insertAction(self.memory_separator, action)
            self.memory_actions.append(action)
        for action, line in zip(self.memory_actions, lines):
            action.setText(line)
        self.memory_separator.setVisible(bool(lines))
        self._keep_on_screen()

    def _keep_on_screen(self) -> None:
        """Keeps an open menu whole on the screen after its lines changed."""
        if not self.menu.isVisible():
            return
        # Figures arrive after the menu has opened (memory is read off the loop; a remote
        # answers later), and an open menu grows from its top-left corner: a longer line
        # would push its right edge off the screen (the tray sits in a corner).
        if self.menu.size() != self.menu.sizeHint():
            self.menu.resize(self.menu.sizeHint())
        geometry, screen = self.menu.geometry(), self.menu.screen().availableGeometry()
        x = max(screen.left(), min(geometry.left(), screen.right() + 1 - geometry.width()))
        y = max(screen.top(), min(geometry.top(), screen.bottom() + 1 - geometry.height()))
        if (x, y) != (geometry.left(), geometry.top()):
            self.menu.move(x, y)

    def refresh(self, *, fresh: bool = False) -> None:
        """Brings every menu entry up to date (``fresh`` re-reads memory use)."""
        snapshots = self.bridge.snapshots(fresh=fresh)
        now = self.bridge.now()
        groups = text.model_groups(snapshots, self.bridge.remote_statuses())
        local = groups[0][1]
        shown = [s for s in local if text.is_shown_in_menu(s)]
        names = [s["name"] for s in shown]
        if names != list(self.entries):
            self._rebuild_entries(names)
        global_timeout = self.bridge.settings.global_unload_timeout
        for snapshot in shown:
            self.entries[snapshot["name"]].update(snapshot, now, global_timeout)
        target = self.bridge.target
        self.groups.update(groups, now, global_timeout, text.HERE if target is None else target.machine)
        problem = self.bridge.connection_problem
        if self.bridge.target is not None:
            self.connection_action.setText(model_groups.escaped(problem or f"Siesta on {self.bridge.target.label}"))
            self.connection_action.setVisible(True)
        first_run = not local  # (the models of other machines are not this computer's)
        self.empty_action.setVisible(not shown and problem is None)
        self.empty_action.setText(text.NO_RECIPES_MENU if first_run else "No models loaded")
        self.load_menu.menuAction().setVisible(bool(snapshots) and problem is None)
        self.unload_all_action.setVisible(not first_run and problem is None)
        self.settings_action.setEnabled(problem is None)
        self.unload_all_action.setEnabled(any(s["state"] in ("loading", "ready", "failed") for s in local))
        self.unload_all_action.setToolTip("Unloads Siesta's own models; the remotes' models stay as they are"
                                          if self.groups.grouped else "")
        self.discover_action.setText("&Find models on this computer..." if first_run else "&Find models...")
        self._update_engine_entries(snapshots)
        self._rebuild_load_menu(groups, now)
        self._update_given_back(now, problem is None)
        self.copy_action.setText(f"&Copy API URL ({self.api_url})" if self.api_url else "&Copy API URL")
        self.copy_action.setEnabled(bool(self.api_url))
        if self.groups.grouped:
            self._keep_on_screen()

    def _update_given_back(self, now: float, reachable: bool) -> None:
        """One line for the memory given back today; its tooltip has the whole history's figure."""
        summary = self.bridge.given_back_summary() if reachable else None
        line = history_text.given_back_today(summary)
        if self.given_back_action.text() != line:
            self.given_back_action.setText(line)
            self.given_back_action.setToolTip(history_text.given_back_line(summary, now))
        self.given_back_action.setVisible(bool(line))

    def _update_engine_entries(self, snapshots: list[text.Snapshot]) -> None:
        problem = None
        if self.bridge.is_local and text.engine_needed(snapshots):
            problem = self.bridge.engine_status().problem
        self.engine_action.setVisible(problem is not None)
        self.engine_action.setToolTip(problem or "")
        self.install_action.setVisible(problem is not None)

    def _rebuild_entries(self, names: list[str]) -> None:
        for name, entry in list(self.entries.items()):
            if name not in names:
                self.menu.removeAction(entry.action)
                entry.menu.deleteLater()
                entry.deleteLater()
                del self.entries[name]
        kept = self.entries
        self.entries = {}
        for name in names:
            entry = kept.get(name) or self._new_entry(name)
            self.menu.removeAction(entry.action)
            self.menu.insertAction(self.empty_action, entry.action)
            self.entries[name] = entry

    def _new_entry(self, name: str) -> ModelEntry:
        if self.bridge.is_local:
            return ModelEntry(name, self.bridge, self.menu, show_log=self.shell.show_log,
                              show_model_settings=self.shell.show_model_settings)
        entry = ModelEntry(name, self.bridge, self.menu)  # its log and recipe are on the other machine
        entry.log_action.setVisible(False)
        return entry

    def _rebuild_load_menu(self, groups: list[tuple[Any, list[text.Snapshot]]], now: float) -> None:
        """The models that can be loaded, with a heading per remote that has some (its
        models by its own names for them)."""
        wanted: list[tuple[str, bool, str, str | None, bool]] = []  # (label, enabled, tooltip, model, heading)
        for remote, models in groups:
            lines = []
            for s in models:
                label = (s.get("remote_model") or s["name"]) if remote is not None else s["name"]
                if s["state"] == "unloaded" and not text.is_routed_only(s):
                    note = text.unloaded_note(s, now)
                    lines.append((f"{label} ({note})" if note else label, True, note, s["name"], False))
                elif not text.has_usable_recipe(s):
                    lines.append((f"{label} (invalid recipe)", False, s.get("error") or "", None, False))
            if remote is not None and lines:
                lines.insert(0, (str(remote["name"]), False, "", None, True))
            wanted += lines
        if not wanted:
            any_model = any(models for _, models in groups)
            wanted = [("No other recipes" if any_model else "No recipes: run `siesta demo` or add one",
                       False, "", None, False)]
        if wanted == self._load_lines:
            return
        self._load_lines = wanted
        self.load_menu.clear()
        self.load_menu.setToolTipsVisible(True)
        for label, enabled, tip, name, is_heading in wanted:
            if is_heading:
                self.load_menu.addSeparator()
            action = self.load_menu.addAction(model_groups.escaped(label))
            action.setEnabled(enabled)
            action.setToolTip(tip)
            if is_heading:
                model_groups.heading(action)
            if enabled:
                action.triggered.connect(lambda checked=False, n=name: self.bridge.load(n))

    # ---- icon, tooltip, notifications -----------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"{self.bridge.api_url}/v1" if self.bridge.api_url else ""

    def _copy_api_url(self) -> None:
        if self.api_url:
            desktop.copy_text(self.api_url)

    def update_icon_and_tooltip(self) -> None:
        snapshots = self.bridge.snapshots()
        problem = self.bridge.connection_problem
        state = text.ICON_ERROR if problem else text.overall_state(snapshots)
        if state != self._icon_state:
            self._icon_state = state
            self.icon.setIcon(icons.state_icon(state))
        tooltip = text.tooltip_text(snapshots)
        if self.bridge.target is not None:
            tooltip = problem or tooltip.replace("Siesta:", f"Siesta on {self.bridge.target.machine}:", 1)
        if self.icon.toolTip() != tooltip:
            self.icon.setToolTip(tooltip)

    @property
    def icon_state(self) -> str:
        return self._icon_state

    def _on_event(self, event: dict[str, Any]) -> None:
        self.update_icon_and_tooltip()
        if self.menu.isVisible():
            self.refresh()
        settings = self.bridge.settings
        note = text.notification_for(event, notify_idle=settings.notify_idle_unload,
                                     notify_crash=settings.notify_crash,
                                     notify_pressure=getattr(settings, "notify_memory_pressure", True))
        if note is not None:
            crashed = event["reason"] == "crashed"
            log_file = event["model"].get("log_file")  # None for a model on another machine
            self._message_log = Path(log_file) if crashed and log_file else None
            name = event["model"]["name"]
            # A click on it opens the model's log viewer (only a model here has a log here).
            self._message_action = (lambda: self.shell.show_log(name)) if self._message_log else None
            icon = QSystemTrayIcon.MessageIcon.Warning if crashed else QSystemTrayIcon.MessageIcon.Information
            self.show_message(note[0], note[1], icon)

    def _on_origin_refused(self, origin: str) -> None:
        self.refused_pages.add(origin)
        self._message_log = None
        self._message_action = lambda: self.refused_pages.allow(origin)  # a click on it allows the page
        self.show_message(*refused_note(origin), QSystemTrayIcon.MessageIcon.Warning)

    def _on_origin_allowed(self, origin: str) -> None:
        self._message_log = None
        self._message_action = None
        self.show_message(*allowed_note(origin), QSystemTrayIcon.MessageIcon.Information)

    def _on_connection_changed(self) -> None:
        self.update_icon_and_tooltip()
        if self.menu.isVisible():
            self.refresh()

    def _on_engine_changed(self) -> None:
        if self.menu.isVisible():
            self.refresh()

    def _on_action_failed(self, title: str, message: str) -> None:
        self._message_log = None
        self._message_action = None
        self.show_message(title, message, QSystemTrayIcon.MessageIcon.Critical)
        if self.menu.isVisible():
            self.refresh()  # put back the check mark of a timeout that did not change

    def show_message(self, title: str, message: str, icon: QSystemTrayIcon.MessageIcon) -> None:
        self.last_message = (title, message)
        if self.icon.isVisible() and QSystemTrayIcon.supportsMessages():
            self.icon.showMessage(title, message, icon, MESSAGE_MS)
        else:
            log.info("%s: %s", title, message)

    def _on_message_clicked(self) -> None:
        if self._message_action is not None:
            self._message_action()
        elif self._message_log is not None:
            desktop.open_file(self._message_log)

    def _on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        # A left click shows the same menu as a right click (as on trays that have only one).
        if reason == QSystemTrayIcon.ActivationReason.Trigger and not self.menu.isVisible():
            self.menu.popup(QCursor.pos())
